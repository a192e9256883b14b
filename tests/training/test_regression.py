"""Pinned-seed loss regression: a fixed seed, one thread, fp32 and a few LoRA steps give these training losses.

A change that alters what training computes (data order, tokenization, the loss, the optimizer, the schedule,
LoRA's initialization) moves these numbers and fails here, even when every run still "trains".

Tolerance: relative 1e-3. Float kernels differ between CPUs (AVX2 / AVX-512 / plain SSE paths of ATen, MKL and
oneDNN); rerunning these exact runs with ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41
MKL_ENABLE_INSTRUCTIONS=SSE4_2`` (other kernels than the AVX2 machine the pins come from) moved no loss by more
than 3e-7 relative. A learning rate half as large moves every loss after the first step by at least 7e-3 (the
test checks that, so the pin is known to catch a real change).

To re-pin after an intended change: run this file with ``-s`` and copy the printed losses.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import train_config
from tunelab.config import load_config
from tunelab.training import train

REL = 1e-3
STEPS = 6
LEARNING_RATE = 3e-2

# Loss at each of the 6 steps (train_log.jsonl, logging_steps=1); the last is metrics.json's final_train_loss.
PINNED = {
    "classification": [1.1086528301239014, 1.2267786264419556, 1.317484736442566, 1.173147201538086,
                       1.1165940761566162, 1.2029415369033813],
    "causal_lm": [6.4709086418151855, 6.231760025024414, 6.105029582977295, 6.333733558654785,
                  6.037719249725342, 5.972087383270264],
}


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def step_losses(folder, model, task, learning_rate=LEARNING_RATE):
    """Train ``STEPS`` LoRA steps with seed 0 on one thread; the logged loss of each step and the metrics."""
    folder.mkdir()
    cfg = load_config(train_config(folder, model, task=task, method={"name": "lora"}, train={
        "max_steps": STEPS, "logging_steps": 1, "eval_strategy": "no", "threads": 1, "seed": 0, "precision": "fp32",
        "learning_rate": learning_rate, "warmup_ratio": 0.0, "lr_scheduler": "linear"}))
    run_dir = train.run(cfg)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    entries = [e for e in log if "loss" in e]
    assert [e["step"] for e in entries] == list(range(1, STEPS + 1))
    return [e["loss"] for e in entries], json.loads((run_dir / "metrics.json").read_text())


def relative_changes(losses, pinned):
    return [abs(a - b) / abs(b) for a, b in zip(losses, pinned)]


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_pinned_seed_losses_are_reproduced(tmp_path, tiny_bert, tiny_llama, task, keep_threads):
    model = tiny_bert if task == "classification" else tiny_llama
    losses, metrics = step_losses(tmp_path / "pinned", model, task)
    print(f"\n{task} losses: {losses}")
    assert metrics["steps"] == STEPS and metrics["threads"] == 1 and metrics["method"] == "lora"
    assert losses == pytest.approx(PINNED[task], rel=REL)
    assert metrics["final_train_loss"] == pytest.approx(PINNED[task][-1], rel=REL)
    assert metrics["mean_train_loss"] == pytest.approx(sum(PINNED[task]) / STEPS, rel=REL)

    # The comparison can fail: pins off by twice the tolerance are refused.
    assert losses != pytest.approx([x * (1 + 2 * REL) for x in PINNED[task]], rel=REL)

    # The pin is meaningful: half the learning rate gives the same first loss (no update has happened yet),
    # then losses far outside the tolerance at every later step.
    slower, _ = step_losses(tmp_path / "half-lr", model, task, learning_rate=LEARNING_RATE / 2)
    assert slower[0] == pytest.approx(PINNED[task][0], rel=REL)
    changes = relative_changes(slower[1:], PINNED[task][1:])
    assert min(changes) > 5 * REL and max(changes) > 10 * REL, changes
