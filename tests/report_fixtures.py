"""Run, bake-off and sweep folders written by hand, shaped like the files tunelab writes (no training)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def metric_row(base: float, tuned: float, ci95: list[float], lower_is_better: bool | None = False) -> dict:
    row = {"base": base, "tuned": tuned, "delta": tuned - base, "ci95": ci95,
           "tuned_ci95": [tuned - 0.05, tuned + 0.05]}
    if lower_is_better is not None:
        row["lower_is_better"] = lower_is_better
    return row


def write_run(folder: Path, labels: list[str] | None = None, metrics: dict | None = None, split: str = "test",
              examples="4", predictions: list[dict] | None = None, quantization: dict | None = None,
              steps: list[dict] | None = None) -> Path:
    """A finished, evaluated classification run folder; ``steps``: its training log (default: two steps)."""
    labels = labels or ["alpha", "beta", "gamma"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("task: classification\n", encoding="utf-8")
    _json(folder / "metrics.json", {"method": "lora", "trainable_params": 12345, "trainable_percent": 1.5,
                                    "train_seconds": 3.2, "train_samples_per_second": 100.0, "peak_rss_mb": 900.0,
                                    "artifact_size_mb": 0.5, "final_train_loss": 0.4,
                                    "eval": {"loss": 0.5, "accuracy": 0.75}})
    n = len(labels)
    matrix = [[(3 if i == j else 1) for j in range(n)] for i in range(n)]
    _json(folder / "eval.json", {
        "run": str(folder), "task": "classification", "split": split, "examples": examples,
        "base": "linear probe on the frozen base encoder", "tuned": "lora fine-tuned",
        "metrics": metrics or {"accuracy": metric_row(0.5, 0.75, [0.1, 0.4]),
                               "macro_f1": metric_row(0.4, 0.7, [0.1, 0.5])},
        "confusion_matrix": {"labels": labels, "base": matrix, "tuned": matrix}})
    steps = steps or [{"step": 2, "epoch": 0.5, "loss": 1.1}, {"step": 4, "epoch": 1.0, "loss": 0.9},
                      {"step": 4, "epoch": 1.0, "eval_loss": 0.8, "eval_accuracy": 0.5}]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps), encoding="utf-8")
    predictions = predictions or [{"input": f"text {i}", "reference": labels[i % n], "base_output": labels[0],
                                   "tuned_output": labels[i % n]} for i in range(4)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions), encoding="utf-8")
    if quantization:
        _json(folder / "quantization.json", quantization)
    return folder


def quantization_report(variant: str = "int8", machine: str = "a CPU") -> dict:
    row = {"variant": variant, "disk_mb": 1.0, "weights_mb": 2.0, "block_weights_mb": 1.0, "peak_rss_mb": 500.0,
           "latency_ms": {"1": 3.0, "8": 9.0}, "throughput": 100.0, "throughput_unit": "examples/s",
           "metric": "accuracy", "metric_value": 0.75, "metric_change": 0.0, "agreement": 1.0,
           "output_distance": 0.0, "output_distance_unit": "mean total-variation distance of class probabilities"}
    return {"run": "runs/x", "task": "classification", "split": "test", "reference": "model", "machine": machine,
            "threads": 2, "timing": {"warmup": 1, "repeats": 3, "statistic": "median"},
            "rows": [dict(row, variant="model"), row, {"variant": variant + "-broken", "error": variant}]}


def write_bakeoff(folder: Path, rows: list[dict] | None = None, split: str = "test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _json(folder / "bakeoff.json", {"config": "c.yaml", "overrides": [], "machine": "a CPU", "task": "classification",
                                    "split": split, "seed": 0, "rows": rows or [bakeoff_row("lora")]})
    return folder


def bakeoff_row(method: str, tuned: float = 0.8, base: float = 0.5, delta_ci95=(0.1, 0.5),
                metric: str = "accuracy") -> dict:
    return {"method": method, "learning_rate": 1e-3, "run_dir": f"x/{method}", "trainable_params": 1000,
            "trainable_percent": 1.0, "peak_rss_mb": 800.0, "train_seconds": 5.0, "train_samples_per_second": 50.0,
            "artifact_size_mb": 0.3, "eval_loss": 0.5, "metric": metric, "tuned": tuned,
            "tuned_ci95": [tuned - 0.1, tuned + 0.1], "base": base, "delta": tuned - base,
            "delta_ci95": list(delta_ci95)}


def write_sweep(folder: Path, key: str = "lora.r", value="4", recommendation: str = "best: lora.r=4") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _json(folder / "sweep.json", {
        "config": "c.yaml", "metric": "validation accuracy", "higher_is_better": True, "tolerance": 0.01,
        "grid": {key: [value, 8]},
        "results": [{"setting": {key: value}, "run_dir": "p1", "validation": 0.8, "trainable_params": 100,
                     "train_seconds": 1.0},
                    {"setting": {key: 8}, "run_dir": "p2", "validation": 0.7, "trainable_params": 200,
                     "train_seconds": 2.0}],
        "recommendation": {"text": recommendation}})
    return folder


def _json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


class Collector(HTMLParser):
    """The tags, the external references and the text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags, self.external, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data") and value and "//" in value:
                self.external.append((tag, name, value))
            if name == "style" and value and "url(" in value:
                self.external.append((tag, name, value))
        if tag in ("script", "link", "iframe", "img"):
            self.external.append((tag, "tag", ""))

    def handle_data(self, data):
        self.text.append(data)
