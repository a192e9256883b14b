"""Example 2: LoRA vs full fine-tuning of a real chat model, on the same data, seed and budget.

What it demonstrates
    LoRA freezes the pre-trained weights W and learns a low-rank update: h = W x + (alpha / r) B A x,
    with A (r x d) and B (d x r), B starting at zero (so training starts from the original model).
    tunelab builds the adapter with PEFT's ``LoraConfig`` under its own names (r, lora_alpha,
    lora_dropout, target_modules). This script instruction-tunes SmolLM2-135M-Instruct on tunelab's
    built-in support replies (customer messages answered in one shop's house style) twice: full
    fine-tuning (every weight, at 5e-05, the usual rate for updating every weight) and LoRA with the
    settings of configs/support-replies-smollm2.yaml (r=16, alpha=32, all linear layers, at 1e-3), each
    in its own process so each peak memory is its own. Both train for half an epoch (152 of the 304
    training messages, 19 steps of 8, so that both runs and their evaluations take roughly 10 minutes on
    2 CPU cores, an estimate; --epochs 1 for the full pass) and are scored on the same 50
    held-out messages (greedy replies of up to 64 tokens), with the model as released as the "before".
    One table compares trainable parameters, peak RSS, training time, throughput, checkpoint size and
    test quality (perplexity of the reference replies, ROUGE-L of greedy replies, with 95% CIs); a
    "lora vs full:" reading of the ratios follows it.

    python examples/example_02_lora_peft.py                     # SmolLM2-135M-Instruct, support replies (~10 min*)
    python examples/example_02_lora_peft.py --quick             # a smoke run (under a minute); its numbers mean nothing
    python examples/example_02_lora_peft.py --r 8 --alpha 16 --dropout 0.1 --target-modules q_proj,v_proj
    python examples/example_02_lora_peft.py --methods full,lora,dora         # more PEFT variants side by side
    python examples/example_02_lora_peft.py --model HuggingFaceTB/SmolLM2-360M-Instruct --data my.jsonl --test t.jsonl
    python examples/example_02_lora_peft.py --task classification           # MiniLM on the built-in intents
    python examples/example_02_lora_peft.py train.learning_rate=5e-4 eval.max_new_tokens=96   # any config setting
    (* approximate, on a 2-core CPU)

    qlora (a 4-bit base) needs bitsandbytes (pip install -e ".[quant]"); a method that cannot run here
    gets a row saying why. A 7B-class model needs a GPU: examples/configs/mistral-7b-qlora.yaml is QLoRA
    on Mistral-7B for one 24 GB GPU (see the comment at its top for the command).

What to look for
    - "before": SmolLM2 already answers politely, but not in the shop's style or with its policies, so
      its perplexity of the reference replies is high and its ROUGE-L low; both methods should improve
      on it, and the table shows by how much;
    - trainable parameters: LoRA r=16 on every linear layer of SmolLM2 trains 4,884,480 of 139,399,488
      parameters, 3.50% (as `tunelab demo --task causal_lm` printed it in
      benchmarks/results/demo-causal-lm.json);
    - checkpoint: that adapter was 18.69 MiB in the same file, against 513.1 MiB for the whole model's
      fp32 weights (benchmarks/RESULTS.md, Inference: the `merged` row); check the checkpoint column;
    - peak RSS: lower for LoRA (no gradients or optimizer state for frozen weights), by less than the
      parameter ratio, because the frozen model and the activations are still in memory (a LoRA of r 8
      peaked at 0.76x of full fine-tuning's RSS in the training benchmark, benchmarks/RESULTS.md);
    - time: on a CPU LoRA is not much faster per step: the backward pass still goes through every layer
      (in the same benchmark full fine-tuning took about 1.3x LoRA's time);
    - quality: the LoRA paper (arXiv 2106.09685) reports results on par with full fine-tuning on the
      models it tried; compare the two rows here, and when their 95% CIs overlap, 50 test messages cannot
      tell them apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import (
    INTENTS_MODEL,
    add_chat_arguments,
    chat_data_section,
    chat_learning_rate,
    chat_lora,
    chat_model,
    intents_data_section,
    overrides,
)

from tunelab.cli import report_problems
from tunelab.config import from_dict, to_yaml
from tunelab.errors import TunelabError
from tunelab.rundir import read_json
from tunelab.studies import bakeoff
from tunelab.tables import fmt, text_table

# per --task: the config besides the model, data and LoRA settings, and the two quality metrics shown
# (chat: LoRA's learning rate is the reference config's, added when the config is built)
TASKS = {
    "chat": {"task": "causal_lm", "epochs": 0.5, "metrics": ("perplexity", "rougeL"),
             "train": {"batch_size": 8, "seed": 0, "eval_strategy": "no"},
             "eval": {"max_new_tokens": 64, "batch_size": 8}},
    "classification": {"task": "classification", "epochs": 3, "metrics": ("accuracy", "macro_f1"),
                       "train": {"batch_size": 16, "learning_rate": 2e-3, "seed": 0}, "eval": {}},
}
LABELS = {"perplexity": "perplexity", "rougeL": "ROUGE-L", "accuracy": "accuracy", "macro_f1": "macro-F1"}
COLUMNS = ["method", "trainable params", "trainable %", "peak RSS MiB", "train s", "samples/s", "checkpoint"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="any config setting, e.g. train.epochs=2 data.max_rows=100 (see `tunelab config schema`)")
    lora = chat_lora()  # the defaults: configs/support-replies-smollm2.yaml's
    parser.add_argument("--r", type=int, default=lora["r"], help=f"LoRA rank r (default {lora['r']})")
    parser.add_argument("--alpha", type=float, default=lora["lora_alpha"],
                        help=f"lora_alpha; the update is scaled by alpha/r (default {lora['lora_alpha']:g})")
    parser.add_argument("--dropout", type=float, default=lora["lora_dropout"],
                        help=f"lora_dropout on the adapter's input (default {lora['lora_dropout']:g})")
    modules = lora["target_modules"] if isinstance(lora["target_modules"], str) else ",".join(lora["target_modules"])
    parser.add_argument("--target-modules", default=modules,
                        help=f"comma-separated module names (q_proj,v_proj; query,value for BERT) or all-linear "
                             f"(default {modules})")
    parser.add_argument("--methods", default="full,lora",
                        help="comma-separated methods to compare; the ratios are read against full (default "
                             "full,lora; also dora, rslora, adalora, qlora, lora-8bit, freeze)")
    parser.add_argument("--task", choices=list(TASKS), default="chat",
                        help="chat (default: SmolLM2 on the built-in support replies, half an epoch) or "
                             "classification (MiniLM on the built-in support intents, 3 epochs; --quick keeps MiniLM)")
    add_chat_arguments(parser, "runs/example_02")
    return parser.parse_args(argv)


def build_tree(args: argparse.Namespace) -> dict:
    """The config every method shares; the bake-off swaps the method (and full's learning rate) per run."""
    task = TASKS[args.task]
    if args.task == "chat":
        model, data, rate = chat_model(args), chat_data_section(args), {"learning_rate": chat_learning_rate()}
    else:
        model, data, rate = args.model or INTENTS_MODEL, intents_data_section(args), {}
    modules = args.target_modules if args.target_modules == "all-linear" else args.target_modules.split(",")
    return {"task": task["task"], "model": {"name": model}, "data": data, "method": {"name": "lora"},
            "lora": {"r": args.r, "lora_alpha": args.alpha, "lora_dropout": args.dropout, "target_modules": modules},
            "train": {"epochs": args.epochs or task["epochs"], **rate, **task["train"]}, "eval": task["eval"],
            "output": {"dir": str(Path(args.out) / "base")}}


def write_config(args: argparse.Namespace) -> tuple[Path, str]:
    """The shared config, written where the bake-off reads it; returns its path and the model's name."""
    cfg = from_dict(build_tree(args), overrides(args), name="example_02", source="example_02")
    path = Path(args.out) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg), encoding="utf-8")
    return path, cfg.model.name


