"""CPU threads for torch: the count that is fastest on this machine now, measured rather than assumed.

On a shared machine the right count depends on what else runs. Measured on a 2-core VM: with the
machine idle, 2 threads ran a matmul 1.8x faster than 1; with a neighbour busy, the second thread
spun while waiting and training ran 3-6x slower than with 1. Neither the core count nor the load
average tells the two apart (a VM neighbour's load is invisible from inside), so ``pick`` times
a short probe shaped like a transformer layer with each candidate count and keeps the fastest.
"""

from __future__ import annotations

import statistics
import time

from tunelab.modeling import cpu_count

PROBE_ROUNDS = 3          # alternating rounds over the candidates; the median round counts
PROBE_MATMULS = 4         # (rows x 384) @ (384 x 1536): a small feed-forward layer


def candidates(cores: int) -> list[int]:
    """Thread counts worth trying: 1, half the cores and all of them."""
    return sorted({1, max(1, cores // 2), cores})


def probe_seconds(threads: int, rows: int = 256) -> float:
    """Wall time of a few layer-sized matmuls with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(rows, 384), torch.randn(384, 1536)
    a @ b  # let the thread pool start
    start = time.perf_counter()
    for _ in range(PROBE_MATMULS):
        a @ b
    return time.perf_counter() - start


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
