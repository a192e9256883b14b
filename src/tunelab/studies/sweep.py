"""Hyper-parameter sweep with a recommendation backed by the numbers.

    tunelab sweep configs/support-intents-lora.yaml lora.r=2,4,8,16 lora.lora_alpha=8,16,32 lora.lora_dropout=0,0.1

Runs the grid (or ``--samples N`` random points of it), scores each point on the validation
split, and recommends the best setting and the cheapest one within ``--tolerance`` of it.
Writes ``OUT/sweep.json`` and ``OUT/sweep.md``.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Callable

import yaml

from tunelab.config import apply_override, load_config
from tunelab.config.load import validate
from tunelab.errors import ConfigError
from tunelab.rundir import RunDir, study_path, write_json
from tunelab.tables import markdown_table, text_table


def parse_grid(axes: list[str]) -> dict[str, list]:
    """``key=v1,v2`` -> {key: [v1, v2]}; values are YAML, and a value in [brackets] is one list."""
    grid, problems = {}, []
    for axis in axes:
        key, sep, raw = axis.partition("=")
        if not sep or not raw:
            problems.append(f"{axis}: a sweep axis looks like section.key=v1,v2,v3, e.g. lora.r=4,8,16")
            continue
        pieces = [raw] if raw.strip().startswith("[") else raw.split(",")
        grid[key.strip()] = [yaml.safe_load(p) if p.strip() else None for p in pieces]
    if problems:
        raise ConfigError(problems)
    return grid


def points(grid: dict[str, list], samples: int | None, seed: int) -> list[dict]:
    """Every combination, or ``samples`` of them drawn without replacement (seeded)."""
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if samples and samples < len(combos):
        combos = random.Random(seed).sample(combos, samples)
    return combos


def run(config: str, axes: list[str], samples: int | None = None, tolerance: float = 0.01, out: str | None = None,
        echo: Callable[[str], None] = lambda _: None) -> dict:
    """Train every point; return the sweep report with its recommendation."""
    from tunelab.training import train

    base = load_config(config)
    grid = parse_grid(axes)
    chosen = points(grid, samples, base.train.seed)
    root = Path(out or f"{base.output.dir}-sweep")
    for point in chosen:  # validate every point before training any
        _config_for(config, point, root / "check")
    metric = base.train.metric_for_best_model or ("accuracy" if base.task == "classification" else "loss")
    results = []
    for i, point in enumerate(chosen, start=1):
        label = " ".join(f"{k}={v}" for k, v in point.items())
        echo(f"[{i}/{len(chosen)}] {label}")
        run_dir = train.run(_config_for(config, point, root / f"point-{i:03d}"))
        m = RunDir(run_dir).metrics()
        results.append({"setting": point, "run_dir": str(run_dir), "validation": m["eval"].get(metric),
                        "trainable_params": m["trainable_params"], "train_seconds": m["train_seconds"]})
    report = {"config": str(config), "metric": f"validation {metric}", "higher_is_better": not metric.endswith("loss"),
              "tolerance": tolerance, "grid": grid, "results": results}
    report["recommendation"] = recommend(report)
    root.mkdir(parents=True, exist_ok=True)
    write_json(study_path(root, "sweep"), report)
    study_path(root, "sweep", markdown=True).write_text(markdown_report(report), encoding="utf-8")
    report["dir"] = str(root)
    return report


def _config_for(config: str, point: dict, run_dir: Path):
    tree = yaml.safe_load(Path(config).read_text(encoding="utf-8-sig"))
    for key, value in point.items():
        apply_override(tree, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    tree.setdefault("output", {}).update(dir=str(run_dir), name=run_dir.name, overwrite=True)
    return validate(tree, default_name=run_dir.name, source=str(config))


def recommend(report: dict) -> dict:
    """The best point, the cheapest point within tolerance of it, and per-axis evidence."""
    scored = [r for r in report["results"] if r["validation"] is not None]
    if not scored:
        return {"text": "no point produced a validation score (is train.eval_strategy 'no'?)"}
    sign = 1 if report["higher_is_better"] else -1
    best = max(scored, key=lambda r: sign * r["validation"])
    close = [r for r in scored if sign * (best["validation"] - r["validation"]) <= report["tolerance"]]
    cheapest = min(close, key=lambda r: (r["trainable_params"], r["train_seconds"]))
    evidence = {}
    for key, values in report["grid"].items():
        evidence[key] = {str(v): _mean([r["validation"] for r in scored if r["setting"][key] == v]) for v in values}

    def describe(r: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in r["setting"].items())

    text = (f"best: {describe(best)} ({report['metric']} {best['validation']:.4g}); cheapest within "
            f"{report['tolerance']} of it: {describe(cheapest)} ({cheapest['validation']:.4g}, "
            f"{cheapest['trainable_params']:,} trainable parameters vs {best['trainable_params']:,})")
    return {"best": best["setting"], "cheapest_within_tolerance": cheapest["setting"], "per_axis_mean": evidence,
            "text": text}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def table_rows(report: dict) -> tuple[list[str], list[list]]:
    keys = list(report["grid"])
    headers = keys + [report["metric"], "trainable params", "train s"]
    rows = [[r["setting"][k] for k in keys] + [r["validation"], r["trainable_params"], r["train_seconds"]]
            for r in report["results"]]
    return headers, rows


def summary_text(report: dict) -> str:
    headers, rows = table_rows(report)
    evidence = "\n".join(f"  mean {report['metric']} by {key}: " + ", ".join(f"{v} -> {s:.4g}" for v, s in by.items()
                                                                           if s is not None)
                         for key, by in report["recommendation"].get("per_axis_mean", {}).items())
    return f"{text_table(headers, rows)}\n{evidence}\nrecommendation: {report['recommendation']['text']}"


def markdown_report(report: dict) -> str:
    headers, rows = table_rows(report)
    return (f"# Sweep: {report['config']}\n\n{markdown_table(headers, rows)}\n\n"
            f"**Recommendation** (rule: best {report['metric']}, then the fewest trainable parameters within "
            f"{report['tolerance']} of it): {report['recommendation']['text']}\n")
