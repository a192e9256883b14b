"""benchmarks/gpu_smoke.py: LoRA and QLoRA train on a CUDA GPU through tunelab, and without one the script
says so and exits cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_smoke.py"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def run_script(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **OFFLINE, **env})


def test_without_cuda_the_script_measures_nothing_and_exits_0(tmp_path):
    done = run_script("--steps", "5", "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work"),
                      timeout=120, CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "nothing was measured" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "work").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_lora_and_qlora_train_on_the_gpu(tmp_path):
    done = run_script("--steps", "5", "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work"),
                      timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "gpu_smoke.json").read_text(encoding="utf-8"))
    rows = {row["method"]: row for row in result["rows"]}
    assert sorted(rows) == ["lora", "qlora"]
    for row in rows.values():
        assert row["steps"] == 5 and row["tokens_per_second"] > 0 and row["peak_gpu_memory_mb"] > 0
    assert "tokens/s" in done.stdout and "peak GPU MiB" in done.stdout
