"""Inference on this machine: fp32 against every quantized variant, for a real classifier and a ~60M causal LM.

    python benchmarks/inference.py [--out benchmarks/results] [--skip-gptq]

1. MiniLM (the shipped all-MiniLM-L6-v2) LoRA-tuned on the built-in support intents: real weights,
   so its accuracy change is a real quality cost.
2. A Llama-style model of about 60M parameters (hidden 768, 8 layers, random init, then a short LoRA
   run on the built-in instructions): realistic layer sizes for speed and memory; its perplexity
   says little about quality, since the weights are random.

Each run goes through ``tunelab quantize RUN --method int8,nf4,gptq,dynamic-int8 --compare``, which
measures every variant in its own process (latency: median of repeated timed calls after warm-up).
Latency at batch 1 and 8 and throughput at batch 8 (examples/s for the classifier, generated tokens/s
for the causal LM), all in ``torch.inference_mode`` with the measured thread count. The deployment
target: the fastest quantized variant at least 1.5x fp32's batch-8 throughput, losing at most 1 point
of accuracy. Prints the tables and writes ``OUT/inference.json`` and ``OUT/inference.md``. Not a timed
test: expect noise on a shared machine, and compare ratios within one table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from common import RESULTS, ROOT, WORK, machine

from tunelab.config import load_config
from tunelab.models.tiny import make_tiny_model
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
    model = make_tiny_model("llama", work / "llama-60m", hidden=768, layers=8, heads=12, vocab_size=4096)
    cfg = load_config(ROOT / "configs" / "support-instructions-tiny.yaml",
                      [f"model.name={model}", f"output.dir={work / 'llama60m-instructions'}", "output.overwrite=true",
                       "method.name=lora", "lora.target_modules=all-linear", "train.learning_rate=1e-3",
                       "train.max_steps=30", "train.batch_size=8", "train.eval_strategy=no",
                       "train.report_to=[none]", "eval.max_new_tokens=32"])
    return train.run(cfg, echo=print)


def compare(run_dir: Path, methods: list[str]) -> dict:
    quantize.run(run_dir, methods, echo=print)
    _, cfg = open_run(run_dir)
    report = quantize_compare.compare(run_dir, cfg, methods, echo=print)
    print(quantize_compare.summary_text(report))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS), help="folder for inference.json and inference.md")
    parser.add_argument("--work", default=str(WORK), help="folder for the runs")
    parser.add_argument("--skip-gptq", action="store_true", help="leave GPTQ out (it needs tunelab[gptq])")
    args = parser.parse_args()
    methods = ["int8", "nf4", "gptq", "dynamic-int8"]
    if args.skip_gptq or importlib.util.find_spec("gptqmodel") is None:
        print("GPTQ left out (pip install 'tunelab[gptq]' to include it)", file=sys.stderr)
        methods.remove("gptq")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "versions": versions(), "methods": methods,
               "minilm_intents": compare(classifier_run(work), methods),
               "llama60m_instructions": compare(causal_run(work), methods)}
    results["verdicts"] = verdicts(results["minilm_intents"])
    for v in results["verdicts"]:
        print(f"{v['target']}: {v['measured']} (goal {v['goal']}) {'met' if v['met'] else 'MISSED'}")
    (out / "inference.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "inference.md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {out / 'inference.json'} and inference.md")


def verdicts(report: dict) -> list[dict]:
    """The deployment target on the classifier: fastest quantized variant within 1 point of fp32."""
    rows = {r["variant"]: r for r in report["rows"] if "throughput" in r}  # failed variants have no numbers
    fp32 = rows[report["reference"]]
    quantized = [r for name, r in rows.items() if name not in ("model", "merged", "adapter")]
    fastest = max(quantized, key=lambda r: r["throughput"])
    speedup = round(fastest["throughput"] / fp32["throughput"], 2)
    change = round(100 * (fastest["metric_value"] - fp32["metric_value"]), 2)
    within = [r for r in quantized if 100 * (r["metric_value"] - fp32["metric_value"]) >= -1]
    best_within = max(within, key=lambda r: r["throughput"]) if within else None
    return [{"target": f"fastest quantized ({fastest['variant']}) batch-8 throughput vs fp32", "goal": ">= 1.5x",
             "measured": f"{speedup:g}x", "met": speedup >= 1.5},
            {"target": f"its accuracy change ({fastest['variant']})", "goal": ">= -1 pt",
             "measured": f"{change:+g} pt", "met": change >= -1},
            {"target": "fastest variant within 1 point: throughput vs fp32", "goal": ">= 1.5x",
             "measured": (f"{best_within['variant']} {best_within['throughput'] / fp32['throughput']:.2f}x"
                          if best_within else "none within 1 point"),
             "met": bool(best_within) and best_within["throughput"] / fp32["throughput"] >= 1.5}]


def markdown(results: dict) -> str:
    """Both comparison tables, each with how it was measured."""
    titles = {"minilm_intents": "MiniLM (all-MiniLM-L6-v2, real weights), LoRA on the built-in intents",
              "llama60m_instructions": "Llama-style ~60M parameters (random init + 30 LoRA steps), built-in instructions"}
    parts = [f"## {title}\n\n" + "\n\n".join(quantize_compare.notes(results[key])) + "\n\n"
             + markdown_table(quantize_compare.COLUMNS, [quantize_compare.table_cells(r) for r in results[key]["rows"]])
             + "\n" for key, title in titles.items()]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
