"""What every benchmark shares: paths, the machine's description and matmul peak, child processes, JSON out.

Each contestant runs in its own process (``run_worker``), so its peak RSS and thread settings are
its own and one contestant's warm caches never help another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work"
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "MLFLOW_DISABLE_TELEMETRY": "true",
             "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}


def machine() -> dict:
    """CPU model, usable cores, memory and the library versions, for the results header."""
    from tunelab.machine import cpu_count, cpu_description
    from tunelab.rundir import versions

    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu_description(), "cores": cpu_count(), "memory_gib": round(memory_gib, 1),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), **versions()}


def matmul_peak(threads: int | None = None, sizes=(256, 512, 1024, 2048), seconds: float = 0.5,
                dtype: str = "fp32") -> dict:
    """This machine's matmul GFLOP/s in ``dtype`` (fp32 or bf16): for each size the median of 5 timed rounds,
    best size reported. A square n x n matmul costs 2 n^3 floating-point operations. Where a size runs below
    10 GFLOP/s (bf16 on CPUs without AVX-512: about 0.6) the larger sizes are skipped: they would take minutes.
    """
    import torch

    from tunelab.machine import cpu_count

    torch.set_num_threads(threads or cpu_count())
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    per_size = {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
        start = time.perf_counter()
        a @ b
        first = time.perf_counter() - start
        reps = max(1, min(int(seconds * 60e9 / (2 * n**3)), int(seconds / max(first, 1e-9))))
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            rounds.append((time.perf_counter() - start) / reps)
        per_size[n] = round(2 * n**3 / statistics.median(rounds) / 1e9, 1)
        if per_size[n] < 10:
            break
    return {"gflops": max(per_size.values()), "per_size": per_size, "threads": torch.get_num_threads()}


def run_worker(script: Path, name: str, spec: dict, timeout: float = 3600) -> dict:
    """Run ``script --worker name --spec FILE`` in a fresh process and return the JSON it writes."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps({**spec, "out": str(out_file)}), encoding="utf-8")
        env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(ROOT / "benchmarks")}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(script), "--worker", name, "--spec", str(spec_file)],
                              env=env, timeout=timeout)
        if done.returncode != 0 or not out_file.exists():
            raise SystemExit(f"{script.name}: worker {name} failed (exit code {done.returncode})")
        result = json.loads(out_file.read_text(encoding="utf-8"))
        result["process_seconds"] = round(time.perf_counter() - started, 1)
        return result


def worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden options ``run_worker`` starts a benchmark's child process with."""
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)


def serve_worker(args: argparse.Namespace, workers: dict) -> bool:
    """In a child started by ``run_worker``: run the named worker, write its result (with this
    process's peak RSS unless the worker measured it) and return True; in the parent, False."""
    from tunelab.machine import peak_rss_mb

    if not args.worker:
        return False
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    result = workers[args.worker](spec)
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    Path(spec["out"]).write_text(json.dumps(result), encoding="utf-8")
    return True


def write_result(name: str, result: dict, out: Path = RESULTS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def shared_file(*parts: str) -> Path:
    """A file of the shared datasets, or a clear exit when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"{path} not found: these benchmarks read the public datasets in ../shared/data "
                         "beside the checkout; pass the file with the script's data option instead")
    return path


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")
