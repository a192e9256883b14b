"""Load on `tunelab serve`: concurrent clients with and without micro-batching.

    python benchmarks/serve_load.py RUN [--clients 16] [--requests 400] [--bad-share 0.1] [--chat] [--max-tokens 8] [--stream]

Starts ``tunelab serve RUN`` on a free loopback port twice (``--max-batch-size 1``, then the
default batching), sends ``--requests`` requests from ``--clients`` concurrent clients (a share of
them malformed or oversized), and reports requests/s, p50/p95/p99 latency of the good requests,
responses by status, and the server's peak RSS. Stops each server it started. Prints a table and
writes ``benchmarks/results/serve_load.json`` (``serve_load_chat.json`` with ``--chat``). Works for
classification runs (``/v1/classify``) and causal-LM runs (``/v1/completions``, or with ``--chat``
``/v1/chat/completions`` on the run's chat template, each request asking for ``--max-tokens`` tokens;
``--stream`` reads server-sent events up to ``[DONE]`` and reports the median time to the first text).
Not a timed test: compare the two rows of one run.
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


def requests_for(task: str, count: int, bad_share: float, seed: int = 0, chat: bool = False,
                 max_tokens: int = 8, stream: bool = False) -> list[tuple[str, str, bool]]:
    """(path, body, is_good) tuples: good requests and a share of malformed or oversized ones."""
    rng = random.Random(seed)
    path = "/v1/classify" if task == "classification" else "/v1/chat/completions" if chat else "/v1/completions"
    question = "Where is my parcel number {}?"
    extra = {"max_tokens": max_tokens, **({"stream": True} if stream else {})}
    good = {"/v1/classify": lambda i: json.dumps({"input": question.format(i).lower()}),
            "/v1/completions": lambda i: json.dumps({"prompt": question.format(i), **extra}),
            "/v1/chat/completions": lambda i: json.dumps({"messages": [{"role": "user", "content": question.format(i)}],
                                                          **extra})}[path]
    bad = ['{"input": ', json.dumps({"input": []}), json.dumps({"input": ["x"] * 500}), json.dumps({"prompt": 3}),
           json.dumps({"prompt": "hi", "max_tokens": 100000}), json.dumps({"prompt": "hi", "temperature": 9})]
    return [(path, rng.choice(bad), False) if rng.random() < bad_share else (path, good(i), True) for i in range(count)]


async def load(port: int, plan: list, clients: int) -> dict:
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    latencies, first_chunks, statuses = [], [], Counter()

    async def client(http: httpx.AsyncClient):
        while not queue.empty():
            path, body, good = queue.get_nowait()
            start, first = time.perf_counter(), None
            async with http.stream("POST", path, content=body, headers={"Content-Type": "application/json"}) as reply:
                async for line in reply.aiter_lines():  # a streamed reply: read up to [DONE]
                    if first is None and line.startswith("data: {") and '"content": ""' not in line:
                        first = time.perf_counter()
            statuses[reply.status_code] += 1
            if good and reply.status_code == 200:
                latencies.append((time.perf_counter() - start) * 1000)
                if first is not None and '"stream": true' in body:
                    first_chunks.append((first - start) * 1000)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"seconds": round(seconds, 2), "requests_per_second": round(len(plan) / seconds, 2),
            "p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "p99_ms": round(cuts[98], 1),
            **({"first_text_p50_ms": round(statistics.median(first_chunks), 1)} if first_chunks else {}),
            "statuses": dict(sorted(statuses.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder (e.g. runs/demo)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=400, help="requests per configuration (default 400)")
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of malformed requests (default 0.1)")
    parser.add_argument("--chat", action="store_true", help="causal-LM runs: /v1/chat/completions instead of /v1/completions")
    parser.add_argument("--max-tokens", type=int, default=8, help="causal-LM runs: tokens each request asks for (default 8)")
    parser.add_argument("--stream", action="store_true", help="causal-LM runs: streamed replies (latency to [DONE], "
                                                               "and the median time to the first text)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/serve_load[_chat].json)")
    args = parser.parse_args()
    suffix = ("_chat" if args.chat else "") + ("_stream" if args.stream else "")
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"serve_load{suffix}.json")
    from tunelab.rundir import open_run
    from tunelab.serving import ServeSettings

    _, cfg = open_run(args.run)
    plan = requests_for(cfg.task, args.requests, args.bad_share, chat=args.chat, max_tokens=args.max_tokens,
                        stream=args.stream)
    rows = []
    defaults = ServeSettings()
    batched = f"micro-batched ({defaults.max_batch_size}, {defaults.max_wait_ms:g} ms)"
    for label, batch_size in (("one request at a time", 1), (batched, defaults.max_batch_size)):
        port = free_port()
        server = start_server(args.run, port, batch_size)
        try:
            asyncio.run(load(port, plan[: max(args.clients, len(plan) // 10)], args.clients))  # warm-up
            row = {"server": label, "max_batch_size": batch_size, **asyncio.run(load(port, plan, args.clients)),
                   "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1)}
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        rows.append(row)
        print(row)
    speedup = rows[1]["requests_per_second"] / rows[0]["requests_per_second"]
    endpoint = plan[0][0]
    report = {"run": args.run, "task": cfg.task, "endpoint": endpoint, "max_tokens": args.max_tokens, "stream": args.stream,
              "clients": args.clients, "requests": args.requests,
              "bad_share": args.bad_share, "cpu_count": os.cpu_count(), "rows": rows,
              "batching_speedup": round(speedup, 2),
              "verdicts": [{"target": f"micro-batching {endpoint}{' (streamed)' if args.stream else ''} requests/s vs "
                                      f"one at a time, {args.clients} clients",
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
