"""The mini-project's scripts run in order, end to end, on tiny settings."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from example_support import header_line, run_script

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "mini-project" / "mini_specialized_fine_tuning_project"
REFERENCE_CONFIG = Path("configs") / "support-replies-smollm2.yaml"  # the drafter's settings, read by project.py
TIMEOUT = 900  # seconds for any one script; the studio may take APP_START to answer (shared CPUs start slowly)
APP_START = 180

pytestmark = pytest.mark.slow


def _copy_project(tmp_path: Path) -> Path:
    """The mini-project without its models/, at the same place under tmp_path as in the repository, beside the
    repository config the drafter's settings come from."""
    project = tmp_path / PROJECT.relative_to(ROOT)
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("models", "__pycache__"))
    (tmp_path / REFERENCE_CONFIG).parent.mkdir()
    shutil.copy(ROOT / REFERENCE_CONFIG, tmp_path / REFERENCE_CONFIG)
    return project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mini_project_routes_and_drafts_in_order_and_writes_its_results(tmp_path, tiny_bert, tiny_llama):
    project = _copy_project(tmp_path)
    # fp32 only: no bf16 row, one process fewer to measure per model
    tiny = [f"model.name={tiny_bert}", "data.max_rows=60", "quantize.precision=fp32"]
    drafter = [f"model.name={tiny_llama}", "data.max_rows=40", "data.max_length=128", "train.max_steps=2",
               "eval.max_new_tokens=8", "eval.max_examples=4", "quantize.timing_repeats=1", "quantize.timing_warmup=0",
               "quantize.precision=fp32"]
    drafter = [arg for setting in drafter for arg in ("--drafter-set", setting)]
    prepared = run_script(project / "data_prep.py", *tiny, *drafter, timeout=TIMEOUT)
    header_line(prepared, "split", "rows", "examples")
    assert "the drafter's data" in prepared
    # the drafter's config: the repository config's settings, with ticket_drafter.yaml's laid over them
    resolved = yaml.safe_load((project / "models" / "ticket-drafter" / "config.yaml").read_text())
    reference = yaml.safe_load((ROOT / REFERENCE_CONFIG).read_text())
    assert {key: resolved["lora"][key] for key in reference["lora"]} == reference["lora"]
    assert resolved["data"]["format"] == reference["data"]["format"]
    assert resolved["train"]["learning_rate"] == reference["train"]["learning_rate"]
    assert resolved["quantize"]["keep_full_precision"] == [r"mlp\.down_proj"]
    trained = run_script(project / "train.py", *tiny, "train.epochs=1", *drafter, timeout=TIMEOUT)
    assert "training the router" in trained and "training the drafter" in trained and trained.count("trained ") >= 2
    evaluated = run_script(project / "evaluate.py", "--shown", "2", timeout=TIMEOUT)
    header_line(evaluated, "metric", "base", "tuned", "95% CI of delta")
    assert "accuracy" in evaluated and "rougeL" in evaluated and "house style:" in evaluated
    assert "[2] ticket:" in evaluated and "reference:" in evaluated
    quantized = run_script(project / "quantize.py", "--methods", "dynamic-int8", "--examples", "4",
                           timeout=TIMEOUT)
    header_line(quantized, "variant", "bs8 ms", "agreement")
    assert "inference.py drafts with:" in quantized

    routed = run_script(project / "inference.py", "my card was charged twice", timeout=TIMEOUT)
    header_line(routed, "ticket", "queue", "confidence")
    assert "dynamic-int8" in routed
    lines = routed.splitlines()
    queue = next(i for i, line in enumerate(lines) if line.strip().startswith("queue:"))
    draft = next(i for i, line in enumerate(lines) if line.strip().startswith("draft:"))
    assert lines[queue - 1].strip() == "[1] ticket: my card was charged twice" and draft == queue + 1
    assert "drafts by the fine-tuned drafter, dynamic-int8 copy" in routed  # the quantized copy, as measured
    assert "new tokens (the longest training reply, " in routed  # the limit counted from the training replies

    before = (project / "README.md").read_text()
    run_script(project / "results.py", timeout=TIMEOUT)
    after = (project / "README.md").read_text()
    assert after != before and after.split("<!-- results -->")[0] == before.split("<!-- results -->")[0]
    for part in ("**Base vs fine-tuned**", "**Deployment**", "**Errors:**", "**Confidence:**",
                 "**What would help next**", "### The drafter", "**Drafter training**",
                 "**Drafter: base vs fine-tuned**", "**Drafts side by side**", "**Drafter deployment**",
                 "`python inference.py` drafts with", "**Time per step**", "| rougeL |"):
        assert part in after, part

    port = _free_port()
    app = subprocess.Popen([sys.executable, str(project / "app.py"), "--port", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        deadline = time.time() + APP_START
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2) as response:
                    runs = {run["name"]: run for run in json.loads(response.read())["runs"]}
                    break
            except OSError:
                assert app.poll() is None, app.stderr.read().decode()
                assert time.time() < deadline, "the app did not start"
                time.sleep(0.5)
    finally:
        app.terminate()
        app.wait(timeout=20)
    assert runs["ticket-router"]["task"] == "classification" and runs["ticket-drafter"]["task"] == "causal_lm"
    assert runs["ticket-drafter"]["models"] == ["base", "fine-tuned", "dynamic-int8"]


def test_mini_project_scripts_say_which_step_is_missing(tmp_path):
    project = _copy_project(tmp_path)

    def refused(script: str, *args: str) -> str:
        done = subprocess.run([sys.executable, str(project / script), *args], capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode != 0, done.stdout
        return done.stderr

    assert "run `python train.py` first" in refused("evaluate.py")
    assert "run `python train.py --only drafter` first" in refused("quantize.py", "--only", "drafter")
    assert "run `python train.py` first" in refused("inference.py", "hello")
    assert "--drafter-set" in refused("train.py", "--only", "drafter", "train.max_steps=2")
