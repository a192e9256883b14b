"""The built-in demo: was fine-tuning worth it? Measured, offline, in a few minutes on a CPU.

    tunelab demo [--out runs/demo] [KEY=VALUE ...]

1. base: a linear probe on the frozen all-MiniLM-L6-v2 encoder, trained on the train split;
2. tuned: LoRA fine-tuning of the same encoder (plus head) on the same split;
3. both scored on the held-out test split of the built-in support-intent data.
Writes ``OUT/summary.json`` and prints the before/after table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tunelab.config.load import apply_override, validate
from tunelab.metrics import CLASSIFICATION_METRICS
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
    tree = json.loads(json.dumps(DEMO_CONFIG))
    for override in overrides:
        apply_override(tree, override)
    tree["output"] = {**tree.get("output", {}), "dir": str(out), "overwrite": True}
    return validate(tree, default_name="demo", source="demo config")


def run(out: str | Path = "runs/demo", overrides: list[str] = (), echo: Callable[[str], None] = lambda _: None) -> dict:
    """Train, measure base and tuned on the test split, write ``summary.json``; return the summary."""
    from tunelab import train
    from tunelab.inference import class_probabilities, load_run
    from tunelab.models import resolve_model
    from tunelab.probe import probe_scores

    cfg = demo_config(out, list(overrides))
    echo(f"[1/3] preparing the built-in support-intent data and LoRA-fine-tuning {cfg.model.name} ...")
    run_dir = train.run(cfg, echo=echo)
    label2id = read_json(run_dir / "labels.json")["label2id"]
    train_rows, test_rows = _rows(run_dir, "train"), _rows(run_dir, "test")
    echo("[2/3] base: fitting a linear probe on the frozen encoder (same train split) ...")
    started = time.perf_counter()
    base = probe_scores(resolve_model(cfg.model.name), [r["text"] for r in train_rows],
                        [label2id[r["label"]] for r in train_rows], [r["text"] for r in test_rows],
                        [label2id[r["label"]] for r in test_rows], len(label2id), cfg.data.max_length)
    probe_seconds = time.perf_counter() - started

    echo("[3/3] tuned: scoring the fine-tuned model on the held-out test split ...")
    loaded = load_run(run_dir)
    probs = class_probabilities(loaded.model, loaded.tokenizer, [r["text"] for r in test_rows],
                                cfg.data.max_length, cfg.eval.batch_size)
    predictions = probs.argmax(-1).numpy()
    references = np.asarray([label2id[r["label"]] for r in test_rows])
    tuned = {name: fn(predictions, references) for name, fn in CLASSIFICATION_METRICS.items()}

    metrics = read_json(run_dir / "metrics.json")
    summary = {
        "model": cfg.model.name, "method": cfg.method.name, "test_examples": len(test_rows),
        "base": {"kind": "linear probe on the frozen encoder", **_rounded(base), "seconds": round(probe_seconds, 2)},
        "tuned": {"kind": f"{cfg.method.name} fine-tuning", **_rounded(tuned)},
        "delta": {name: round(tuned[name] - base[name], 4) for name in tuned},
        **{k: metrics[k] for k in ("train_seconds", "train_samples_per_second", "trainable_params", "total_params",
                                   "trainable_percent", "peak_rss_mb", "artifact_size_mb")},
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def summary_table(summary: dict) -> str:
    lines = [f"{'metric':<10}{'base (probe)':>14}{'tuned':>9}{'delta':>9}"]
    for name in summary["delta"]:
        lines.append(f"{name:<10}{summary['base'][name]:>14.4f}{summary['tuned'][name]:>9.4f}"
                     f"{summary['delta'][name]:>+9.4f}")
    lines.append(f"test examples {summary['test_examples']}; trained {summary['trainable_params']:,} of "
                 f"{summary['total_params']:,} parameters ({summary['trainable_percent']:.2f}%) in "
                 f"{summary['train_seconds']:.0f} s; peak RSS {summary['peak_rss_mb']:.0f} MiB; "
                 f"adapter {summary['artifact_size_mb']:.2f} MiB")
    return "\n".join(lines)


def _rows(run_dir: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def _rounded(scores: dict) -> dict:
    return {k: round(v, 4) for k, v in scores.items()}
