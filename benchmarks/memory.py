"""Peak memory of full fine-tuning vs LoRA vs QLoRA vs LoRA on an 8-bit base: same model, data and batch.

    python benchmarks/memory.py [--models minilm,llama60m] [--steps 20] [--methods full,lora,qlora,lora-8bit]

Each method trains --steps optimizer steps through `tunelab train` in its own process (no evaluation,
no checkpoints besides the final save), on
- minilm: all-MiniLM-L6-v2 (22.7M parameters, 87 MB in fp32) on the built-in support intents, batch 16;
- llama60m: a Llama-style model of about 60M parameters (hidden 768, 8 layers, random init) on the
  built-in support instructions, batch 8.
Reports the peak RSS (VmHWM) of the whole process, the RSS once the libraries are imported (the same
for every method: torch, transformers, PEFT), and the difference, which is what the method itself
costs: weights, gradients, optimizer state and activations. Prints a table; writes
benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, ROOT, WORK, machine, ratio, run_worker, serve_worker, worker_arguments, write_result

SCRIPT = Path(__file__).resolve()
MODELS = {
    "minilm": {"config": "support-intents-lora.yaml", "batch_size": 16, "overrides": []},
    "llama60m": {"config": "support-instructions-tiny.yaml", "batch_size": 8,
                 "overrides": ["lora.target_modules=all-linear"]},
}


def train_worker(spec: dict) -> dict:
    """One method's short run; RSS after imports is read before any model or data is touched."""
    import peft  # noqa: F401
    import transformers  # noqa: F401  (imports counted in the baseline, as they are in every run)

    from tunelab.config import load_config
    from tunelab.machine import peak_rss_mb
    from tunelab.rundir import read_json
    from tunelab.training import train

    after_imports = current_rss_mb()
    imports_peak = peak_rss_mb()
    cfg = load_config(spec["config"], spec["overrides"])
    run_dir = train.run(cfg)
    metrics = read_json(run_dir / "metrics.json")
    return {"rss_after_imports_mb": round(after_imports, 1), "imports_peak_mb": round(imports_peak, 1),
            "trainable_params": metrics["trainable_params"], "total_params": metrics["total_params"],
            "train_seconds": metrics["train_seconds"]}


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_overrides(name: str, work: Path) -> list[str]:
    if name != "llama60m":
        return []
    from tunelab.models.tiny import make_tiny_model

    folder = work / "llama-60m"
    if not (folder / "config.json").exists():
        make_tiny_model("llama", folder, hidden=768, layers=8, heads=12, vocab_size=4096)
    return [f"model.name={folder}"]


def measure(name: str, methods: list[str], steps: int, work: Path) -> dict:
    model = MODELS[name]
    rows = []
    for method in methods:
        print(f"[{name}] {method} ...", flush=True)
        overrides = [*model_overrides(name, work), *model["overrides"], f"method.name={method}",
                     f"train.max_steps={steps}", f"train.batch_size={model['batch_size']}", "train.eval_strategy=no",
                     "train.report_to=[none]", f"output.dir={work / f'{name}-{method}'}", "output.overwrite=true"]
        result = run_worker(SCRIPT, "train", {"config": str(ROOT / "configs" / model["config"]), "overrides": overrides})
        rows.append({"method": method, "peak_rss_mb": result["peak_rss_mb"],
                     "rss_after_imports_mb": result["rss_after_imports_mb"],
                     "method_mb": round(result["peak_rss_mb"] - result["rss_after_imports_mb"], 1),
                     "trainable_params": result["trainable_params"], "total_params": result["total_params"]})
    full = next((r for r in rows if r["method"] == "full"), None)
    for row in rows:
        if full:
            row["peak_vs_full"] = ratio(row["peak_rss_mb"], full["peak_rss_mb"])
            row["method_mb_vs_full"] = ratio(row["method_mb"], full["method_mb"])
    return {"batch_size": model["batch_size"], "steps": steps, "rows": rows}


def verdicts(result: dict) -> list[dict]:
    found = []
    for name, data in result["models"].items():
        lora = next((r for r in data["rows"] if r["method"] == "lora" and "peak_vs_full" in r), None)
        if lora:
            found.append({"target": f"{name}: LoRA peak RSS vs full fine-tuning", "goal": "<= 0.6",
                          "measured": f"{lora['peak_vs_full']:g}", "met": lora["peak_vs_full"] <= 0.6})
    return found


def table(result: dict) -> str:
    from tunelab.tables import text_table

    rows = [[name, r["method"], f"{r['trainable_params']:,}", r["peak_rss_mb"], r["rss_after_imports_mb"],
             r["method_mb"], r.get("peak_vs_full", ""), r.get("method_mb_vs_full", "")]
            for name, data in result["models"].items() for r in data["rows"]]
    headers = ["model", "method", "trainable", "peak RSS MiB", "after imports MiB", "method MiB", "peak vs full",
               "method vs full"]
    verdict_rows = [[v["target"], v["goal"], v["measured"], "yes" if v["met"] else "NO"] for v in result["verdicts"]]
    return text_table(headers, rows) + "\n\n" + text_table(["target", "goal", "measured", "met"], verdict_rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,llama60m", help="comma-separated: minilm, llama60m")
    parser.add_argument("--methods", default="full,lora,qlora,lora-8bit", help="comma-separated tunelab methods")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (default 10; the peak comes in the first)")
    parser.add_argument("--work", default=str(WORK / "memory"), help="folder for the runs")
    parser.add_argument("--out", default=None, help="folder for memory.json (default benchmarks/results)")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, {"train": train_worker}):
        return {}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    result = {"machine": machine(), "models": {name: measure(name, methods, args.steps, work)
                                               for name in args.models.split(",")}}
    result["verdicts"] = verdicts(result)
    print(table(result))
    print(f"wrote {write_result('memory', result, Path(args.out) if args.out else RESULTS)}")
    return result


if __name__ == "__main__":
    main()
