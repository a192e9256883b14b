"""The deployment commands: quantize, export, serve and app (registered in ``tunelab.cli.commands.COMMANDS``)."""

from __future__ import annotations

import argparse
import os

from tunelab.cli.args import Command, non_negative_float, positive_int, run_argument, trust_argument, variant_argument


def _quantize_arguments(parser: argparse.ArgumentParser) -> None:
    from tunelab.config.schema import QUANTIZE_METHODS

    run_argument(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="quantize.* or quantization.* settings, e.g. quantize.group_size=64 quantize.bits=8")
    parser.add_argument("--method", help=f"comma-separated methods: {', '.join(QUANTIZE_METHODS)} (default: the "
                                         "run's quantize.methods, int8,nf4,dynamic-int8). gptq needs "
                                         "pip install 'tunelab[gptq]'")
    parser.add_argument("--compare", action="store_true",
                        help="measure every variant against the fp32 model on the test split (size, memory, "
                             "latency, throughput, quality, agreement); writes RUN/quantization.json and .md")
    parser.add_argument("--split", choices=["validation", "test"], default=None,
                        help="split --compare measures (default: the run's eval.split)")
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="--compare: score only the first N examples")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where quantizing runs: cpu (default) or cuda (GPTQ calibrates much faster on a GPU); "
                             "dynamic-int8 is CPU only. The saved copies load on either; --compare measures on "
                             "the CPU")
    parser.add_argument("--force", action="store_true", help="quantize again even if an up-to-date copy exists")
    trust_argument(parser)


def _quantize(args: argparse.Namespace) -> None:
    from tunelab.quantization import compare as quantize_compare
    from tunelab.quantization import quantize
    from tunelab.rundir import open_run

    methods = [m.strip() for m in args.method.split(",") if m.strip()] if args.method is not None else None
    written = quantize.run(args.run, methods, args.overrides, args.device, args.force, echo=print,
                           trust_remote_code=args.trust_remote_code)
    if args.compare:
        run, cfg = open_run(args.run)
        report = quantize_compare.compare(run.root, quantize.with_overrides(cfg, args.overrides), list(written),
                                          args.split, args.max_examples, echo=print,
                                          trust_remote_code=args.trust_remote_code)
        print(quantize_compare.summary_text(report))
        print(f"wrote {run.quantization_report_path} and {run.quantization_markdown_path.name}")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    from tunelab.export.dtypes import DTYPES, FORMATS

    run_argument(parser)
    parser.add_argument("--format", choices=FORMATS, default="gguf",
                        help="file format: gguf (default), one file llama.cpp and Ollama run")
    parser.add_argument("--dtype", choices=list(DTYPES), default="f16",
                        help="weight type: " + "; ".join(f"{name}: {d.description}" for name, d in DTYPES.items())
                             + " (default f16; norms stay fp32 in both)")
    parser.add_argument("--out", metavar="FILE.gguf", default=None,
                        help="file to write (default RUN/export/model-<dtype>.gguf); an Ollama Modelfile is "
                             "written beside it, replacing one there")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the read-back check. By default the file is loaded again with transformers "
                             "before it is put in place, and must give the same token ids, chat template and, "
                             "within the dtype's rounding, the same logits on a short prompt as the merged fp32 "
                             "model. It holds a second fp32 copy of the model in memory and takes longer than "
                             "writing (SmolLM2-135M: 2 s to write, 30 s to check on 2 CPU cores, mostly "
                             "transformers parsing the file)")
    trust_argument(parser)


def _export(args: argparse.Namespace) -> None:
    from tunelab.export import pipeline

    written = pipeline.run(args.run, args.format, args.dtype, args.out, verify=not args.no_verify,
                           trust_remote_code=args.trust_remote_code, echo=print)
    print(written)


# Flags of `tunelab serve` that override the run's serve section: (flag, its key in serve.*, type, what it sets).
# --host and --port come first in --help, then the key and trust options, then the limits.
SERVE_PLACE = (("--host", "host", str, "address to bind (a loopback address is this machine only; 0.0.0.0 opens "
                                        "it to the network and needs an API key)"),
               ("--port", "port", positive_int, "TCP port"))
