"""Bake-off and sweep on tiny models: every column, a recommendation with evidence."""

import json

import pytest

from conftest import train_config
from tunelab.studies.sweep import parse_grid, points, recommend


def test_grid_parsing_and_sampling():
    grid = parse_grid(["lora.r=2,4,8", "lora.lora_dropout=0,0.1", "lora.target_modules=[query, value]"])
    assert grid == {"lora.r": [2, 4, 8], "lora.lora_dropout": [0, 0.1], "lora.target_modules": [["query", "value"]]}
    assert len(points(grid, None, 0)) == 6
    assert points(grid, 3, 0) == points(grid, 3, 0) and len(points(grid, 3, 0)) == 3


def test_recommendation_prefers_the_cheapest_point_within_tolerance():
    report = {"higher_is_better": True, "tolerance": 0.01, "metric": "validation accuracy",
              "grid": {"lora.r": [4, 8, 16]},
              "results": [{"setting": {"lora.r": 4}, "validation": 0.90, "trainable_params": 100, "train_seconds": 1},
                          {"setting": {"lora.r": 8}, "validation": 0.945, "trainable_params": 200, "train_seconds": 1},
                          {"setting": {"lora.r": 16}, "validation": 0.95, "trainable_params": 400, "train_seconds": 1}]}
    rec = recommend(report)
    assert rec["best"] == {"lora.r": 16} and rec["cheapest_within_tolerance"] == {"lora.r": 8}
    assert rec["per_axis_mean"]["lora.r"]["4"] == pytest.approx(0.90)


@pytest.mark.slow
def test_bakeoff_produces_every_column(tmp_path, tiny_bert, run_cli):
    config = train_config(tmp_path, tiny_bert, train={"max_steps": 4}, eval={"bootstrap_samples": 100})
    code, out, err = run_cli("bakeoff", config, "--methods", "full,lora,qlora", "--out", tmp_path / "bake")
    assert code == 0, err
    report = json.loads((tmp_path / "bake" / "bakeoff.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["full", "lora", "qlora"]
    for row in report["rows"]:
        assert "error" not in row, row
        for key in ("trainable_params", "trainable_percent", "peak_rss_mb", "train_seconds",
                    "train_samples_per_second", "artifact_size_mb", "eval_loss", "tuned", "tuned_ci95"):
            assert row[key] is not None, key
    full, lora = report["rows"][0], report["rows"][1]
    assert full["learning_rate"] == 5e-5 and lora["learning_rate"] == 3e-2  # full-weight methods train gently
    assert lora["trainable_params"] < full["trainable_params"] and lora["artifact_size_mb"] < full["artifact_size_mb"]
    markdown = (tmp_path / "bake" / "bakeoff.md").read_text()
    assert "| method |" in markdown and "qlora" in markdown
    code, _, err = run_cli("report", tmp_path / "bake", "--out", tmp_path / "bake.html")
    assert code == 0, err
    html = (tmp_path / "bake.html").read_text()
    assert "peak RSS (MiB) by method" in html and f"{full['trainable_params']:,}" in html


@pytest.mark.slow
def test_sweep_recommends_with_evidence(tmp_path, tiny_bert, run_cli):
    config = train_config(tmp_path, tiny_bert, train={"max_steps": 4})
    code, out, err = run_cli("sweep", config, "lora.r=2,8", "lora.lora_dropout=0,0.1", "--out", tmp_path / "sw")
    assert code == 0, err
    report = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert len(report["results"]) == 4 and all(r["validation"] is not None for r in report["results"])
    assert set(report["recommendation"]["per_axis_mean"]) == {"lora.r", "lora.lora_dropout"}
    assert "recommendation:" in out and "cheapest within" in out


def test_bad_methods_and_axes_are_user_errors(tmp_path, tiny_bert, run_cli):
    config = train_config(tmp_path, tiny_bert)
    code, _, err = run_cli("bakeoff", config, "--methods", "lora,magic")
    assert code == 2 and "unknown magic" in err
    code, _, err = run_cli("sweep", config, "lora.r")
    assert code == 2 and "sweep axis looks like" in err
    code, _, err = run_cli("sweep", config, "lora.rank=2,4")
    assert code == 2 and "lora.rank: unknown key; did you mean 'r'?" in err
