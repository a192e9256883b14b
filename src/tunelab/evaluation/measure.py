"""Measure one variant of a run in a process of its own: memory, latency, throughput, quality, outputs.

    python -m tunelab.evaluation.measure RUN VARIANT --split test --out result.json

Run once per variant by ``tunelab quantize --compare``, so each peak RSS belongs to one model.
Latency is the median of ``quantize.timing_repeats`` timed calls after ``quantize.timing_warmup``
untimed ones (the run's settings, or ``--timing-repeats`` / ``--timing-warmup``: the parent passes
the overrides it was given, since this process reads only the run's config): classification scores
a batch of test texts; a causal LM generates ``TIMED_NEW_TOKENS`` tokens greedily for a batch of
test prompts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from tunelab import machine
from tunelab.errors import TunelabError
from tunelab.inference import LoadedRun, class_probabilities, generate, load_run
from tunelab.rundir import write_json

BATCH_SIZES = (1, 8)
TIMED_NEW_TOKENS = 16
GENERATED_EXAMPLES = 32   # prompts whose greedy completions are compared token by token


def measure(run_dir: str | Path, variant: str | None, split: str, max_examples: int | None = None,
            threads: int | None = None, trust_remote_code: bool = False, timing_repeats: int | None = None,
            timing_warmup: int | None = None, precision: str = "fp32") -> dict:
    """One variant's numbers; ``timing_repeats`` / ``timing_warmup`` replace the run's ``quantize.*`` ones.
    ``precision`` bf16 casts a float variant's weights to bf16 when loading."""
    start = time.perf_counter()
    loaded = load_run(run_dir, variant, trust_remote_code=trust_remote_code, precision=precision,
                      setting="--precision")
    load_seconds = time.perf_counter() - start
    timing = {"timing_repeats": timing_repeats, "timing_warmup": timing_warmup}
    loaded.cfg.quantize = loaded.cfg.quantize.model_copy(update={k: v for k, v in timing.items() if v is not None})
    machine.apply(threads or loaded.cfg.eval_threads())
    examples = loaded.run.read_split(split)[: max_examples or loaded.cfg.eval.max_examples or None]
    if not examples:
        raise TunelabError(f"{loaded.run_dir}: split '{split}' has no examples to measure")
    task = classification if loaded.labels is not None else causal
    result = {"load_seconds": round(load_seconds, 2),
              **{key.replace("_bytes", "_mb"): round(value / 2**20, 3)
                 for key, value in weights_memory(loaded.model).items()},
              **task(loaded, examples, split)}
    result["peak_rss_mb"] = round(machine.peak_rss_mb(), 1)
    return result


def classification(loaded: LoadedRun, examples: list[dict], split: str) -> dict:
    cfg = loaded.cfg
    texts = [e["text"] for e in examples]
    probs = class_probabilities(loaded.model, loaded.tokenizer, texts, cfg.data.max_length, cfg.eval.batch_size)
    predicted = probs.argmax(-1).tolist()
    label2id = {name: i for i, name in enumerate(loaded.labels)}
    correct = sum(p == label2id[e["label"]] for p, e in zip(predicted, examples))
    timings = {n: timed(lambda n=n: class_probabilities(loaded.model, loaded.tokenizer, batch_of(texts, n),
                                                         cfg.data.max_length, n), cfg.quantize)
               for n in BATCH_SIZES}
    return {"metric": "accuracy", "metric_value": correct / len(examples), "latency_ms": timings,
            "throughput": round(BATCH_SIZES[-1] / (timings[BATCH_SIZES[-1]] / 1000), 2),
            "throughput_unit": "examples/s", "probabilities": probs.tolist()}


