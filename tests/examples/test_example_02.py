"""Example 02 runs end to end as a user would run it: full vs LoRA on the chat path with --quick, the
classification path, and a one-line error for a method that does not exist (slow); its 7B QLoRA config is
valid (fast)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from example_support import EXAMPLES, header_line, run_script

SCRIPT = EXAMPLES / "example_02_lora_peft.py"
COLUMNS = ("method", "trainable params", "trainable %", "peak RSS MiB", "train s", "samples/s", "checkpoint")


def _row(output: str, name: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(name + " ")]
    assert lines, f"no '{name}' row in:\n{output[-3000:]}"
    return lines[0]


def _bakeoff(folder) -> dict:
    return {r["method"]: r for r in json.loads((folder / "bakeoff.json").read_text(encoding="utf-8"))["rows"]}


@pytest.mark.slow
def test_quick_run_compares_full_and_lora_on_the_tiny_chat_model(tmp_path):
    out = run_script(SCRIPT, "--quick", "--out", tmp_path / "cmp")
    assert "the numbers below mean nothing" in out
    assert "training full, lora of builtin:tiny-llama" in out
    header_line(out, *COLUMNS, "perplexity [95% CI]", "ROUGE-L [95% CI]")
    _row(out, "before (no fine-tuning)")
    assert "whole model" in _row(out, "full") and "adapter" in _row(out, "lora")
    reading = out[out.index("lora vs full:"):]
    for what in ("trainable params", "peak RSS", "train time", "checkpoint", "perplexity", "ROUGE-L"):
        assert f"\n  {what} " in reading, what
    assert "95% CIs" in reading

    rows = _bakeoff(tmp_path / "cmp")
    assert rows["full"]["learning_rate"] == 5e-5 and rows["lora"]["learning_rate"] == 1e-3
    assert rows["lora"]["trainable_params"] < rows["full"]["trainable_params"]
    assert {"perplexity", "rougeL"} <= set(rows["lora"]["scores"])
    assert (tmp_path / "cmp" / "full" / "model" / "model.safetensors").exists()
    assert not (tmp_path / "cmp" / "full" / "adapter").exists()
    adapter = json.loads((tmp_path / "cmp" / "lora" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32  # the reference config's LoRA
    assert any(name.endswith("mlp.down_proj") for name in adapter["target_modules"])  # all-linear


@pytest.mark.slow
def test_classification_path_takes_the_lora_options(tmp_path, tiny_bert, tickets):
    out = run_script(SCRIPT, "--task", "classification", "--model", tiny_bert, "--data", tickets, "--epochs", 1,
                     "--r", 4, "--alpha", 8, "--dropout", 0.0, "--target-modules", "query,value",
                     "--out", tmp_path / "cmp")
    header_line(out, *COLUMNS, "accuracy [95% CI]", "macro-F1 [95% CI]")
    assert "lora vs full:" in out and "\n  accuracy " in out
    adapter = json.loads((tmp_path / "cmp" / "lora" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["lora_dropout"] == 0.0
    assert set(adapter["target_modules"]) == {"query", "value"}
    assert _bakeoff(tmp_path / "cmp")["full"]["metric"] == "accuracy"


@pytest.mark.slow
def test_an_unknown_method_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--methods", "full,lorax",
                           "--out", str(tmp_path / "cmp")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "unknown lorax" in done.stderr and "Traceback" not in done.stderr


def test_example_02_ships_a_valid_7b_qlora_config(run_cli):
    config = EXAMPLES / "configs" / "mistral-7b-qlora.yaml"
    code, out, err = run_cli("config", "show", config)
    assert code == 0, err
    assert "name: qlora" in out and "Mistral-7B" in out
    assert "NEEDS A GPU" in config.read_text()
