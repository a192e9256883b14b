"""The README's main job: base vs tuned on the built-in data."""

from pathlib import Path

import pytest
import yaml

from tunelab.demo import DEMO_CONFIG, demo_config

ROOT = Path(__file__).resolve().parents[1]


def test_demo_settings_match_the_shipped_config(tmp_path):
    shipped = yaml.safe_load((ROOT / "configs" / "support-intents-lora.yaml").read_text())
    shipped.pop("output")
    assert shipped == DEMO_CONFIG
    cfg = demo_config(tmp_path / "demo", ["train.epochs=1"])
    assert cfg.train.epochs == 1 and cfg.output.dir == str(tmp_path / "demo")


@pytest.mark.slow
def test_demo_beats_the_probe(tmp_path, run_cli):
    # How long it takes is measured by benchmarks/demo.py, not asserted here.
    code, out, err = run_cli("demo", "--out", tmp_path / "demo")
    assert code == 0, err
    summary = yaml.safe_load((tmp_path / "demo" / "summary.json").read_text())
    assert summary["tuned"]["accuracy"] > summary["base"]["accuracy"]
    assert summary["test_examples"] == 200 and summary["trainable_params"] < summary["total_params"] / 20
    assert "base (probe)" in out
