"""Facts about the host this process runs on, measured rather than assumed.

The device and its precision, the usable cores, the CPU's name, this process's place among several
(torchrun/accelerate), peak memory, and the torch thread count that is fastest here now.

Threads: on a shared machine the right count depends on what else runs. Measured on a 2-core VM: with
the machine idle, 2 threads ran a matmul 1.8x faster than 1; with a neighbour busy, the second thread
spun while waiting and training ran 3-6x slower than with 1. Neither the core count nor the load
average tells the two apart (a VM neighbour's load is invisible from inside), so ``pick`` times a
short probe shaped like a transformer layer with each candidate count and keeps the fastest.

Precision: CPUs differ by more than two orders of magnitude in bf16. Measured on two 2-core AMD EPYC
machines: without AVX-512, fp32 matmuls ran at about 130 GFLOP/s and bf16 at 0.6 (unusable); with
AVX512-BF16, fp32 at about 222 and bf16 at about 950. ``with_precision`` therefore measures both once
per process (``matmul_speeds``) and takes bf16 on a CPU only where it is
clearly faster. CUDA keeps its own rule: bf16 where the GPU supports it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tunelab.errors import TunelabError


@dataclass
class Device:
    """Where training runs and in which precision."""

    type: str            # "cpu" or "cuda"
    bf16: bool           # compute in bf16 (autocast; on a CPU also a bf16 frozen base under adapters)
    description: str
    precision: dict = field(default_factory=dict)   # how the precision was chosen (``with_precision``)


def choose_device(want: str = "auto", setting: str = "train.device", instead: str = "use auto or cpu") -> Device:
    """CUDA when present and not refused (bf16 where the GPU supports it), else the CPU in fp32.

    ``want`` is a device setting (``auto``, ``cpu`` or ``cuda``); ``setting`` names it in errors and
    ``instead`` says what to do when CUDA is asked for and missing.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise TunelabError(f"{setting}: 'cuda' was asked for but no CUDA GPU is visible; {instead}")
    if want != "cpu" and has_cuda:
        bf16 = torch.cuda.is_bf16_supported()
        return Device("cuda", bf16, describe("cuda", bf16))
    return Device("cpu", False, describe("cpu", False))


def describe(device_type: str, bf16: bool) -> str:
    """The device in words, with its precision: "CPU: AMD EPYC (2 cores usable, fp32)"."""
    import torch

    used = "bf16" if bf16 else "fp32"
    if device_type == "cuda":
        return f"{torch.cuda.get_device_name(0)} ({used})"
    return f"CPU: {cpu_description()} ({cpu_count()} cores usable, {used})"


BF16_CLEARLY_FASTER = 1.5   # auto takes bf16 on a CPU only when its matmuls measure this much faster


def with_precision(device: Device, want: str = "auto", setting: str = "train.precision") -> Device:
    """``device`` computing in the precision ``want`` (auto, fp32 or bf16) asks for, with the choice recorded.

    auto: on CUDA, bf16 where the GPU supports it; on a CPU, bf16 only when ``matmul_speeds`` measures it
    at least ``BF16_CLEARLY_FASTER`` times fp32, else fp32. bf16 asked for on a GPU without it is an error;
    on a CPU it is honoured, however slow (the measurement is recorded either way).
    """
    import torch

    record = {"setting": want}
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if want == "bf16" and not supported:
            raise TunelabError(f"{setting}: bf16 was asked for but this GPU does not support it; use auto or fp32")
        bf16 = want == "bf16" or (want == "auto" and supported)
    elif want == "fp32":
        bf16 = False
    else:
        speeds = matmul_speeds()
        record.update(speeds)
        bf16 = want == "bf16" or speeds["bf16_gflops"] >= BF16_CLEARLY_FASTER * speeds["fp32_gflops"]
    record["used"] = "bf16" if bf16 else "fp32"
    return Device(device.type, bf16, describe(device.type, bf16), record)


SPEED_SHAPE = (128, 512, 1536)    # rows x in x out: a small transformer feed-forward matmul
SPEED_SECONDS = 0.02              # time each precision at least this long (after one warm-up call)
SPEED_MAX_CALLS = 64


