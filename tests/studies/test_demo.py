"""The README's main job: base vs tuned on the built-in data."""

from pathlib import Path

import pytest
import yaml

from tunelab.studies.demo import DEMOS, demo_config, summary_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("task", list(DEMOS))
def test_demo_settings_match_the_shipped_config(tmp_path, task):
    shipped = yaml.safe_load((ROOT / "configs" / DEMOS[task].config_file).read_text())
    shipped.pop("output")
    assert shipped == DEMOS[task].config
    cfg = demo_config(tmp_path / "demo", ["train.epochs=1"], task)
    assert cfg.train.epochs == 1 and cfg.output.dir == str(tmp_path / "demo") and cfg.task == task


@pytest.mark.slow
def test_demo_beats_the_probe(tmp_path, run_cli):
    # How long it takes is measured by benchmarks/demo.py, not asserted here.
    code, out, err = run_cli("demo", "--out", tmp_path / "demo")
    assert code == 0, err
    summary = yaml.safe_load((tmp_path / "demo" / "summary.json").read_text())
    assert summary["tuned"]["accuracy"] > summary["base"]["accuracy"]
    assert summary["test_examples"] == 200 and summary["trainable_params"] < summary["total_params"] / 20
    assert "base (probe)" in out


@pytest.mark.slow
def test_causal_demo_writes_the_summary_and_shows_generations(tmp_path, run_cli):
    # A short version (2 steps, 6 test requests): the full demo's time and scores are measured by
    # benchmarks/demo.py --task causal_lm.
    code, out, err = run_cli("demo", "--task", "causal_lm", "--out", tmp_path / "demo", "train.max_steps=2",
                             "eval.max_examples=6", "eval.max_new_tokens=24")
    assert code == 0, err
    summary = yaml.safe_load((tmp_path / "demo" / "summary.json").read_text())
    assert summary["task"] == "causal_lm" and summary["model"] == "builtin:smollm2-135m"
    for side in ("base", "tuned"):
        assert {"rougeL", "perplexity", "bleu"} <= set(summary[side])
    assert summary["test_examples"] == 6 and len(summary["examples"]) == 3
    assert all(set(e) == {"input", "reference", "base_output", "tuned_output"} for e in summary["examples"])
    assert "example 3" in out and "tuned:" in out and "perplexity" in out


def test_printed_generations_keep_their_later_lines_under_the_first():
    scores = {"rougeL": 0.5}
    summary = {"task": "causal_lm", "delta": scores, "delta_ci95": {"rougeL": [0.1, 0.2]}, "base": scores,
               "tuned": scores, "test_examples": 1, "trainable_params": 1, "total_params": 10,
               "trainable_percent": 10.0, "train_seconds": 1, "peak_rss_mb": 1, "artifact_size_mb": 1,
               "examples": [{"input": "Reply as Sam.\n\nWhere is my parcel?", "reference": "r",
                             "base_output": "b\n", "tuned_output": "t"}]}
    lines = summary_table(summary).splitlines()
    start = lines.index("  request:   Reply as Sam.")
    assert lines[start + 1:start + 4] == ["", " " * 13 + "Where is my parcel?", "  reference: r"]
    assert "  base:      b" in lines
