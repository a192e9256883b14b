"""Data-parallel training: two CPU processes (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_config, write_jsonl
from tunelab import machine
from tunelab.config import load_config
from tunelab.training import distributed, train

TOLERANCE = 1e-5  # largest weight difference allowed between 2 processes x 4 and 1 process x 8
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def rows(n: int, offset: int = 0) -> list[dict]:
    words = ("alpha", "beta", "gamma")
    return [{"text": f"{words[i % 3]} item {i + offset} of {i * 7 % 11}", "label": words[i % 3]} for i in range(n)]


def config(folder: Path, model: Path, batch_size: int, **train_settings) -> Path:
    """48 training rows (a multiple of the global batch, so no process pads its last batch), in fp32 on every
    CPU: the runs are compared weight by weight, far below bf16's rounding."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {name: str(write_jsonl(folder / f"{name}.jsonl", rows(n, offset)))
            for name, n, offset in (("train", 48, 0), ("validation", 12, 100), ("test", 12, 200))}
    return write_config(folder, model={"name": str(model)}, data={**data, "max_length": 32},
                        lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear"},
                        train={"epochs": 2, "batch_size": batch_size, "learning_rate": 3e-2, "warmup_ratio": 0.0,
                               "logging_steps": 1, "report_to": ["none"], "group_by_length": False, "threads": 1,
                               "precision": "fp32", **train_settings})


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_bert) -> Path:
    return train.run(load_config(config(tmp_path_factory.mktemp("single"), tiny_bert, batch_size=8)))


def launch(*command: str) -> str:
    done = subprocess.run(list(command), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def assert_matches_single(run_dir: Path, single: Path) -> None:
    expected = load_file(single / "adapter" / "adapter_model.safetensors")
    got = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    worst = max((expected[k] - got[k]).abs().max().item() for k in expected)
    assert worst < TOLERANCE, worst
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["global_batch"] == 8 and metrics["steps"] == 12
    assert metrics["distributed"] in ("ddp", "deepspeed-zero2")


def assert_written_once(run_dir: Path, output: str) -> None:
    events = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "loss" in e] == list(range(1, 13)), "steps logged twice or missing"
    assert output.count(f"wrote {run_dir}/") == 1 and output.count("train_seconds") == 1, output[-2000:]
    assert (run_dir / "COMPLETE").exists()


@pytest.mark.slow
def test_nproc_2_matches_one_process_and_writes_the_run_once(tmp_path, tiny_bert, single):
    cfg = config(tmp_path, tiny_bert, batch_size=4)
    output = launch(sys.executable, "-m", "tunelab", "train", str(cfg), "--nproc", "2")
    assert_matches_single(tmp_path / "run", single)
    assert_written_once(tmp_path / "run", output)
    assert json.loads((tmp_path / "run" / "versions.json").read_text())["threads"] == 1


@pytest.mark.slow
def test_accelerate_launch_matches_one_process(tmp_path, tiny_bert, single):
    cfg = config(tmp_path, tiny_bert, batch_size=4)
    output = launch(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "-m", "tunelab", "train", str(cfg))
    assert_matches_single(tmp_path / "run", single)
    assert_written_once(tmp_path / "run", output)


@pytest.mark.slow
def test_torchrun_ranks_train_on_disjoint_shards_that_cover_the_data(tmp_path, tiny_bert):
    cfg = config(tmp_path, tiny_bert, batch_size=4, epochs=1)
    probe = tmp_path / "probe"
    probe.mkdir()
    launch(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parents[1] / "shard_probe.py"), str(probe), "train", str(cfg))
    import datasets

    train_ids = {tuple(r) for r in datasets.load_from_disk(str(tmp_path / "run" / "data" / "tokenized"))["train"]["input_ids"]}
    seen = {rank: [tuple(json.loads(line)) for line in (probe / f"rank-{rank}.jsonl").read_text().splitlines()]
            for rank in (0, 1)}
    shards = {rank: [ids for ids in seen[rank] if ids in train_ids] for rank in seen}
    assert len(shards[0]) == len(shards[1]) == 24
    assert not set(shards[0]) & set(shards[1]), "both ranks trained on the same examples"
    assert set(shards[0]) | set(shards[1]) == train_ids


def test_fsdp_is_refused_on_cpu_before_anything_starts(tmp_path, tiny_bert, run_cli):
    cfg = config(tmp_path, tiny_bert, batch_size=4)
    for extra in ([], ["--nproc", "2"]):
        code, _, err = run_cli("train", cfg, "train.distributed=fsdp", "train.device=cpu", *extra)
        assert code == 2 and "train.distributed: fsdp needs CUDA GPUs" in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()


def test_deepspeed_without_deepspeed_says_how_to_install(tmp_path, tiny_bert, run_cli):
    if distributed._needs_deepspeed("cpu") is None:
        pytest.skip("DeepSpeed is installed here")
    code, _, err = run_cli("train", config(tmp_path, tiny_bert, batch_size=4), "train.distributed=deepspeed-zero2")
    assert code == 2 and "pip install --no-build-isolation deepspeed" in err


