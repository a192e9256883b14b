"""Method bake-off: the same data, seed and budget through several methods, measured side by side.

    tunelab bakeoff configs/support-intents-lora.yaml --methods full,lora,dora,qlora

Each method trains in its own process, so its peak RSS is its own, then is evaluated on the
config's eval split. Writes ``OUT/bakeoff.json`` and ``OUT/bakeoff.md``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from tunelab.config import TunelabConfig, load_config, to_yaml
from tunelab.config.schema import METHOD_NAMES
from tunelab.errors import TunelabError
from tunelab.machine import cpu_description
from tunelab.rundir import RunDir, study_path, write_json
from tunelab.tables import markdown_table, text_table

# Updating every weight at an adapter's learning rate (1e-4 to 1e-3) destroys a pre-trained model;
# full fine-tuning is usually run at 2e-5 to 5e-5 (BERT, arXiv 1810.04805, section A.3).
FULL_WEIGHT_METHODS = {"full", "freeze"}
FULL_WEIGHT_LEARNING_RATE = 5e-5

ALSO_KEPT = ("accuracy", "macro_f1", "perplexity", "rougeL", "bleu")   # every row keeps these of its metrics
COLUMNS = ["method", "learning rate", "trainable params", "trainable %", "peak RSS MiB", "train s", "samples/s", "artifact MiB",
           "eval loss", "metric", "tuned", "95% CI", "delta vs base"]


def run(config: str, overrides: list[str], methods: list[str], out: str | None = None,
        echo: Callable[[str], None] = lambda _: None, same_learning_rate: bool = False) -> dict:
    """Train and evaluate every method; return the bake-off report."""
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods:
        raise TunelabError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(METHOD_NAMES)}")
    cfg = load_config(config, overrides)
    root = Path(out or f"{cfg.output.dir}-bakeoff")
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, method in enumerate(methods, start=1):
        echo(f"[{i}/{len(methods)}] {method}")
        rows.append(run_method(cfg, method, root, same_learning_rate))
    report = {"config": str(config), "overrides": overrides, "machine": cpu_description(),
              "task": cfg.task, "split": cfg.eval.split, "seed": cfg.train.seed, "rows": rows}
    write_json(study_path(root, "bakeoff"), report)
    study_path(root, "bakeoff", markdown=True).write_text(markdown_report(report), encoding="utf-8")
    report["dir"] = str(root)
    return report


def run_method(cfg: TunelabConfig, method: str, root: Path, same_learning_rate: bool = False) -> dict:
    """Train ``method`` in a child process, evaluate it here; a failure becomes a row that says why."""
    from tunelab.evaluation import evaluate

    variant = cfg.model_copy(deep=True)
    variant.method.name = method
    if method in FULL_WEIGHT_METHODS and not same_learning_rate:
        variant.train.learning_rate = min(cfg.train.learning_rate, FULL_WEIGHT_LEARNING_RATE)
    variant.output.dir, variant.output.name, variant.output.overwrite = str(root / method), method, True
    config_path = root / f"{method}.yaml"
    config_path.write_text(to_yaml(variant), encoding="utf-8")
    child = subprocess.run([sys.executable, "-m", "tunelab", "train", str(config_path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    if child.returncode != 0:
        reason = (child.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"method": method, "learning_rate": variant.train.learning_rate, "error": reason}
    metrics = RunDir(root / method).metrics()
    report = evaluate.run(root / method, trust_remote_code=variant.model.trust_remote_code)
    name = "accuracy" if cfg.task == "classification" else "perplexity"
    score = report["metrics"][name]
    return {"method": method, "learning_rate": variant.train.learning_rate, "run_dir": str(root / method),
            **{k: metrics[k] for k in ("trainable_params", "trainable_percent", "peak_rss_mb", "train_seconds",
                                       "train_samples_per_second", "artifact_size_mb")},
            "eval_loss": metrics["eval"].get("loss"), "metric": name, "tuned": score["tuned"],
            "tuned_ci95": score["tuned_ci95"], "base": score["base"], "delta": score["delta"],
            "delta_ci95": score["ci95"], "scores": {k: v for k, v in report["metrics"].items() if k in ALSO_KEPT}}


def table_cells(row: dict) -> list:
    if "error" in row:
        return [row["method"], row["learning_rate"]] + ["-"] * (len(COLUMNS) - 3) + [f"failed: {row['error']}"]
    low, high = row["tuned_ci95"]
    d_low, d_high = row["delta_ci95"]
    return [row["method"], row["learning_rate"], row["trainable_params"], row["trainable_percent"], row["peak_rss_mb"],
            row["train_seconds"], row["train_samples_per_second"], row["artifact_size_mb"], row["eval_loss"],
            row["metric"], row["tuned"], f"[{low:.4g}, {high:.4g}]", f"{row['delta']:+.4g} [{d_low:+.4g}, {d_high:+.4g}]"]


def summary_text(report: dict) -> str:
    return text_table(COLUMNS, [table_cells(r) for r in report["rows"]])


def markdown_report(report: dict) -> str:
    return (f"# Bake-off: {report['config']}\n\n"
            f"Task {report['task']}; every method trained on the same data, seed ({report['seed']}) and budget, "
            f"each in its own process, on {report['machine']}; scored on the {report['split']} split. "
            f"95% CIs are bootstrap intervals over examples; delta is tuned minus base. Full-weight methods "
            f"(full, freeze) train at most at {FULL_WEIGHT_LEARNING_RATE:g}, the usual rate for updating every "
            f"weight, unless --same-learning-rate is given.\n\n"
            + markdown_table(COLUMNS, [table_cells(r) for r in report["rows"]]) + "\n")