SERVE_LIMITS = (
    ("--max-batch-size", "max_batch_size", positive_int,
     "concurrent requests sharing one forward pass (1 turns micro-batching off)"),
    ("--max-wait-ms", "max_wait_ms", non_negative_float, "how long a batch waits for more requests, in ms"),
    ("--max-tokens-cap", "max_tokens_cap", positive_int, "largest max_tokens a request may ask for"),
    ("--max-inputs", "max_inputs", positive_int, "texts per /v1/classify call, and prompts x n per completion call"),
    ("--timeout", "timeout_s", positive_int, "seconds before a request is cut with 504"),
    ("--max-body-bytes", "max_body_bytes", positive_int, "larger request bodies are refused with 413"),
)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    run_argument(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="serve.* settings replacing the run's config.yaml, e.g. serve.threads=2 serve.seed=0 "
                             "serve.max_choices=4 (tunelab config schema lists them); the flags below override "
                             "both")
    variant_argument(parser)
    _serve_flags(parser, SERVE_PLACE)
    _key_and_trust_arguments(parser, "require 'Authorization: Bearer KEY' on every route but /health")
    _serve_flags(parser, SERVE_LIMITS)


def _serve_flags(parser: argparse.ArgumentParser, flags) -> None:
    from tunelab.config.schema import ServeSection

    defaults = ServeSection()
    for flag, key, kind, what in flags:
        default = getattr(defaults, key)
        shown = f"{default:g}" if isinstance(default, float) else f"{default:,}" if isinstance(default, int) and default > 9999 else default
        parser.add_argument(flag, dest=key, type=kind, default=None, metavar=flag[2:].upper().replace("-", "_"),
                            help=f"{what} (overrides serve.{key}, default {shown})")


def _key_and_trust_arguments(parser: argparse.ArgumentParser, key_help: str) -> None:
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="bound to a loopback address, only requests whose Host header is localhost, 127.0.0.1 "
                             "or [::1] are answered (a web page that rebinds its own name to 127.0.0.1 is not); "
                             "also answer NAME, e.g. the name a reverse proxy or SSH tunnel on this machine uses "
                             "(repeatable)")
    parser.add_argument("--api-key", default=os.environ.get("TUNELAB_API_KEY"),
                        help=f"{key_help} (default: $TUNELAB_API_KEY, none when unset; prefer the variable, since "
                             "other users can read command lines with ps; required with a --host other than a "
                             "loopback address)")
    trust_argument(parser)


def _serve(args: argparse.Namespace) -> None:
    from tunelab import serving as serve
    from tunelab.secrets import add_secret
    from tunelab.serving.web import refuse_open_without_key

    add_secret(args.api_key)
    if args.host is not None:
        refuse_open_without_key(args.host, args.api_key, "serve")  # before anything is read
    settings = serve_settings(args)
    _refuse_open_config_host(settings)
    serve.run(args.run, args.variant, settings, trust_remote_code=args.trust_remote_code)


def serve_settings(args: argparse.Namespace):
    """The server's settings: the run's serve section, then the KEY=VALUE overrides, then the flags given."""
    from tunelab.config.load import with_overrides
    from tunelab.rundir import open_run
    from tunelab.serving import ServeSettings

    _, cfg = open_run(args.run)
    flags = {f"serve.{key}": getattr(args, key) for _, key, _, _ in SERVE_PLACE + SERVE_LIMITS}
    cfg = with_overrides(cfg, args.overrides, ("serve",), flags)
    section = cfg.serve.model_copy(update={"threads": cfg.serve_threads()})
    return ServeSettings.from_config(section, api_key=args.api_key, allowed_hosts=args.allowed_host)


def _refuse_open_config_host(settings) -> None:
    """serve.host from the run's config (or an override) is refused without a key, like --host."""
    from tunelab.errors import TunelabError
    from tunelab.serving.web import is_loopback, usable_key

    if usable_key(settings.api_key) is None and not is_loopback(settings.host):
        raise TunelabError(f"serve.host: {settings.host} makes tunelab serve reachable from other machines: set an "
                           "API key first (TUNELAB_API_KEY=... tunelab serve ...), or bind this machine only with "
                           "--host 127.0.0.1")