def with_ci(score: dict | None, key: str = "tuned") -> str:
    if score is None:
        return "-"
    if key == "base":
        return fmt(score["base"])
    low, high = score["tuned_ci95"]
    return f"{fmt(score['tuned'])} [{fmt(low)}, {fmt(high)}]"


def checkpoint(row: dict) -> str:
    kind = read_json(Path(row["run_dir"]) / "metrics.json").get("artifact", "?")
    return f"{row['artifact_size_mb']:.1f} MiB {'whole model' if kind == 'model' else kind}"


def comparison(report: dict, metrics: tuple[str, ...]) -> str:
    """One row for the model before fine-tuning, then one per method (a failed method says why)."""
    done = [r for r in report["rows"] if "error" not in r]
    cells = []
    if done:
        cells.append(["before (no fine-tuning)"] + ["-"] * (len(COLUMNS) - 1)
                     + [with_ci(done[0]["scores"].get(m), "base") for m in metrics])
    for r in report["rows"]:
        if "error" in r:
            cells.append([r["method"], f"failed: {r['error']}"] + [""] * (len(COLUMNS) + len(metrics) - 2))
            continue
        cells.append([r["method"], r["trainable_params"], r["trainable_percent"], r["peak_rss_mb"], r["train_seconds"],
                      r["train_samples_per_second"], checkpoint(r)] + [with_ci(r["scores"].get(m)) for m in metrics])
    return text_table(COLUMNS + [f"{LABELS.get(m, m)} [95% CI]" for m in metrics], cells)


