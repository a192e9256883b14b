"""Several processes, one run: data parallelism through torchrun or accelerate (DDP, DeepSpeed ZeRO, FSDP).

    tunelab train CONFIG --nproc 2                          # torchrun on this machine
    torchrun --nproc_per_node 2 -m tunelab train CONFIG
    accelerate launch --multi_gpu --num_processes 2 -m tunelab train CONFIG

The Hugging Face Trainer does the distributed work (it reads the launcher's environment); this
module picks the engine named by ``train.distributed`` (``STRATEGIES``), refuses one that cannot
run here before anything starts, gives each process its share of the cores, and starts torchrun
for ``--nproc``. ``train.batch_size`` stays per process: the global batch is
``batch_size x gradient_accumulation_steps x processes``. Only the main process writes the run folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tunelab.config.schema import TunelabConfig
from tunelab.errors import ConfigError
from tunelab.machine import Device, cpu_count, describe, threads_per_process, world

TEMPLATES = Path(__file__).with_name("distributed_templates")


@dataclass(frozen=True)
class Strategy:
    """One engine: why it cannot run on a device (None when it can), and its Trainer arguments."""

    unavailable: Callable[[str], str | None]
    arguments: Callable[[TunelabConfig], dict]


def _always(device_type: str) -> None:
    return None


def _needs_deepspeed(device_type: str) -> str | None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return ("needs DeepSpeed: pip install --no-build-isolation deepspeed (on CPU its first run compiles "
                "a communication op, about 100 s)")
    return None


def _needs_gpus(device_type: str) -> str | None:
    if device_type == "cuda":
        return None
    return ("needs CUDA GPUs, and this run is on the CPU (on CPU, FSDP 1 stops with 'no available "
            "devices' and FSDP 2 quietly trains as plain DDP); use ddp here, or deepspeed-zero2/3, which run on CPU")


def _deepspeed(stage: int) -> Callable[[TunelabConfig], dict]:
    return lambda cfg: {"deepspeed": cfg.train.distributed_config or str(TEMPLATES / f"deepspeed-zero{stage}.json")}


def _fsdp(cfg: TunelabConfig) -> dict:
    return {"fsdp": "full_shard", "fsdp_config": cfg.train.distributed_config or str(TEMPLATES / "fsdp.json")}


STRATEGIES: dict[str, Strategy] = {
    "ddp": Strategy(_always, lambda cfg: {"ddp_find_unused_parameters": False}),
    "deepspeed-zero2": Strategy(_needs_deepspeed, _deepspeed(2)),
    "deepspeed-zero3": Strategy(_needs_deepspeed, _deepspeed(3)),
    "fsdp": Strategy(_needs_gpus, _fsdp),
}


def check(cfg: TunelabConfig, device_type: str) -> None:
    """Refuse, before anything starts, an engine that cannot run on ``device_type``."""
    reason = STRATEGIES[cfg.train.distributed].unavailable(device_type)
    if reason:
        raise ConfigError(f"train.distributed: {cfg.train.distributed} {reason}")
    custom = cfg.train.distributed_config
    if custom and not Path(custom).is_file():
        raise ConfigError(f"train.distributed_config: {custom} not found")


def training_arguments(cfg: TunelabConfig) -> dict:
    """The Trainer arguments for the chosen engine.

    Classification losses are per-batch means that ignore ``num_items_in_batch``; averaging token
    counts across processes would then scale the loss (and its gradients) by the process count.
    """
    return {**STRATEGIES[cfg.train.distributed].arguments(cfg),
            "average_tokens_across_devices": cfg.task != "classification"}


@contextmanager
def main_first(device_type: str) -> Iterator[bool]:
    """Yield whether this is the main process; the others wait until it has left the block.

    Starts the process group (gloo on CPU, nccl on GPUs) when a launcher started several processes.
    """
    if world().size == 1:
        yield True
        return
    from accelerate import PartialState

    state = PartialState(cpu=device_type == "cpu")  # without cpu=True, accelerate sees one process on a CPU box
    with state.main_process_first():
        yield state.is_main_process


def shared_precision(device: Device) -> Device:
    """One precision for every process: the main process's measurement and choice, or fp32 where any process
    measured bf16 as not clearly faster.

    Under ``precision: auto`` on a CPU each process measures its own matmuls, on cores the others share (or on
    other machines); two that chose differently would train different models (a bf16 frozen base beside an
    fp32 one) while averaging their gradients. Starts the process group if nothing has yet (a resumed run)."""
    if world().size == 1 or device.type != "cpu" or device.precision.get("setting") != "auto":
        return device  # nothing was measured: every process decided alike
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(cpu=True)
    chosen: list = [None] * world().size
    dist.all_gather_object(chosen, device)
    main = chosen[0]
    if all(d.bf16 for d in chosen) or not main.bf16:
        return main
    return Device(main.type, False, describe(main.type, False),
                  {**main.precision, "used": "fp32", "why": "not every process measured bf16 clearly faster"})


def launch_command(config: str, overrides: list[str], processes: int, resume: bool) -> list[str]:
    """torchrun on this machine, running ``tunelab train`` in each process."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "tunelab", "train", config, *overrides, *(["--resume"] if resume else [])]


def launch(config: str, overrides: list[str], processes: int, resume: bool) -> int:
    """Run ``launch_command`` with each process's thread share; return its exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process(cpu_count(), processes))}
    return subprocess.call(launch_command(config, overrides, processes, resume), env=env)