def _app_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="finished run folders (or bake-off and sweep folders) to show beside the workspace's runs")
    parser.add_argument("--workspace", default="tunelab-workspace", metavar="DIR",
                        help="folder for the runs started from the page, their configs, logs and uploaded data "
                             "(default ./tunelab-workspace, created if missing); every path a submitted config "
                             "names must lie inside it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, this machine only; another needs an API key)")
    parser.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    _key_and_trust_arguments(parser, "require the key on every route: open /?key=KEY once in the browser")


def _app(args: argparse.Namespace) -> None:
    from tunelab.secrets import add_secret
    from tunelab.studio import app

    add_secret(args.api_key)
    app.run(args.runs, args.host, args.port, api_key=args.api_key, trust_remote_code=args.trust_remote_code,
            allowed_hosts=tuple(args.allowed_host), workspace=args.workspace)


DEPLOY_COMMANDS: dict[str, Command] = {
    "quantize": Command("deployable 8-bit, 4-bit NF4, GPTQ and CPU int8 copies of a run, measured against fp32",
                        _quantize_arguments, _quantize,
                        "Merges the run's adapter into the fp32 base (RUN/merged/), then writes one folder per "
                        "method under RUN/quantized/ (safetensors; int8, nf4 and gptq also load with plain "
                        "from_pretrained). With --compare, measures each against the fp32 model in its own "
                        "process and writes RUN/quantization.json and quantization.md. Methods: int8 "
                        "(bitsandbytes LLM.int8), nf4 (bitsandbytes 4-bit NF4), gptq (GPTQ calibrated on the "
                        "run's training data), dynamic-int8 (PyTorch int8 kernels, the fast one on CPUs)."),
    "export": Command("one GGUF file of a run's merged model, for llama.cpp and Ollama (f16 or q8_0)",
                      _export_arguments, _export,
                      "Folds the run's adapter into the fp32 base (as tunelab merge does; full and freeze runs "
                      "use model/) and writes the model and tokenizer as one GGUF file, "
                      "RUN/export/model-<dtype>.gguf unless --out says otherwise, with an Ollama Modelfile "
                      "beside it. The file is written under a temporary name and renamed into place only once "
                      "complete and checked, so a failure leaves nothing behind. Supported: Llama-architecture "
                      "causal LMs with a byte-level BPE tokenizer (SmolLM2, tunelab's tiny models and the like) "
                      "and plain RoPE; anything else exits with code 2 and says what is supported. See "
                      "docs/export.md."),
    "serve": Command("serve a run over HTTP: OpenAI-compatible completions and chat, or /v1/classify",
                     _serve_arguments, _serve,
                     "FastAPI + uvicorn on 127.0.0.1 by default. Causal-LM runs: /v1/completions, "
                     "/v1/chat/completions (stream: true for server-sent events; stop, n, seed), /v1/models, so "
                     "the official openai client works against it (base_url http://127.0.0.1:8000/v1); "
                     "parameters it does not implement get a 400 naming them. Classification runs: "
                     "/v1/classify with {\"input\": \"text\"} or {\"input\": [\"text\", ...]}. /health for "
                     "both. Concurrent requests are micro-batched. Settings come from the run's config.yaml "
                     "(serve.*; tunelab config schema lists them); KEY=VALUE overrides and the flags replace "
                     "them. Needs pip install 'tunelab[serve]'."),
    "app": Command("the studio: create, train, watch, evaluate and try runs from the browser",
                   _app_arguments, _app,
                   "Serves one self-contained page on 127.0.0.1:7860 over a workspace folder: upload data and "
                   "read its report, configure a run (the YAML is shown), and start it. Runs submitted from "
                   "the page (or POST /api/runs) train one at a time in a child process running tunelab train "
                   "and tunelab evaluate, with live progress, stop and resume; finished runs can be compared, "
                   "tried (the base model, the fine-tuned one and each quantized copy answer the same text, "
                   "with latency), read on a dashboard, quantized or exported, and downloaded. Runs named on "
                   "the command line are shown too; --trust-remote-code concerns only those (runs submitted to "
                   "the studio never run model code). See docs/studio.md. Needs pip install 'tunelab[serve]' "
                   "(in a clone: pip install -e '.[serve]' torch==2.13.0)."),
}
