"""Example 03 runs end to end as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from example_support import EXAMPLES, header_line, run_script

SCRIPT = EXAMPLES / "example_03_quantization.py"


def table_rows(out: str) -> dict[str, str]:
    """The comparison table's rows (up to the first blank line under its header), by variant name."""
    lines = out[out.index("== fp32 vs quantized"):].splitlines()[2:]
    rows = lines[:lines.index("")] if "" in lines else lines
    return {line.split()[0]: line for line in rows}


def run_refused(*args) -> subprocess.CompletedProcess:
    """Run the script expecting a clean refusal: exit 2, no traceback."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.slow
def test_example_03_quick_table_and_tradeoffs(tmp_path):
    run = tmp_path / "run"
    out = run_script(SCRIPT, "--quick", "--methods", "nf4,dynamic-int8", "--out", run, cwd=tmp_path)

    assert "numbers mean nothing" in out
    assert "step 1/3: lora fine-tuning of builtin:tiny-llama" in out
    header_line(out, "variant", "disk MiB", "blocks x fp32", "bs1 ms", "bs8 ms", "throughput", "metric", "change",
                "agreement")
    rows = table_rows(out)
    assert set(rows) == {"merged", "adapter", "nf4", "dynamic-int8"}, rows  # quick leaves the bf16 row out
    assert all("perplexity" in line and "failed" not in line for line in rows.values()), rows
    tradeoffs = out[out.index("== trade-offs"):]
    assert "fastest at batch 8:" in tradeoffs and "smallest:" in tradeoffs and "closest to fp32:" in tradeoffs
    assert "serve the fastest copy within the quality bar" in out and f"tunelab serve {run}" in out

    assert sorted(p.name for p in (run / "quantized").iterdir()) == ["dynamic-int8", "nf4"]
    assert (run / "merged").is_dir() and (run / "quantization.md").is_file()
    report = json.loads((run / "quantization.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["merged", "adapter", "nf4", "dynamic-int8"]
    assert report["timing"]["repeats"] == 2  # --quick's quantize.timing_repeats reached the measurement
    nf4 = next(r for r in report["rows"] if r["variant"] == "nf4")
    assert nf4["block_weights_ratio"] < 0.3  # the 4-bit copy's transformer blocks really shrank


@pytest.mark.slow
def test_example_03_default_leaves_gptq_out_with_a_reason_and_refuses_clearly(tmp_path):
    done = run_refused("--quick", "--run", tmp_path / "no-such-run")
    assert "gptq is opt-in" in done.stdout  # the default methods, and why gptq is not among them
    assert "not a tunelab run folder" in done.stderr

    done = run_refused("--quick", "--methods", "nf4,int3", "--out", tmp_path / "run")
    assert "unknown method 'int3'" in done.stderr
    assert "step 1/3" not in done.stdout and not (tmp_path / "run").exists()  # refused before training

    help_text = run_script(SCRIPT, "--help")
    assert all(option in help_text for option in ("--methods", "--train-method", "--run", "--max-examples", "--quick",
                                                  "--model", "--data", "--test"))


# chosen_methods in a fresh interpreter, with int8 and nf4 reported missing (as without bitsandbytes)
MISSING_BITSANDBYTES = """
import sys
sys.path.insert(0, sys.argv[1])
from tunelab.models import quantizers
quantizers.missing_extra = lambda name: "quant" if name in ("int8", "nf4") else None
import example_03_quantization as example
print("== defaults")
print(example.chosen_methods(example.parse_args([])))
print("== explicit")
print(example.chosen_methods(example.parse_args(["--methods", "nf4,dynamic-int8"])))
"""


def test_example_03_skips_methods_whose_library_is_missing_with_a_note():
    done = subprocess.run([sys.executable, "-c", MISSING_BITSANDBYTES, str(EXAMPLES)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    defaults, explicit = done.stdout.split("== explicit")
    assert "note: gptq is opt-in" in defaults
    assert "note: skipping int8: it needs pip install 'tunelab[quant]'" in defaults
    assert "note: skipping nf4: it needs pip install 'tunelab[quant]'" in defaults
    assert "note: skipping nf4" in explicit and "int8:" not in explicit
    assert defaults.rstrip().endswith("['dynamic-int8']") and explicit.rstrip().endswith("['dynamic-int8']")
