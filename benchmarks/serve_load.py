"""Load on `tunelab serve`: concurrent clients with and without micro-batching.

    python benchmarks/serve_load.py RUN [--clients 16] [--requests 400] [--bad-share 0.1]

Starts ``tunelab serve RUN`` on a free loopback port twice (``--max-batch-size 1``, then the
default batching), sends ``--requests`` requests from ``--clients`` concurrent clients (a share of
them malformed or oversized), and reports requests/s, p50/p95/p99 latency of the good requests,
responses by status, and the server's peak RSS. Stops each server it started. Prints a table and
writes ``benchmarks/results/serve_load.json``. Works for classification runs (``/v1/classify``)
and causal-LM runs (``/v1/completions``). Not a timed test: compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from tunelab.machine import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int, batch_size: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", run, "--port", str(port),
                               "--max-batch-size", str(batch_size)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-500:]}")


def requests_for(task: str, count: int, bad_share: float, seed: int = 0) -> list[tuple[str, str, bool]]:
    """(path, body, is_good) tuples: good requests and a share of malformed or oversized ones."""
    rng = random.Random(seed)
    path = "/v1/classify" if task == "classification" else "/v1/completions"
    good = (lambda i: json.dumps({"input": f"where is my parcel number {i}?"})) if task == "classification" else (
        lambda i: json.dumps({"prompt": f"Where is my parcel number {i}?", "max_tokens": 8}))
    bad = ['{"input": ', json.dumps({"input": []}), json.dumps({"input": ["x"] * 500}), json.dumps({"prompt": 3}),
           json.dumps({"prompt": "hi", "max_tokens": 100000}), json.dumps({"prompt": "hi", "temperature": 9})]
    return [(path, rng.choice(bad), False) if rng.random() < bad_share else (path, good(i), True) for i in range(count)]


async def load(port: int, plan: list, clients: int) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    latencies, statuses = [], Counter()

    async def client(http: httpx.AsyncClient):
        while not queue.empty():
            path, body, good = queue.get_nowait()
            start = time.perf_counter()
            reply = await http.post(path, content=body, headers={"Content-Type": "application/json"})
            statuses[reply.status_code] += 1
            if good and reply.status_code == 200:
                latencies.append((time.perf_counter() - start) * 1000)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"seconds": round(seconds, 2), "requests_per_second": round(len(plan) / seconds, 2),
            "p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "p99_ms": round(cuts[98], 1),
            "statuses": dict(sorted(statuses.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder (e.g. runs/demo)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=400, help="requests per configuration (default 400)")
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of malformed requests (default 0.1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.json"))
    args = parser.parse_args()
    from tunelab.rundir import open_run
    from tunelab.serving import ServeSettings

    _, cfg = open_run(args.run)
    plan = requests_for(cfg.task, args.requests, args.bad_share)
    rows = []
    defaults = ServeSettings()
    batched = f"micro-batched ({defaults.max_batch_size}, {defaults.max_wait_ms:g} ms)"
    for label, batch_size in (("one request at a time", 1), (batched, defaults.max_batch_size)):
        port = free_port()
        server = start_server(args.run, port, batch_size)
        try:
            asyncio.run(load(port, plan[: max(32, len(plan) // 10)], args.clients))  # warm-up
            row = {"server": label, "max_batch_size": batch_size, **asyncio.run(load(port, plan, args.clients)),
                   "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1)}
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        rows.append(row)
        print(row)
    speedup = rows[1]["requests_per_second"] / rows[0]["requests_per_second"]
    report = {"run": args.run, "task": cfg.task, "clients": args.clients, "requests": args.requests,
              "bad_share": args.bad_share, "cpu_count": os.cpu_count(), "rows": rows,
              "batching_speedup": round(speedup, 2),
              "verdicts": [{"target": f"micro-batching requests/s vs one at a time, {args.clients} clients",
                            "goal": ">= 3x", "measured": f"{speedup:.2f}x", "met": speedup >= 3}]}
    print(f"\n{'server':<26}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'RSS MiB':>9}  statuses")
    for r in rows:
        print(f"{r['server']:<26}{r['requests_per_second']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['p99_ms']:>9}"
              f"{r['server_peak_rss_mb']:>9}  {r['statuses']}")
    print(f"micro-batching: {speedup:.2f}x the requests/s of one request at a time")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