def test_each_process_gets_its_share_of_the_cores(monkeypatch):
    assert machine.threads_per_process(2, 2) == 1 and machine.threads_per_process(16, 3) == 5
    assert machine.threads_per_process(2, 4) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr("tunelab.machine.cpu_count", lambda: 8)
    from tunelab.machine import set_threads

    assert set_threads(None) == 4
    assert torch.get_num_threads() == 4


def test_engine_arguments_and_the_loss_scaling_guard():
    from tunelab.config import from_dict

    base = {"data": {"train": "x.jsonl"}}
    classify = from_dict({**base, "task": "classification"})
    causal = from_dict({**base, "task": "causal_lm", "model": {"name": "builtin:tiny-llama"},
                        "train": {"distributed": "deepspeed-zero3"}})
    assert distributed.training_arguments(classify) == {"ddp_find_unused_parameters": False,
                                                        "average_tokens_across_devices": False}
    args = distributed.training_arguments(causal)
    assert args["average_tokens_across_devices"] is True and Path(args["deepspeed"]).name == "deepspeed-zero3.json"
    assert json.loads(Path(args["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    command = distributed.launch_command("c.yaml", ["train.epochs=1"], 4, resume=True)
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "tunelab",
                           "train", "c.yaml", "train.epochs=1", "--resume"]


@pytest.mark.slow
def test_deepspeed_zero2_trains_on_cpu(tmp_path, tiny_bert, single):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install --no-build-isolation deepspeed)")
    if not shutil.which("g++") and not shutil.which("c++"):
        pytest.skip("DeepSpeed compiles a communication op on first use and needs a C++ compiler")
    cfg = config(tmp_path, tiny_bert, batch_size=4, distributed="deepspeed-zero2")
    output = launch(sys.executable, "-m", "tunelab", "train", str(cfg), "--nproc", "2")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["distributed"] == "deepspeed-zero2"
    assert_matches_single(tmp_path / "run", single)
    assert_written_once(tmp_path / "run", output)
    assert not (tmp_path / "run" / "adapter" / "training_args.bin").exists()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "deepspeed-zero2"])
def test_two_processes_train_in_the_precision_auto_measured(tmp_path, tiny_bert, engine):
    """bf16 where this CPU's matmuls measure clearly faster (a bf16 frozen base under LoRA), else fp32."""
    if engine != "ddp":
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install --no-build-isolation deepspeed)")
        if not shutil.which("g++") and not shutil.which("c++"):
            pytest.skip("DeepSpeed compiles a communication op on first use and needs a C++ compiler")
    cfg = config(tmp_path, tiny_bert, batch_size=4, distributed=engine, precision="auto")
    output = launch(sys.executable, "-m", "tunelab", "train", str(cfg), "--nproc", "2")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    precision = metrics["precision"]
    assert precision["setting"] == "auto" and precision["used"] in ("bf16", "fp32")
    assert metrics["device"].endswith(f"{precision['used']})") and metrics["distributed"] == engine
    assert_written_once(tmp_path / "run", output)


CHOICES = ([True, True], [False, True], [True, False])  # bf16 measured clearly faster, by rank


def _precision_in_process(rank: int, port: int, out: str) -> None:
    """One of two gloo processes: for each of ``CHOICES``, the precision it measured as ``precision: auto``
    records it, and the one it is then told to train in."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    found = []
    for bf16_by_rank in CHOICES:
        bf16 = bf16_by_rank[rank]
        used = {"setting": "auto", "used": "bf16" if bf16 else "fp32"}
        got = distributed.shared_precision(machine.Device("cpu", bf16, f"measured by {rank}", used))
        found.append([got.bf16, got.description, got.precision])
    (Path(out) / f"{rank}.json").write_text(json.dumps(found))


def test_every_process_computes_in_one_precision(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_precision_in_process, args=(port, str(tmp_path)), nprocs=2)
    by_rank = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert by_rank[0] == by_rank[1], "the processes train in different precisions"
    both_bf16, main_fp32, only_main_bf16 = by_rank[0]
    assert both_bf16 == [True, "measured by 0", {"setting": "auto", "used": "bf16"}]
    assert main_fp32 == [False, "measured by 0", {"setting": "auto", "used": "fp32"}]
    assert only_main_bf16[0] is False and only_main_bf16[1].endswith("fp32)")
    assert only_main_bf16[2] == {"setting": "auto", "used": "fp32", "why": "not every process measured bf16 clearly faster"}


def test_one_process_or_a_precision_not_measured_needs_no_agreement(monkeypatch):
    device = machine.Device("cpu", True, "here", {"setting": "auto", "used": "bf16"})
    assert distributed.shared_precision(device) is device
    monkeypatch.setenv("WORLD_SIZE", "2")  # no process group is started: nothing was measured
    for setting in ("bf16", "fp32"):
        device = machine.Device("cpu", setting == "bf16", "here", {"setting": setting, "used": setting})
        assert distributed.shared_precision(device) is device
