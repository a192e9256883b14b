"""The built-in demo: was fine-tuning worth it? Measured, offline, in a few minutes on a CPU.

    tunelab demo [--out runs/demo] [KEY=VALUE ...]

1. base: a linear probe on the frozen all-MiniLM-L6-v2 encoder, trained on the train split;
2. tuned: LoRA fine-tuning of the same encoder (plus head) on the same split;
3. both scored on the held-out test split of the built-in support-intent data.
Writes ``OUT/summary.json`` and ``OUT/report.html`` and prints the before/after table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tunelab.config.load import from_dict
from tunelab.runs import read_json, write_json

# The same settings as configs/support-intents-lora.yaml (a test keeps them equal).
DEMO_CONFIG = {
    "task": "classification",
    "model": {"name": "builtin:minilm"},
    "data": {"train": "builtin:support_intents/train.jsonl", "test": "builtin:support_intents/test.jsonl",
             "max_length": 64},
    "method": {"name": "lora"},
    "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"},
    "train": {"epochs": 4, "batch_size": 16, "learning_rate": 2.0e-3, "seed": 0},
}


def demo_config(out: str | Path, overrides: list[str] = ()):
    tree = {**DEMO_CONFIG, "output": {"dir": str(out), "overwrite": True}}
    return from_dict(tree, overrides, name="demo", source="demo config")


def run(out: str | Path = "runs/demo", overrides: list[str] = (), echo: Callable[[str], None] = lambda _: None) -> dict:
    """Train, measure base and tuned on the test split, write ``summary.json``; return the summary."""
    from tunelab import evaluate, train

    cfg = demo_config(out, list(overrides))
    echo(f"[1/2] preparing the built-in support-intent data and LoRA-fine-tuning {cfg.model.name} ...")
    run_dir = train.run(cfg, echo=echo)
    echo("[2/2] measuring base (a linear probe on the frozen encoder) and tuned on the held-out test split ...")
    report = evaluate.run(run_dir, split="test", trust_remote_code=cfg.model.trust_remote_code)
    metrics = read_json(run_dir / "metrics.json")
    scores = report["metrics"]
    summary = {
        "model": cfg.model.name, "method": cfg.method.name, "test_examples": report["examples"],
        "base": {"kind": report["base"], **{k: round(v["base"], 4) for k, v in scores.items()}},
        "tuned": {"kind": report["tuned"], **{k: round(v["tuned"], 4) for k, v in scores.items()}},
        "delta": {k: round(v["delta"], 4) for k, v in scores.items()},
        "delta_ci95": {k: [round(x, 4) for x in v["ci95"]] for k, v in scores.items()},
        **{k: metrics[k] for k in ("train_seconds", "train_samples_per_second", "trainable_params", "total_params",
                                   "trainable_percent", "peak_rss_mb", "artifact_size_mb")},
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "summary.json", summary)
    from tunelab import report as html_report

    html_report.run([str(run_dir)], str(run_dir / "report.html"))
    return summary


def summary_table(summary: dict) -> str:
    lines = [f"{'metric':<10}{'base (probe)':>14}{'tuned':>9}{'delta':>9}   95% CI of delta"]
    for name in summary["delta"]:
        low, high = summary["delta_ci95"][name]
        lines.append(f"{name:<10}{summary['base'][name]:>14.4f}{summary['tuned'][name]:>9.4f}"
                     f"{summary['delta'][name]:>+9.4f}   [{low:+.4f}, {high:+.4f}]")
    lines.append(f"test examples {summary['test_examples']}; trained {summary['trainable_params']:,} of "
                 f"{summary['total_params']:,} parameters ({summary['trainable_percent']:.2f}%) in "
                 f"{summary['train_seconds']:.0f} s; peak RSS {summary['peak_rss_mb']:.0f} MiB; "
                 f"adapter {summary['artifact_size_mb']:.2f} MiB")
    return "\n".join(lines)