def quality_line(name: str, metric: str, row: dict, full: dict) -> str | None:
    mine, theirs = row["scores"].get(metric), full["scores"].get(metric)
    if mine is None or theirs is None:
        return None
    (a_low, a_high), (b_low, b_high) = mine["tuned_ci95"], theirs["tuned_ci95"]
    overlap = a_low <= b_high and b_low <= a_high
    verdict = "the 95% CIs overlap: this test set cannot tell them apart" if overlap else \
        "the 95% CIs do not overlap"
    better = "lower" if mine.get("lower_is_better") else "higher"
    return (f"  {LABELS.get(metric, metric):<16} {fmt(mine['tuned'])} vs {fmt(theirs['tuned'])} "
            f"({mine['tuned'] - theirs['tuned']:+.4g}, {better} is better); {verdict}")


def reading(report: dict, metrics: tuple[str, ...]) -> list[str]:
    """'<method> vs full:' and the ratios that matter, for every method that ran besides full."""
    rows = {r["method"]: r for r in report["rows"] if "error" not in r}
    full = rows.get("full")
    if not full:
        return ["(no ratios: full fine-tuning is not among the methods that ran)"]
    lines = []
    for name, r in rows.items():
        if name == "full":
            continue
        lines += [f"{name} vs full:",
                  f"  trainable params {r['trainable_params'] / full['trainable_params']:.2%} of full's",
                  f"  peak RSS         {r['peak_rss_mb'] / full['peak_rss_mb']:.2f}x "
                  f"({r['peak_rss_mb']:,.0f} vs {full['peak_rss_mb']:,.0f} MiB)",
                  f"  train time       {r['train_seconds'] / full['train_seconds']:.2f}x "
                  f"({r['train_seconds']:,.0f} vs {full['train_seconds']:,.0f} s)",
                  f"  checkpoint       {r['artifact_size_mb'] / full['artifact_size_mb']:.3f}x "
                  f"({r['artifact_size_mb']:,.1f} vs {full['artifact_size_mb']:,.1f} MiB)"]
        lines += [line for m in metrics if (line := quality_line(name, m, r, full))]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        config, model = write_config(args)
        if args.quick:
            print("--quick: a few steps on a small sample; the numbers below mean nothing, they only show that "
                  "the script runs")
        print(f"training {', '.join(methods)} of {model} on the same data, seed and budget, each in its own "
              f"process (config: {config}) ...")
        report = bakeoff.run(str(config), [], methods, out=args.out, echo=print)
    except TunelabError as err:
        report_problems(err)
        return 2
    metrics = TASKS[args.task]["metrics"]
    print(f"\n== {' vs '.join(methods)} on the {report['split']} split")
    print(comparison(report, metrics))
    print("\n" + "\n".join(reading(report, metrics)))
    print(f"\nfull table: {report['dir']}/bakeoff.md; every run folder is under {report['dir']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