def causal(loaded: LoadedRun, examples: list[dict], split: str) -> dict:
    from tunelab.data.tokenize import to_messages
    from tunelab.evaluation.causal import sequence_nll, split_records

    cfg = loaded.cfg
    records = split_records(loaded, split, len(examples))
    nll = sequence_nll(loaded.model, records, cfg.eval.batch_size)
    total, count = sum(n for n, _ in nll), sum(c for _, c in nll)
    if loaded.format in ("instruction", "chat"):
        prompts = [to_messages(e)[:-1] for e in examples]
    else:  # plain text: continue the first tokens of each record
        prompts = [loaded.tokenizer.decode(r["input_ids"][:16], skip_special_tokens=True) for r in records]
    completions = generate(loaded, prompts[:GENERATED_EXAMPLES], cfg.eval.max_new_tokens, cfg.eval.batch_size,
                           token_ids=True)
    timings = {n: timed(lambda n=n: generate(loaded, batch_of(prompts, n), TIMED_NEW_TOKENS, n, token_ids=True,
                                             min_new_tokens=TIMED_NEW_TOKENS), cfg.quantize)
               for n in BATCH_SIZES}
    n = BATCH_SIZES[-1]
    return {"metric": "perplexity", "metric_value": math.exp(total / max(count, 1)), "latency_ms": timings,
            "throughput": round(n * TIMED_NEW_TOKENS / (timings[n] / 1000), 2),
            "throughput_unit": "generated tokens/s", "example_nll": [n_ / max(c, 1) for n_, c in nll],
            "completions": completions}


def batch_of(items: list, n: int) -> list:
    """The first ``n`` items, repeated when the split is smaller."""
    return [items[i % len(items)] for i in range(n)]


def timed(call, settings) -> float:
    """Median wall time of ``call`` in milliseconds, after warm-up calls."""
    for _ in range(settings.timing_warmup):
        call()
    times = []
    for _ in range(settings.timing_repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def weights_memory(model: nn.Module) -> dict:
    """Bytes held by the weights (parameters, buffers, quantization scales): all, and the transformer blocks.

    Quantized formats keep their weights in different shapes (bitsandbytes' packed uint8 and
    quant states, GPTQ's qweight/scales, torch's packed int8), so this counts every tensor of
    the state dict once, whatever its type.
    """
    from tunelab.models.loading import transformer_layers

    layers = transformer_layers(model)
    prefix = next(name for name, m in model.named_modules() if m is layers) + "."
    total = blocks = 0
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        size = sum(_nbytes(t, seen) for t in _tensors(value))
        total += size
        blocks += size if key.startswith(prefix) else 0
    return {"weights_bytes": total, "block_weights_bytes": blocks}


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):  # torch's packed (weight, bias) of a dynamic int8 layer
        return [t for item in value for t in _tensors(item)]
    return []


def _nbytes(tensor: torch.Tensor, seen: set[int]) -> int:
    if tensor.is_quantized:
        scales = tensor.q_per_channel_scales().numel() * 8 if tensor.qscheme() == torch.per_channel_affine else 8
        return tensor.numel() * tensor.element_size() + scales
    if tensor.data_ptr() in seen:  # tied weights count once
        return 0
    seen.add(tensor.data_ptr())
    return tensor.numel() * tensor.element_size()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tunelab.evaluation.measure", description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("variant", help="adapter, merged, model or a quantization method")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--out", required=True, help="JSON file for the result")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: eval.threads, train.threads, or measured)")
    parser.add_argument("--trust-remote-code", action="store_true", help="load a run that runs its model's own code")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: cast the variant's weights to bf16 when loading (float variants only)")
    parser.add_argument("--timing-repeats", type=int, default=None,
                        help="timed calls per latency (default: the run's quantize.timing_repeats)")
    parser.add_argument("--timing-warmup", type=int, default=None,
                        help="untimed calls before them (default: the run's quantize.timing_warmup)")
    args = parser.parse_args(argv)
    variant = None if args.variant in ("adapter", "model") else args.variant
    result = measure(args.run, variant, args.split, args.max_examples, args.threads, args.trust_remote_code,
                     args.timing_repeats, args.timing_warmup, args.precision)
    write_json(Path(args.out), {**result, "variant": args.variant})


if __name__ == "__main__":
    main()
