"""The `tunelab` command line.

Each command is one entry in ``COMMANDS``: a name, its help, a function adding its arguments,
and a handler. A user's mistake (``TunelabError``) prints one line per problem and exits 2;
anything else is a bug and exits 1 with a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys

from tunelab import __version__
from tunelab.cli.args import (
    Command,
    config_arguments,
    non_negative_float,
    positive_int,
    run_argument,
    trust_argument,
    variant_argument,
)
from tunelab.cli.deploy import DEPLOY_COMMANDS
from tunelab.cli.models import MODELS_COMMANDS
from tunelab.cli.studies import DEMO_COMMAND, STUDY_COMMANDS
from tunelab.errors import TrainingInterrupted, TunelabError
from tunelab.secrets import redact

MAX_PROBLEMS_SHOWN = 20
# Errors from the disk, not from tunelab: full, read-only, or not ours to write.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
RUST_OS_ERROR = re.compile(r"([^:]*?)\s*\(os error (\d+)\)")

def _prepare(args: argparse.Namespace) -> None:
    from tunelab.config import load_config
    from tunelab.data import prepare
    from tunelab.data.report import summary_text
    from tunelab.rundir import RunDir

    cfg = load_config(args.config, args.overrides)
    run_dir = prepare.run(cfg)
    print(summary_text(RunDir(run_dir).data_report()))
    print(f"wrote {run_dir}/ (data/, tokenizer/, data_report.json, config.yaml)")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its last checkpoint (same data order and "
                             "optimizer state); refuses if the config or data changed")
    parser.add_argument("--nproc", type=positive_int, default=1,
                        help="data-parallel processes on this machine, started with torchrun (default 1); each "
                             "gets its share of the cores and of the data, train.batch_size is per process, "
                             "train.distributed picks ddp, deepspeed-zero2/3 or fsdp. Several machines: "
                             "see docs/scaling.md")


def _train(args: argparse.Namespace) -> int | None:
    from tunelab.config import load_config
    from tunelab.machine import world
    from tunelab.rundir import RunDir
    from tunelab.training import distributed, train

    cfg = load_config(args.config, args.overrides)
    nproc = ["--nproc", str(args.nproc)] if args.nproc > 1 else []
    resume_command = " ".join(["tunelab train", args.config, *args.overrides, *nproc, "--resume"])
    if args.nproc > 1 and world().size == 1:
        train.check_launchable(cfg)  # problems a user can fix, shown once, before any process starts
        return distributed.launch(args.config, args.overrides, args.nproc, args.resume)  # the main one reports
    try:
        run_dir = train.run(cfg, resume=args.resume, echo=print)
    except TrainingInterrupted as err:
        err.problems.append(f"continue with: {resume_command}")
        raise
    except KeyboardInterrupt:
        print(f"tunelab: interrupted; continue with: {resume_command}", file=sys.stderr)
        raise SystemExit(130) from None
    if not world().is_main:
        return None
    metrics = RunDir(run_dir).metrics()
    shown = {k: metrics[k] for k in ("train_seconds", "train_samples_per_second", "trainable_params",
                                    "peak_rss_mb", "final_train_loss", "best_eval_metric")}
    print("  ".join(f"{k} {v}" for k, v in shown.items()))
    print(f"wrote {run_dir}/ (see {run_dir}/README.md)")


def _merge_arguments(parser: argparse.ArgumentParser) -> None:
    run_argument(parser)
    parser.add_argument("--full-precision", action="store_true",
                        help="for qlora/lora-8bit runs: reload the base in fp32 and merge the adapter there")
    trust_argument(parser)


def _merge(args: argparse.Namespace) -> None:
    from tunelab.quantization import merge

    target = merge.run(args.run, full_precision=args.full_precision, trust_remote_code=args.trust_remote_code)
    print(f"wrote {target}/")


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    run_argument(parser)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify, or prompts to complete")
    parser.add_argument("--input", help="a .jsonl file of inputs: objects with a `text` (or `prompt`) field, or strings")
    parser.add_argument("--output", help="write one JSON result per line here instead of printing")
    variant_argument(parser)
    parser.add_argument("--merged", action="store_const", const="merged", dest="variant",
                        help="same as --variant merged")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="causal LM: tokens to generate (default: the run's eval.max_new_tokens)")
    parser.add_argument("--temperature", type=non_negative_float, default=0.0,
                        help="causal LM: 0 for greedy decoding (default), above 0 to sample")
    parser.add_argument("--top-p", type=float, default=1.0, help="causal LM: nucleus sampling mass (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")
    trust_argument(parser)


def _predict(args: argparse.Namespace) -> None:
    from tunelab.serving import predict

    results = predict.run(args)
    if args.output:
        print(f"wrote {len(results)} results to {args.output}")


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    run_argument(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="eval.* settings replacing the run's config.yaml, e.g. eval.max_examples=50 eval.seed=1 "
                             "eval.threads=2 (tunelab config schema lists them); the flags below override both")
    parser.add_argument("--split", choices=["train", "validation", "test"], default=None,
                        help="split to measure (overrides eval.split, normally test)")
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="evaluate only the first N examples (overrides eval.max_examples)")
    variant_argument(parser)
    trust_argument(parser)


def _evaluate(args: argparse.Namespace) -> None:
    from tunelab.evaluation import evaluate

    report = evaluate.run(args.run, split=args.split, max_examples=args.max_examples, variant=args.variant,
                          trust_remote_code=args.trust_remote_code, overrides=args.overrides)
    print(evaluate.table_text(report))
    print(f"wrote {report['written_to']}/eval.json and predictions.jsonl")


def _config_show(args: argparse.Namespace) -> None:
    from tunelab.config import load_config, to_yaml

    print(redact(to_yaml(load_config(args.config, args.overrides))), end="")


def _config_schema(args: argparse.Namespace) -> None:
    from tunelab.config import schema_text

    print(schema_text(), end="")


def _make_tiny_arguments(parser: argparse.ArgumentParser) -> None:
    from tunelab.models.tiny import ARCHITECTURES

    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES), help="model family to build")
    parser.add_argument("--out", required=True, help="folder to write the model and tokenizer to")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads; must divide --hidden (default 4)")
    parser.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights (default 0)")


def _make_tiny(args: argparse.Namespace) -> None:
    from tunelab.models.tiny import make_tiny_model

    if args.hidden < 1 or args.layers < 1 or args.heads < 1 or args.hidden % args.heads:
        raise TunelabError(f"--hidden {args.hidden}, --layers {args.layers}, --heads {args.heads}: sizes must be "
                           "positive and --heads must divide --hidden")
    if args.vocab_size < 300:
        raise TunelabError(f"--vocab-size {args.vocab_size}: too small; a byte-level BPE needs at least 300")
    out = make_tiny_model(args.arch, args.out, hidden=args.hidden, layers=args.layers, heads=args.heads,
                          vocab_size=args.vocab_size, seed=args.seed)
    print(f"wrote a tiny {args.arch} model to {out}/ (use it with model.name={out})")


COMMANDS: dict[str, Command] = {
    "prepare": Command("validate, split and tokenize the data a config describes", config_arguments, _prepare,
                       "Reads the config's data, explains every bad row (exit code 2, nothing written), removes "
                       "duplicates, splits validation/test off train when not given, tokenizes, and writes the "
                       "run folder (output.dir) with data_report.json."),
    "train": Command("fine-tune a model as a config says (prepares the data first)", _train_arguments, _train,
                     "Prepares the data, builds the model through the chosen method (full, freeze, lora, dora, "
                     "rslora, adalora, qlora, lora-8bit), trains with the Hugging Face Trainer and writes a "
                     "complete run folder: adapter/ or model/, metrics.json, train_log.jsonl, versions.json."),
    "evaluate": Command("measure base vs tuned on a split, with a 95% bootstrap CI of the delta",
                        _evaluate_arguments, _evaluate,
                        "Scores the tuned model and the base model (classification: a linear probe on the frozen "
                        "encoder; causal LM: the base model itself) on the same examples, prints metric, base, "
                        "tuned, delta and a paired-bootstrap 95% CI, and writes RUN/eval.json and "
                        "RUN/predictions.jsonl. Settings come from the run's config.yaml (eval.*); KEY=VALUE "
                        "overrides and the flags replace them."),
    **STUDY_COMMANDS,
    **DEPLOY_COMMANDS,
    "predict": Command("classify texts or complete prompts with a finished run", _predict_arguments, _predict),
    "merge": Command("fold a run's adapter into the base: RUN/merged/, loadable with from_pretrained",
                     _merge_arguments, _merge),
    "demo": DEMO_COMMAND,
    "make-tiny-model": Command("write a tiny random causal LM for offline tests and demos", _make_tiny_arguments,
                               _make_tiny),
}

CONFIG_COMMANDS: dict[str, Command] = {
    "show": Command("print the resolved config (file + overrides + defaults)", config_arguments, _config_show),
    "schema": Command("print every config option with its type, default and help", lambda p: None, _config_schema),
}


# Commands with subcommands: `tunelab config show`, `tunelab models list`.
GROUPS: dict[str, tuple[str, dict[str, Command]]] = {
    "config": ("show the resolved config or the schema of every option", CONFIG_COMMANDS),
    "models": ("list the built-in models, or fetch one into the cache now", MODELS_COMMANDS),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="Fine-tune pre-trained language models on your own data and measure what it bought you. "
                    "One YAML config drives every stage.")
    parser.add_argument("--version", action="version", version=f"tunelab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        _add_command(commands, name, command)
    for group, (help_text, members) in GROUPS.items():
        parent = commands.add_parser(group, help=help_text, description=help_text)
        children = parent.add_subparsers(dest=f"{group}_command", metavar="SUBCOMMAND", required=True)
        for name, command in members.items():
            _add_command(children, name, command)
    return parser


def _add_command(commands, name: str, command: Command) -> None:
    # argparse %-formats a help string always (for %(default)s and the like), so a plain % is written %%;
    # a description only when it mentions %(prog), and prints it verbatim otherwise.
    description = command.description or command.help
    sub = commands.add_parser(name, help=command.help.replace("%", "%%"),
                              description=description.replace("%", "%%") if "%(prog)" in description else description)
    command.add_arguments(sub)
    lists = [a.dest for a in sub._actions if not a.option_strings and a.nargs in ("*", "+")]
    sub.set_defaults(handler=command.handler, trailing=lists[-1] if lists else None)


def report_problems(err: TunelabError, stream=None) -> None:
    """Print at most MAX_PROBLEMS_SHOWN problem lines and a count of the rest (to stderr by default)."""
    stream = stream or sys.stderr
    count = len(err.problems)
    heading = f"tunelab: {err.title}" + (f" ({count} problems)" if count > 1 else "")
    print(heading + ":", file=stream)
    for line in err.problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {redact(line)}", file=stream)
    if count > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {count - MAX_PROBLEMS_SHOWN} more", file=stream)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 1 bug, 130 interrupted)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a trailing list (texts, KEY=VALUE overrides) at the first option;
    # take what follows the options too (`quantize RUN --method gptq quantize.bits=8`).
    trailing = getattr(args, "trailing", None)
    if extra and trailing and not any(item.startswith("-") for item in extra):
        getattr(args, trailing).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args) or 0
    except TunelabError as err:
        report_problems(err)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        problem = disk_problem(err)
        if problem is None:
            raise
        report_problems(TunelabError(f"{problem}; what was being written is not marked complete, so no later "
                                     "stage will use it; free space or fix permissions (or choose another "
                                     "output.dir), then run again", title="cannot write"))
        return 2


def disk_problem(err: BaseException) -> str | None:
    """``file: reason`` when ``err`` (or what caused it) is the disk refusing a write, else None.

    Python raises OSError; the Rust-backed libraries (tokenizers, safetensors) raise their own
    exception types whose message ends in ``(os error N)``.
    """
    while err is not None:
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            return f"{err.filename or 'a file'}: {err.strerror}"
        found = RUST_OS_ERROR.search(str(err))
        if found and int(found.group(2)) in DISK_ERRNOS:
            return found.group(1).strip() or os.strerror(int(found.group(2)))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
