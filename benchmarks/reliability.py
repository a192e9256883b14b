"""The figures behind docs/reliability.md: broken inputs tried, crashes survived, requests under abuse.

    python benchmarks/reliability.py [--requests 2000] [--clients 16] [--kills 3]

1. Every broken input in tests/data/bad/ through `tunelab prepare`: exit codes and tracebacks.
2. ``--kills`` trainings killed with SIGKILL at a random step, resumed with --resume, and compared
   with one uninterrupted run (largest weight difference, duplicated or missing log steps).
3. A load test on `tunelab serve` (loopback, ``--clients`` concurrent clients, 10% of the requests
   malformed, oversized, unauthorized or aimed at the wrong route): responses by status class,
   bad requests answered with a JSON 4xx, requests lost, the server's peak RSS, health afterwards.

Prints a table, writes benchmarks/results/reliability.json and the figures table in
docs/reliability.md. The tests check the same properties on smaller numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import QUIET_ENV, ROOT, WORK, machine, write_result

TESTS = ROOT / "tests"
DOC = ROOT / "docs" / "reliability.md"
API_KEY = "reliability-key-0123"


@dataclass
class Call:
    kind: str           # "good" or what is wrong with it
    method: str
    path: str
    content: bytes
    headers: dict


def _bad_calls(task: str, key: str) -> dict[str, Call]:
    """One request per way of getting it wrong; each must be answered with a JSON 4xx."""
    path = "/v1/classify" if task == "classification" else "/v1/completions"
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    field = "input" if task == "classification" else "prompt"

    def post(kind, body, headers=auth, route=path, method="POST"):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Call(kind, method, route, content, headers)

    return {c.kind: c for c in [
        post("truncated JSON", b'{"' + field.encode() + b'": "half'),
        post("not JSON", b"\xff\xfe\x00garbage"),
        post("JSON list body", [1, 2, 3]),
        post("missing field", {"model": "x"}),
        post("wrong type", {field: 42}),
        post("empty text", {field: "   "}),
        post("empty list", {field: []}),
        post("too many inputs", {field: ["x"] * 500}) if task == "classification"
        else post("max_tokens above cap", {field: "hi", "max_tokens": 100000}),
        post("oversized body", {field: "x" * 2_000_000}),
        post("no API key", {field: "hi"}, headers={"Content-Type": "application/json"}),
        post("wrong API key", {field: "hi"}, headers={"Authorization": "Bearer nope"}),
        post("unknown route", {field: "hi"}, route="/v1/nothing"),
        post("wrong method", b"", method="DELETE"),
    ]}


def abuse_plan(task: str, count: int, bad_share: float, key: str = API_KEY, seed: int = 0) -> list[Call]:
    """``count`` requests; a ``bad_share`` of them malformed in every way ``_bad_calls`` knows, in turn."""
    rng = random.Random(seed)
    bad = list(_bad_calls(task, key).values())
    path = "/v1/classify" if task == "classification" else "/v1/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    plan, n_bad = [], 0
    for i in range(count):
        if rng.random() < bad_share:
            plan.append(bad[n_bad % len(bad)])
            n_bad += 1
            continue
        # Good requests include awkward but valid text: unicode, NUL characters, very long inputs.
        text = rng.choice([f"where is my parcel number {i}?", f"refund {i} \u00e9\u4e2d\U0001f600", f"nul\u0000char {i}",
                           "long " * 20000])
        body = {"input": text} if task == "classification" else {"prompt": text[:200], "max_tokens": 4}
        plan.append(Call("good", "POST", path, json.dumps(body).encode(), headers))
    return plan


async def hammer(port: int, plan: list[Call], clients: int) -> list[dict]:
    """Send ``plan`` from ``clients`` concurrent connections; one result per request, in plan order."""
    results: list[dict | None] = [None] * len(plan)
    order = iter(range(len(plan)))

    async def client(http: httpx.AsyncClient):
        for index in order:
            call = plan[index]
            start = time.perf_counter()
            try:
                reply = await http.request(call.method, call.path, content=call.content, headers=call.headers)
                try:
                    error = reply.json().get("error") if reply.status_code >= 400 else None
                    json_error = isinstance(error, dict) and bool(error.get("message"))
                except (ValueError, AttributeError):
                    json_error = False
                results[index] = {"kind": call.kind, "status": reply.status_code, "json_error": json_error,
                                  "ms": (time.perf_counter() - start) * 1000}
            except httpx.HTTPError as err:
                results[index] = {"kind": call.kind, "status": None, "json_error": False, "error": repr(err)}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return results


def summarize(results: list[dict]) -> dict:
    """What the load test promises, counted: no 5xx, bad requests as JSON 4xx, good ones 200, none lost."""
    good = [r for r in results if r["kind"] == "good"]
    bad = [r for r in results if r["kind"] != "good"]
    classes = Counter("lost" if r["status"] is None else f"{r['status'] // 100}xx" for r in results)
    latencies = sorted(r["ms"] for r in good if r["status"] == 200)
    return {
        "requests": len(results), "good": len(good), "bad": len(bad),
        "by_class": dict(sorted(classes.items())),
        "by_status": dict(sorted(Counter(str(r["status"]) for r in results).items())),
        "bad_by_kind": {kind: sorted({str(r["status"]) for r in bad if r["kind"] == kind})
                        for kind in sorted({r["kind"] for r in bad})},
        "server_errors": sum(1 for r in results if r["status"] is not None and r["status"] >= 500),
        "lost": classes.get("lost", 0),
        "bad_not_json_4xx": sum(1 for r in bad if not (r["status"] and 400 <= r["status"] < 500 and r["json_error"])),
        "good_not_200": sum(1 for r in good if r["status"] != 200),
        "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
    }


def corpus() -> dict:
    """Every case of tests/data/bad through the CLI in this process: exit codes, tracebacks, leftovers."""
    import contextlib
    import io
    import tempfile

    sys.path.insert(0, str(TESTS))
    from test_reliability import CASES, case_config
    from tunelab.cli import commands as cli

    codes, tracebacks, written = Counter(), 0, 0
    for name, case in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            config = case_config(Path(tmp), name, case)
            before = set(Path(tmp).iterdir())
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                codes[cli(["prepare", str(config)])] += 1
            tracebacks += "Traceback" in err.getvalue()
            written += set(Path(tmp).iterdir()) != before
    return {"inputs": len(CASES), "exit_codes": {str(k): v for k, v in sorted(codes.items())},
            "tracebacks": tracebacks, "outputs_written": written}


def crashes(kills: int) -> dict:
    """SIGKILL at random steps then --resume, and one SIGTERM, each compared with an uninterrupted run."""
    import shutil

    sys.path.insert(0, str(TESTS))
    from safetensors.torch import load_file

    from test_crash import MAX_STEPS, SETTINGS, finish, logged_steps, make_config, train, wait_for_step

    work = WORK / "reliability"
    shutil.rmtree(work, ignore_errors=True)
    reference = make_config(work / "reference")
    code, output = finish(train(reference))
    assert code == 0, output
    expected = load_file(reference.parent / "run" / "adapter" / "adapter_model.safetensors")
    rng = random.Random()
    trials = []
    for i in range(kills + 1):
        how = signal.SIGKILL if i < kills else signal.SIGTERM
        config = make_config(work / f"trial-{i}")
        run_dir = config.parent / "run"
        process = train(config)
        stopped_at = wait_for_step(process, run_dir, rng.randint(SETTINGS["train"]["eval_steps"] + 1, MAX_STEPS - 4))
        process.send_signal(how)
        stop_code, _ = finish(process)
        code, output = finish(train(config, "--resume"))
        got = load_file(run_dir / "adapter" / "adapter_model.safetensors") if code == 0 else {}
        diff = max(((expected[k] - got[k]).abs().max().item() for k in expected), default=float("nan")) if got else None
        steps = logged_steps(run_dir)
        trials.append({"signal": signal.Signals(how).name, "stopped_at_step": stopped_at, "exit_code": stop_code,
                       "resumed": code == 0, "max_abs_weight_diff": diff,
                       "log_steps_exact": steps == list(range(1, MAX_STEPS + 1))})
        print(trials[-1])
    survived = sum(t["resumed"] and t["max_abs_weight_diff"] is not None and t["max_abs_weight_diff"] <= 1e-5
                   and t["log_steps_exact"] for t in trials)
    return {"steps": MAX_STEPS, "trials": trials, "survived": survived}


def load_test(requests: int, clients: int, bad_share: float) -> dict:
    """`tunelab serve` on a MiniLM run, hammered as the docstring says."""
    from serve_load import free_port, start_server

    from tunelab.machine import peak_rss_mb

    run_dir = _minilm_run()
    port = free_port()
    os.environ["TUNELAB_API_KEY"] = API_KEY
    server = start_server(str(run_dir), port, batch_size=16)
    try:
        asyncio.run(hammer(port, abuse_plan("classification", 200, bad_share, seed=1), clients))
        warm_rss = current_rss_mb(server.pid)
        started = time.perf_counter()
        summary = summarize(asyncio.run(hammer(port, abuse_plan("classification", requests, bad_share), clients)))
        seconds = time.perf_counter() - started
        summary.update(seconds=round(seconds, 1), requests_per_second=round(requests / seconds, 1),
                       rss_growth_mb=round(current_rss_mb(server.pid) - warm_rss, 1),
                       server_peak_rss_mb=round(peak_rss_mb(server.pid), 1), clients=clients,
                       healthy_after=httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    return summary


def _minilm_run() -> Path:
    import yaml

    from tunelab.config import from_dict
    from tunelab.training import train

    folder = WORK / "reliability-serve"
    rows = [{"text": f"{w} question {i} about my {w}", "label": label}
            for i in range(40) for w, label in (("refund", "billing"), ("parcel", "shipping"), ("password", "account"))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = from_dict(yaml.safe_load(f"""
        task: classification
        data: {{train: {folder / 'train.jsonl'}}}
        train: {{max_steps: 20, report_to: [none]}}
        output: {{dir: {folder / 'run'}, overwrite: true}}"""))
    return train.run(cfg)


def current_rss_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS), in MiB; ``peak_rss_mb`` gives its high-water mark."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def figures_table(report: dict) -> str:
    c, k, s = report["corpus"], report["crashes"], report["serve"]
    kills = [t for t in k["trials"] if t["signal"] == "SIGKILL"]
    worst = max((t["max_abs_weight_diff"] or 0.0) for t in k["trials"])
    lines = [
        "| what | measured |", "|---|---|",
        f"| broken inputs run through the CLI | {c['inputs']}: exit codes {c['exit_codes']}, "
        f"{c['tracebacks']} tracebacks, {c['outputs_written']} with output written |",
        f"| training killed (SIGKILL at a random step) and resumed | {len(kills)}, stopped at steps "
        f"{', '.join(str(t['stopped_at_step']) for t in kills)} of {k['steps']} |",
        f"| stopped with SIGTERM and resumed | {len(k['trials']) - len(kills)} |",
        f"| crashes survived (resumed, weights within 1e-5, every step logged once) | {k['survived']} of "
        f"{len(k['trials'])}; largest weight difference {worst:.1e} |",
        f"| requests to `tunelab serve` ({s['clients']} clients) | {s['requests']}: {s['good']} good, {s['bad']} bad |",
        f"| responses by class | {s['by_class']} |",
        f"| responses by status | {s['by_status']} |",
        f"| bad requests not answered with a JSON 4xx / good ones not 200 / lost | {s['bad_not_json_4xx']} / "
        f"{s['good_not_200']} / {s['lost']} |",
        f"| server RSS: peak, growth over the run | {s['server_peak_rss_mb']:.0f} MB, {s['rss_growth_mb']:+.0f} MB |",
        f"| throughput, good-request latency p50 / p99 | {s['requests_per_second']} req/s, {s['p50_ms']} / "
        f"{s['p99_ms']} ms |",
        f"| healthy after the load | {'yes' if s['healthy_after'] else 'no'} |",
    ]
    return "\n".join(lines)


def main() -> None:
    import argparse

    from tunelab.tables import replace_marked

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests in the load test (default 2000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of bad requests (default 0.1)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILL-and-resume trials (default 3)")
    args = parser.parse_args()
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    report = {"machine": machine(), "corpus": corpus()}
    print("corpus:", report["corpus"])
    report["crashes"] = crashes(args.kills)
    report["serve"] = load_test(args.requests, args.clients, args.bad_share)
    print("serve:", report["serve"])
    path = write_result("reliability", report)
    table = figures_table(report)
    print(table)
    DOC.write_text(replace_marked(DOC.read_text(encoding="utf-8"), "measured:reliability", table), encoding="utf-8")
    print(f"wrote {path} and the figures in {DOC}")


if __name__ == "__main__":
    main()
