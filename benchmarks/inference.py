"""Inference on this machine: fp32 against every quantized or bf16 variant, for a real classifier and a real chat model.

    python benchmarks/inference.py [--out benchmarks/results] [--skip-gptq] [--causal-methods dynamic-int8]

1. MiniLM (the shipped all-MiniLM-L6-v2) LoRA-tuned on the built-in support intents: real weights,
   so its accuracy change is a real quality cost.
2. SmolLM2-135M-Instruct (builtin:smollm2-135m) after a short LoRA run on the built-in support replies:
   a real chat model, so its perplexity change is a real quality cost. Its methods default to
   dynamic-int8 (with SmolLM2's outlier layers, ``mlp.down_proj``, kept fp32): bitsandbytes' int8 and
   nf4 generate slower than fp32 on a CPU (see ``docs/concepts/quantization.md``).

Each run goes through ``tunelab quantize RUN --method ... --compare``, which measures every variant in
its own process (latency: median of repeated timed calls after warm-up), with a ``bf16`` row where
this CPU's bf16 matmuls measure clearly faster than fp32 (``quantize.precision: auto``). Latency at
batch 1 and 8 and throughput at batch 8 (examples/s for the classifier, generated tokens/s for the
causal LM), all in ``torch.inference_mode`` with the measured thread count. The deployment target, for
each model: the fastest variant within 1 point of accuracy (2% of perplexity) at least 1.5x fp32's
batch-8 throughput. Prints the tables and writes ``OUT/inference.json`` and ``OUT/inference.md``. Not
a timed test: expect noise on a shared machine, and compare ratios within one table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from common import RESULTS, ROOT, WORK, machine

from tunelab.config import load_config
from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.rundir import open_run, versions
from tunelab.tables import markdown_table
from tunelab.training import train


def classifier_run(work: Path) -> Path:
    cfg = load_config(ROOT / "configs" / "support-intents-lora.yaml",
                      [f"output.dir={work / 'minilm-intents'}", "output.overwrite=true", "train.epochs=2",
                       "train.report_to=[none]"])
    return train.run(cfg, echo=print)


def causal_run(work: Path) -> Path:
    cfg = load_config(ROOT / "configs" / "support-replies-smollm2.yaml",
                      [f"output.dir={work / 'smollm2-replies'}", "output.overwrite=true", "train.max_steps=30",
                       "train.report_to=[none]", "eval.max_new_tokens=32", "eval.max_examples=64",
                       "quantize.timing_repeats=5", r"quantize.keep_full_precision=[mlp\.down_proj]"])
    return train.run(cfg, echo=print)


def compare(run_dir: Path, methods: list[str]) -> dict:
    quantize.run(run_dir, methods, echo=print)
    _, cfg = open_run(run_dir)
    report = quantize_compare.compare(run_dir, cfg, methods, max_examples=cfg.eval.max_examples, echo=print)
    print(quantize_compare.summary_text(report))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS), help="folder for inference.json and inference.md")
    parser.add_argument("--work", default=str(WORK), help="folder for the runs")
    parser.add_argument("--skip-gptq", action="store_true", help="leave GPTQ out (it needs tunelab[gptq])")
    parser.add_argument("--causal-methods", default="dynamic-int8",
                        help="methods for SmolLM2, comma-separated (default dynamic-int8)")
    args = parser.parse_args()
    methods = ["int8", "nf4", "gptq", "dynamic-int8"]
    if args.skip_gptq or importlib.util.find_spec("gptqmodel") is None:
        print("GPTQ left out (pip install 'tunelab[gptq]' to include it)", file=sys.stderr)
        methods.remove("gptq")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    causal_methods = [m for m in args.causal_methods.split(",") if m]
    results = {"machine": machine(), "versions": versions(), "methods": methods, "causal_methods": causal_methods,
               "minilm_intents": compare(classifier_run(work), methods),
               "smollm2_replies": compare(causal_run(work), causal_methods)}
    results["verdicts"] = verdicts(results["minilm_intents"], "MiniLM") + verdicts(results["smollm2_replies"], "SmolLM2")
    for v in results["verdicts"]:
        print(f"{v['target']}: {v['measured']} (goal {v['goal']}) {'met' if v['met'] else 'MISSED'}")
    (out / "inference.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "inference.md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {out / 'inference.json'} and inference.md")


def verdicts(report: dict, model: str) -> list[dict]:
    """The deployment target: the fastest quantized or bf16 variant within 1 point of accuracy (2% of
    perplexity) at least 1.5x fp32's batch-8 throughput."""
    rows = {r["variant"]: r for r in report["rows"] if "throughput" in r}  # failed variants have no numbers
    fp32 = rows[report["reference"]]
    candidates = [r for name, r in rows.items() if name not in ("model", "merged", "adapter")]
    within = [r for r in candidates if keeps_quality(fp32, r)]
    best = max(within, key=lambda r: r["throughput"]) if within else None
    fastest = max(candidates, key=lambda r: r["throughput"]) if candidates else None
    speedup = best["throughput"] / fp32["throughput"] if best else 0.0
    quality = ("accuracy within 1 point" if report["task"] == "classification" else "perplexity within 2%")
    found = [{"target": f"{model}: fastest variant with {quality}, batch-8 throughput vs fp32", "goal": ">= 1.5x",
              "measured": f"{best['variant']} {speedup:.2f}x ({change(fp32, best)})" if best else "none kept quality",
              "met": speedup >= 1.5}]
    if fastest is not None and fastest is not best:
        found.append({"target": f"{model}: fastest variant overall ({fastest['variant']}) keeps quality",
                      "goal": quality, "measured": f"{fastest['throughput'] / fp32['throughput']:.2f}x, "
                                                  f"{change(fp32, fastest)}", "met": False})
    return found


def keeps_quality(fp32: dict, row: dict) -> bool:
    if row["metric"] == "accuracy":
        return 100 * (row["metric_value"] - fp32["metric_value"]) >= -1
    return row["metric_value"] <= 1.02 * fp32["metric_value"]  # perplexity


def change(fp32: dict, row: dict) -> str:
    if row["metric"] == "accuracy":
        return f"accuracy {100 * (row['metric_value'] - fp32['metric_value']):+.1f} pt"
    return f"perplexity {100 * (row['metric_value'] / fp32['metric_value'] - 1):+.1f}%"


def markdown(results: dict) -> str:
    """Both comparison tables, each with how it was measured."""
    titles = {"minilm_intents": "MiniLM (all-MiniLM-L6-v2, real weights), LoRA on the built-in intents",
              "smollm2_replies": "SmolLM2-135M-Instruct (real weights), 30 LoRA steps on the built-in support replies"}
    parts = [f"## {title}\n\n" + "\n\n".join(quantize_compare.notes(results[key])) + "\n\n"
             + markdown_table(quantize_compare.COLUMNS, [quantize_compare.table_cells(r) for r in results[key]["rows"]])
             + "\n" for key, title in titles.items()]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
