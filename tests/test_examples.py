"""The course deliverables run end to end on tiny settings: examples 01-04, the mini-project, the experiments page."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PROJECT = ROOT / "mini-project" / "mini_specialized_fine_tuning_project"

pytestmark = pytest.mark.slow


def run_script(script: Path, *args, cwd: Path | None = None, timeout: int = 600) -> str:
    """Run a script as a user would; fail with its output when it exits non-zero."""
    done = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, f"{script.name} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def header_line(output: str, *columns: str) -> str:
    """The printed line holding every one of ``columns`` (a table's header)."""
    lines = [line for line in output.splitlines() if all(c in line for c in columns)]
    assert lines, f"no table with columns {columns} in:\n{output[-3000:]}"
    return lines[0]


@pytest.fixture
def tickets(tmp_path) -> Path:
    rows = [{"text": f"{word} ticket number {i}", "label": word} for word in ("billing", "shipping", "login")
            for i in range(12)]
    return write_jsonl(tmp_path / "tickets.jsonl", rows)


def test_example_01_full_fine_tuning_prints_original_vs_fine_tuned(tmp_path, tiny_bert, tickets):
    out = run_script(EXAMPLES / "example_01_basic_fine_tuning.py", "--model", tiny_bert, "--data", tickets,
                     "--epochs", 1, "--samples", 3, "--out", tmp_path / "run")
    header_line(out, "metric", "base", "tuned", "delta", "95% CI of delta")
    header_line(out, "input", "reference", "original", "fine-tuned")
    assert "trained" in out and "(all of them)" in out  # full fine-tuning: every parameter
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_example_01_causal_path_defaults_to_a_tiny_gpt2(tmp_path):
    rows = [{"instruction": f"Say {w}.", "input": str(i), "output": f"{w} {w}."} for w in ("red", "blue") for i in range(10)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = run_script(EXAMPLES / "example_01_basic_fine_tuning.py", "--task", "causal", "--data", data, "--epochs", 1,
                     "--out", tmp_path / "run", "eval.max_new_tokens=4")
    assert "builtin:tiny-gpt2" in out
    table = out[out.index("== original vs fine-tuned"):]
    assert "perplexity" in table and "rougeL" in table
    header_line(out, "input", "reference", "original", "fine-tuned")


def test_example_02_compares_full_and_lora(tmp_path, tiny_bert, tickets):
    out = run_script(EXAMPLES / "example_02_lora_peft.py", "--model", tiny_bert, "--data", tickets, "--epochs", 1,
                     "--r", 4, "--alpha", 8, "--dropout", 0.0, "--target-modules", "query,value",
                     "--out", tmp_path / "cmp")
    header_line(out, "method", "trainable params", "peak RSS MiB", "train s", "checkpoint MiB", "test score")
    assert "lora vs full:" in out
    adapter_config = (tmp_path / "cmp" / "lora" / "adapter" / "adapter_config.json").read_text()
    assert '"r": 4' in adapter_config and "query" in adapter_config and "value" in adapter_config


def test_example_02_ships_a_valid_7b_qlora_config(run_cli):
    config = EXAMPLES / "configs" / "mistral-7b-qlora.yaml"
    code, out, err = run_cli("config", "show", config)
    assert code == 0, err
    assert "name: qlora" in out and "Mistral-7B" in out
    assert "NEEDS A GPU" in config.read_text()


def test_example_03_quantization_table_and_tradeoffs(tmp_path, tiny_bert, tickets):
    out = run_script(EXAMPLES / "example_03_quantization.py", "--model", tiny_bert, "--data", tickets, "--epochs", 1,
                     "--methods", "nf4,dynamic-int8", "--out", tmp_path / "run", "quantize.timing_repeats=2")
    header_line(out, "variant", "disk MiB", "blocks x fp32", "bs1 ms", "bs8 ms", "agreement")
    table = out[out.index("== fp32 vs quantized"):out.index("== trade-offs")]
    assert all(name in table for name in ("merged", "adapter", "nf4", "dynamic-int8"))
    assert "fastest at batch 8:" in out and "smallest:" in out


def test_example_04_prepares_three_formats_and_reports_the_broken_file(tmp_path, tiny_bert, tiny_llama):
    out = run_script(EXAMPLES / "example_04_dataset_preparation.py", "--model", tiny_bert, "--causal-model",
                     tiny_llama, "--epochs", 1, "--out", tmp_path / "ex4", "data.max_rows=60", "eval.max_new_tokens=4")
    assert out.count("tunelab prepare:") == 3
    assert "(chat format)" in out and "(instruction format)" in out and "(classification format)" in out
    broken = out[out.index("a deliberately broken file"):]
    for problem in ("line 2: invalid JSON", "line 3: field 'queue': missing", "line 4: field 'message': empty",
                    "line 5: field 'message'"):
        assert problem in broken
    header_line(out, "dataset", "metric", "before", "after", "delta")
    for metric in ("accuracy", "perplexity", "bleu", "rougeL"):
        assert metric in out[out.index("== before vs after"):]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mini_project_runs_in_order_and_writes_its_results(tmp_path, tiny_bert):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("models", "__pycache__"))
    tiny = [f"model.name={tiny_bert}", "data.max_rows=60"]
    header_line(run_script(project / "data_prep.py", *tiny), "split", "rows", "examples")
    assert "trained" in run_script(project / "train.py", *tiny, "train.epochs=1")
    header_line(run_script(project / "evaluate.py"), "metric", "base", "tuned", "95% CI of delta")
    header_line(run_script(project / "quantize.py", "--methods", "dynamic-int8"), "variant", "bs8 ms", "agreement")
    routed = run_script(project / "inference.py", "my card was charged twice")
    header_line(routed, "ticket", "queue", "confidence")
    assert "dynamic-int8" in routed
    before = (project / "README.md").read_text()
    run_script(project / "results.py")
    after = (project / "README.md").read_text()
    assert after != before and after.split("<!-- results -->")[0] == before.split("<!-- results -->")[0]
    for part in ("**Base vs fine-tuned**", "**Deployment**", "**Errors:**", "**Confidence:**", "**What would help next**"):
        assert part in after

    port = _free_port()
    app = subprocess.Popen([sys.executable, str(project / "app.py"), "--port", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2) as response:
                    assert b"ticket-router" in response.read()
                    break
            except OSError:
                assert app.poll() is None, app.stderr.read().decode()
                assert time.time() < deadline, "the app did not start"
                time.sleep(0.5)
    finally:
        app.terminate()
        app.wait(timeout=20)


def test_mini_project_scripts_say_which_step_is_missing(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("models", "__pycache__"))
    done = subprocess.run([sys.executable, str(project / "evaluate.py")], capture_output=True, text=True)
    assert done.returncode != 0 and "run `python train.py` first" in done.stderr


def test_experiments_page_generator_on_a_tiny_configuration(tmp_path, tiny_bert):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.md").write_text("before\n<!-- measured:lora-vs-full -->\nold\n<!-- /measured:lora-vs-full -->\nafter\n")
    page = tmp_path / "experiments.md"
    run_script(ROOT / "scripts" / "experiments.py", "--quick", f"model.name={tiny_bert}", "data.max_rows=40",
               "train.epochs=1", "quantize.timing_repeats=2", "--work", tmp_path / "work", "--out", page,
               "--docs", docs)
    text = page.read_text()
    for heading in ("## 1. Approach comparison", "## 2. Fine-tuning methods", "## 3. LoRA configuration",
                    "## 4. Quantization", "## 5. Best practices", "## 6. Production"):
        assert heading in text
    assert "| approach | accuracy |" in text and "| lora.r |" in text and "| variant | disk MiB |" in text
    assert "python scripts/experiments.py --quick" in text  # the command that made the numbers
    refreshed = (docs / "page.md").read_text()
    assert "old" not in refreshed and "| method | trainable % |" in refreshed and refreshed.endswith("after\n")
