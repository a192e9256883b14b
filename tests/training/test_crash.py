"""Crashes lose nothing: SIGKILL then --resume equals an uninterrupted run; SIGINT/SIGTERM save and say how
to go on; a disk that refuses writes gives a clear error and never a run that looks complete."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_config, write_jsonl

MAX_STEPS = 36
SETTINGS = {"train": {"max_steps": MAX_STEPS, "batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.0,
                      "eval_strategy": "steps", "eval_steps": 6, "logging_steps": 1, "threads": 1,
                      "save_total_limit": 2, "report_to": ["none"]},
            "data": {"max_length": 32}, "lora": {"r": 4, "lora_alpha": 8}}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def rows(n: int = 240) -> list[dict]:
    words = ["refund", "parcel", "password", "invoice", "courier", "login"]
    return [{"text": f"{words[i % 6]} question {i} about the {words[(i * 5) % 6]} and order {i * 13 % 97}",
             "label": ("billing", "shipping", "account")[i % 3]} for i in range(n)]


def make_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", rows())
    return write_config(folder, **SETTINGS)


def train(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunelab", "train", str(config), *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def logged_steps(run_dir: Path) -> list[int]:
    """Steps of the training-loss events in train_log.jsonl (one per step, as logging_steps is 1)."""
    events = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if "loss" in e]


def last_logged_step(run_dir: Path) -> int:
    try:
        return max(logged_steps(run_dir), default=0)
    except (OSError, ValueError):
        return 0  # not written yet, or a line half-written right now


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int) -> int:
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        reached = last_logged_step(run_dir)
        if reached >= step:
            return reached
        time.sleep(0.005)
    raise AssertionError(f"training ended or stalled before step {step}: {finish(process)[1][-2000:]}")


def adapter(run_dir: Path) -> dict:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    config = make_config(tmp_path_factory.mktemp("uninterrupted"))
    code, output = finish(train(config))
    assert code == 0, output
    return config.parent / "run"


def assert_same_run(resumed: Path, reference: Path) -> None:
    expected, got = adapter(reference), adapter(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-5), f"{key}: {(expected[key] - got[key]).abs().max()}"
    steps = logged_steps(resumed)
    assert steps == list(range(1, MAX_STEPS + 1)), f"duplicated or missing steps: {steps}"
    assert steps == logged_steps(reference)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    config = make_config(tmp_path)
    run_dir = tmp_path / "run"
    first_checkpoint = SETTINGS["train"]["eval_steps"]
    target = random.Random().randint(first_checkpoint + 1, MAX_STEPS - 4)
    process = train(config)
    killed_at = wait_for_step(process, run_dir, target)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "COMPLETE").exists() and killed_at < MAX_STEPS, f"killed at {killed_at}"
    code, output = finish(train(config, "--resume"))
    assert code == 0, output
    assert (run_dir / "COMPLETE").exists()
    assert_same_run(run_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, uninterrupted, signum):
    config = make_config(tmp_path)
    run_dir = tmp_path / "run"
    process = train(config)
    wait_for_step(process, run_dir, 3)
    process.send_signal(signum)
    code, output = finish(process)
    assert code == 128 + signum, output
    stopped = signal.Signals(signum).name
    assert f"{stopped} at step" in output and f"tunelab train {config} --resume" in output, output
    assert "Traceback" not in output
    assert not (run_dir / "COMPLETE").exists()
    step = int(output.split(f"{stopped} at step ")[1].split(":")[0])
    assert step < MAX_STEPS and (run_dir / "checkpoints" / f"checkpoint-{step}").is_dir()
    code, output = finish(train(config, "--resume"))
    assert code == 0, output
    assert_same_run(run_dir, uninterrupted)


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 400 KB tmpfs: a real full disk. Needs permission to mount (root on Linux); skipped otherwise."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'mount failed'})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_preparing_is_a_clear_error_and_leaves_nothing(tmp_path, tiny_disk, run_cli):
    write_jsonl(tmp_path / "train.jsonl", rows())
    config = write_config(tmp_path, output={"dir": str(tiny_disk / "run")})
    code, out, err = run_cli("prepare", config)
    assert code == 2, out + err
    assert "No space left on device" in err and "Traceback" not in err
    assert list(tiny_disk.iterdir()) == [], "a half-written run folder was left behind"


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path, run_cli, monkeypatch):
    import tunelab.rundir

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir", "?"))

    monkeypatch.setattr(tunelab.rundir.tempfile, "mkdtemp", refuse)
    write_jsonl(tmp_path / "train.jsonl", rows())
    code, out, err = run_cli("prepare", write_config(tmp_path))
    assert code == 2, out + err
    assert "output.dir: cannot create" in err and "Permission denied" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_write_error_while_saving_never_leaves_a_run_that_looks_complete(tmp_path, tiny_bert, run_cli,
                                                                           monkeypatch):
    import tunelab.training.train
    from conftest import train_config

    def save_half(run, *args, **kwargs):
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"\0" * 100)  # cut short
        raise no_space(run.adapter_dir / "adapter_model.safetensors")

    monkeypatch.setattr(tunelab.training.train, "save_outputs", save_half)
    config = train_config(tmp_path, tiny_bert, train={"epochs": 1, "threads": 1})
    code, out, err = run_cli("train", config)
    assert code == 2, out + err
    assert "adapter_model.safetensors: No space left on device" in err and "Traceback" not in err
    run_dir = tmp_path / "run"
    assert not (run_dir / "COMPLETE").exists()
    for command in (["evaluate", run_dir], ["quantize", run_dir, "--method", "dynamic-int8"], ["serve", run_dir],
                    ["app", run_dir], ["predict", run_dir, "some text"]):
        code, out, err = run_cli(*command)
        assert code == 2 and "the run is incomplete" in err and "Traceback" not in err, (command, out, err)