@cache
def matmul_speeds() -> dict:
    """GFLOP/s of a layer-shaped matmul in fp32 and in bf16 with torch's current thread count, measured
    once per process: a few hundredths of a second, or about 0.7 s where bf16 runs at 0.6 GFLOP/s (CPUs
    without AVX-512: a warm-up call and one timed call of about 0.3 s each)."""
    return {f"{name}_gflops": round(_gflops(dtype), 1) for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))}


def _gflops(dtype_name: str) -> float:
    rows, inner, out = SPEED_SHAPE
    seconds, calls = timed_matmuls(rows, inner, out, dtype_name, most=SPEED_MAX_CALLS, enough_seconds=SPEED_SECONDS)
    return 2 * rows * inner * out * calls / seconds / 1e9


def timed_matmuls(rows: int, inner: int, out: int, dtype_name: str = "float32", most: int = 1,
                  enough_seconds: float = float("inf")) -> tuple[float, int]:
    """(seconds, calls) of (rows x inner) @ (inner x out) matmuls after one untimed call (which starts the
    thread pool and lets oneDNN pick and compile its kernels): ``most`` calls, or fewer once
    ``enough_seconds`` have passed (at least one)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, out, dtype=dtype)
    a @ b
    calls, start = 0, time.perf_counter()
    while calls < most and (calls == 0 or time.perf_counter() - start < enough_seconds):
        a @ b
        calls += 1
    return time.perf_counter() - start, calls


def cpu_count() -> int:
    """Cores this process may use (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
RETURNED_ALLOCATION_BYTES = 1 << 20


def return_memory_to_os() -> bool:
    """Make glibc serve allocations of 1 MiB and more from their own mappings, unmapped when freed.

    By default glibc raises that threshold as large blocks are freed and then keeps them in its heap:
    a training step's short-lived activations and logits stay resident long after they are freed.
    Returns False where there is no glibc (macOS, musl): nothing changes there.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, RETURNED_ALLOCATION_BYTES))
    except (OSError, AttributeError):
        return False


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process (default: this one) so far, in MiB.

    Linux keeps ``ru_maxrss`` across exec, so a child started by a large parent would report
    the parent's peak; ``VmHWM`` belongs to this process image alone.
    """
    import resource
    import sys

    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid != "self":  # no /proc (macOS, Windows): only this process's own peak is known
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def cpu_description() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()



@dataclass(frozen=True)
class World:
    """Where this process sits, from the variables torchrun and accelerate set (one process without them)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    env = os.environ
    size = int(env.get("WORLD_SIZE", 1))
    return World(int(env.get("RANK", 0)), size, int(env.get("LOCAL_WORLD_SIZE", size)))


def threads_per_process(cores: int, processes: int) -> int:
    """Each process's share of the cores, so N processes never oversubscribe them."""
    return max(1, cores // max(1, processes))



PROBE_ROUNDS = 3          # alternating rounds over the candidates; the median round counts
PROBE_MATMULS = 4         # (rows x 384) @ (384 x 1536): a small feed-forward layer


def candidates(cores: int) -> list[int]:
    """Thread counts worth trying: 1, half the cores and all of them."""
    return sorted({1, max(1, cores // 2), cores})


def probe_seconds(threads: int, rows: int = 256) -> float:
    """Wall time of a few layer-sized matmuls with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    return timed_matmuls(rows, 384, 1536, most=PROBE_MATMULS)[0]


def pick(cores: int | None = None) -> int:
    """The fastest of ``candidates(cores)`` on the probe (about 50 ms in all on 2 cores)."""
    cores = cores or cpu_count()
    options = candidates(cores)
    if len(options) == 1:
        return options[0]
    times: dict[int, list[float]] = {n: [] for n in options}
    for _ in range(PROBE_ROUNDS):
        for n in options:
            times[n].append(probe_seconds(n))
    return min(options, key=lambda n: statistics.median(times[n]))


def apply(setting: int | None) -> int:
    """Set torch's intra-op threads to ``setting``, or to the measured fastest count when it is None."""
    import torch

    threads = setting or pick()
    torch.set_num_threads(threads)
    return threads


def set_threads(setting: int | None) -> int:
    """Set torch's intra-op threads to ``setting`` and return it. Default (None): the count measured
    fastest now, or, when several processes share the machine, each one's share of the cores."""
    processes = world().local_size
    if setting is None and processes > 1:
        setting = threads_per_process(cpu_count(), processes)
    return apply(setting)
