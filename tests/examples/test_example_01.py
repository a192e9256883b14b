"""Example 01 runs end to end as a user would run it: the chat path with --quick, the classification path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from example_support import EXAMPLES, header_line, run_script

pytestmark = pytest.mark.slow

SCRIPT = EXAMPLES / "example_01_basic_fine_tuning.py"
SIDE_BY_SIDE = ("message", "reference", "original", "fine-tuned")


def _after(output: str, heading: str) -> str:
    assert heading in output, f"no '{heading}' in:\n{output[-3000:]}"
    return output[output.index(heading):]


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def test_quick_run_fully_fine_tunes_the_tiny_chat_model_and_compares_it(tmp_path):
    out = run_script(SCRIPT, "--quick", "--samples", 2, "--out", tmp_path / "run")
    assert "full fine-tuning (every weight) of builtin:tiny-llama" in out
    assert "the numbers below mean nothing" in out
    table = _after(out, "== original vs fine-tuned")
    header_line(table, "metric", "base", "tuned", "delta", "95% CI of delta")
    for metric in ("perplexity", "rougeL", "bleu"):
        assert f"\n{metric} " in table, metric
    metrics = _metrics(tmp_path / "run")
    assert metrics["method"] == "full" and metrics["trainable_params"] == metrics["total_params"]
    assert metrics["steps"] == 4  # --quick's train.max_steps
    assert f"trained {metrics['trainable_params']:,} of {metrics['total_params']:,} parameters (all of them)" in out
    assert "peak RSS" in out
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    samples = _after(out, "== 2 test examples side by side")
    header_line(samples, *SIDE_BY_SIDE)
    # the built-in requests share their instruction, printed once above the table rather than in every row
    assert "every request starts with the instruction: 'Reply to this customer message as Sam" in samples
    assert "Hi, thanks for contacting" in samples  # a reference reply, wrapped into its column
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert {"input", "reference", "base_output", "tuned_output"} <= set(rows[0])


def test_quick_run_with_lora_trains_an_adapter_only(tmp_path):
    out = run_script(SCRIPT, "--quick", "--method", "lora", "--out", tmp_path / "run")
    assert "LoRA (r 16, alpha 32) of builtin:tiny-llama" in out
    metrics = _metrics(tmp_path / "run")
    assert metrics["method"] == "lora" and metrics["trainable_params"] < metrics["total_params"]
    assert "(all of them)" not in out and f"({metrics['trainable_percent']:.2f}%)" in out
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "run" / "model").exists()
    header_line(_after(out, "== original vs fine-tuned"), "metric", "base", "tuned", "delta")


def test_classification_path_on_your_own_tickets(tmp_path, tiny_bert, tickets):
    out = run_script(SCRIPT, "--task", "classification", "--quick", "--model", tiny_bert, "--data", tickets,
                     "--samples", 3, "--out", tmp_path / "run")
    table = _after(out, "== original vs fine-tuned")
    assert "base = " in table and "probe" in table  # the base is a linear probe on the frozen encoder
    header_line(table, "metric", "base", "tuned", "delta", "95% CI of delta")
    assert "\naccuracy " in table
    assert "random weights" not in out  # --quick keeps the model given with --model
    assert _metrics(tmp_path / "run")["method"] == "full"
    samples = _after(out, "== 3 test examples side by side")
    header_line(samples, *SIDE_BY_SIDE)
    assert "ticket number" in samples and "instruction" not in samples
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_a_missing_data_file_is_one_line_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(tmp_path / "missing.jsonl"),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "missing.jsonl" in done.stderr and "Traceback" not in done.stderr
