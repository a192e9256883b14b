"""The built-in demos: was fine-tuning worth it? Measured, offline, in minutes on a CPU.

    tunelab demo [--task classification|causal_lm] [--out DIR] [KEY=VALUE ...]

- ``classification`` (the default): a linear probe on the frozen all-MiniLM-L6-v2 encoder vs LoRA
  fine-tuning of the same encoder, on the built-in support-intent data.
- ``causal_lm``: SmolLM2-135M-Instruct as it is vs LoRA instruction-tuned on the built-in support
  replies (one shop's house style), scored on the held-out test split, with generations side by side.

Each trains, measures base and tuned on the test split, prints the table and writes
``OUT/summary.json`` and ``OUT/report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelab.config.load import from_dict
from tunelab.rundir import RunDir, predictions_path, read_jsonl, write_json

MEASURED = ("train_seconds", "train_samples_per_second", "trainable_params", "total_params", "trainable_percent",
            "peak_rss_mb", "artifact_size_mb")


@dataclass(frozen=True)
class Demo:
    """One built-in demo: its settings (equal to ``configs/<config_file>``, a test checks) and how it is told."""

    config: dict
    config_file: str
    out: str                     # default run folder
    base_label: str              # the base column's heading
    training: str                # the progress line before training
    measuring: str               # the progress line before evaluation
    shown_examples: int = 0      # generations printed side by side


DEMOS: dict[str, Demo] = {
    "classification": Demo(
        config={
            "task": "classification",
            "model": {"name": "builtin:minilm"},
            "data": {"train": "builtin:support_intents/train.jsonl", "test": "builtin:support_intents/test.jsonl",
                     "max_length": 64},
            "method": {"name": "lora"},
            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"},
            "train": {"epochs": 4, "batch_size": 16, "learning_rate": 2.0e-3, "seed": 0},
        },
        config_file="support-intents-lora.yaml", out="runs/demo", base_label="base (probe)",
        training="preparing the built-in support-intent data and LoRA-fine-tuning {model} ...",
        measuring="measuring base (a linear probe on the frozen encoder) and tuned on the held-out test split ..."),
    "causal_lm": Demo(
        config={
            "task": "causal_lm",
            "model": {"name": "builtin:smollm2-135m"},
            "data": {"train": "builtin:support_instructions/train.jsonl",
                     "test": "builtin:support_instructions/test.jsonl", "format": "instruction",
                     "max_length": 256, "validation_fraction": 0.05},
            "method": {"name": "lora"},
            "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"},
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-3, "seed": 0, "eval_strategy": "no"},
            "eval": {"max_new_tokens": 96, "batch_size": 8},
        },
        config_file="support-replies-smollm2.yaml", out="runs/demo-causal-lm", base_label="base",
        training="preparing the built-in support replies and LoRA-instruction-tuning {model} ...",
        measuring="measuring base (the model as released) and tuned on the held-out test split: perplexity "
                  "of the reference replies, then generated replies against them ...",
        shown_examples=3),
}
DEMO_CONFIG = DEMOS["classification"].config  # the README's main job


def demo_config(out: str | Path, overrides: list[str] = (), task: str = "classification"):
    tree = {**DEMOS[task].config, "output": {"dir": str(out), "overwrite": True}}
    return from_dict(tree, overrides, name=f"demo-{task}", source="demo config")


def run(out: str | Path | None = None, overrides: list[str] = (), echo: Callable[[str], None] = lambda _: None,
        task: str = "classification") -> dict:
    """Train, measure base and tuned on the test split, write ``summary.json``; return the summary."""
    from tunelab.evaluation import evaluate
    from tunelab.training import train

    demo = DEMOS[task]
    cfg = demo_config(out or demo.out, list(overrides), task)
    echo(f"[1/2] {demo.training.format(model=cfg.model.name)}")
    run_dir = train.run(cfg, echo=echo)
    echo(f"[2/2] {demo.measuring}")
    report = evaluate.run(run_dir, split="test", trust_remote_code=cfg.model.trust_remote_code)
    run = RunDir(run_dir)
    metrics = run.metrics()
    scores = report["metrics"]
    summary = {
        "task": task, "model": cfg.model.name, "method": cfg.method.name, "test_examples": report["examples"],
        "base_kind": report["base"], "tuned_kind": report["tuned"],
        "base": {k: round(v["base"], 4) for k, v in scores.items()},
        "tuned": {k: round(v["tuned"], 4) for k, v in scores.items()},
        "delta": {k: round(v["delta"], 4) for k, v in scores.items()},
        "delta_ci95": {k: [round(x, 4) for x in v["ci95"]] for k, v in scores.items()},
        **{k: metrics[k] for k in MEASURED},
        "run_dir": str(run_dir),
    }
    if demo.shown_examples:
        summary["examples"] = read_jsonl(predictions_path(report["written_to"]))[:demo.shown_examples]
    write_json(run.summary_path, summary)
    from tunelab.studies import report as html_report

    html_report.run([str(run_dir)], str(run.report_path()))
    return summary


def summary_table(summary: dict) -> str:
    """The printed result: the metric table, what was trained, and generations side by side."""
    label = DEMOS[summary["task"]].base_label
    lines = [f"{'metric':<12}{label:>14}{'tuned':>9}{'delta':>9}   95% CI of delta"]
    for name in summary["delta"]:
        low, high = summary["delta_ci95"][name]
        lines.append(f"{name:<12}{summary['base'][name]:>14.4f}{summary['tuned'][name]:>9.4f}"
                     f"{summary['delta'][name]:>+9.4f}   [{low:+.4f}, {high:+.4f}]")
    lines.append(f"test examples {summary['test_examples']}; trained {summary['trainable_params']:,} of "
                 f"{summary['total_params']:,} parameters ({summary['trainable_percent']:.2f}%) in "
                 f"{summary['train_seconds']:.0f} s; peak RSS {summary['peak_rss_mb']:.0f} MiB; "
                 f"adapter {summary['artifact_size_mb']:.2f} MiB")
    for number, example in enumerate(summary.get("examples", []), 1):
        lines.append(f"\nexample {number}")
        for key, heading in (("input", "request"), ("reference", "reference"), ("base_output", "base"),
                             ("tuned_output", "tuned")):
            lines.append(f"  {heading + ':':<11}{_hanging(example[key], 13)}")
    return "\n".join(lines)


def _hanging(text: str, indent: int) -> str:
    """Multi-line text with its later lines indented under the first (blank lines kept blank)."""
    return "\n".join(line if i == 0 or not line.strip() else " " * indent + line
                     for i, line in enumerate(text.strip().splitlines()))
