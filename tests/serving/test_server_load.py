"""The server under load and abuse: 2,000 requests from 16 clients, 10% of them bad, answered every one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import free_port, train_config, wait_healthy
from tunelab.config import load_config
from tunelab.machine import peak_rss_mb
from tunelab.training import train

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from reliability import API_KEY, abuse_plan, current_rss_mb, hammer, summarize  # noqa: E402

REQUESTS, CLIENTS, BAD_SHARE = 2000, 16, 0.1
RSS_GROWTH_LIMIT_MB = 150   # after warm-up; a leak of one buffer per request would pass this within 2,000
RSS_PEAK_LIMIT_MB = 2048


def test_the_plan_has_every_kind_of_bad_request_in_the_right_share():
    plan = abuse_plan("classification", REQUESTS, BAD_SHARE)
    bad = [c for c in plan if c.kind != "good"]
    assert len(plan) == REQUESTS and 0.08 < len(bad) / REQUESTS < 0.12
    assert {"oversized body", "truncated JSON", "no API key", "unknown route"} <= {c.kind for c in bad}


@pytest.mark.slow
def test_2000_requests_with_10_percent_bad_all_answered_no_5xx_bounded_memory(tmp_path, tiny_bert):
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 2, "threads": 1})))
    port = free_port()
    env = {**os.environ, "TUNELAB_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", str(run_dir), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port, server)
        asyncio.run(hammer(port, abuse_plan("classification", 200, BAD_SHARE, seed=1), CLIENTS))  # warm-up
        warm = current_rss_mb(server.pid)
        summary = summarize(asyncio.run(hammer(port, abuse_plan("classification", REQUESTS, BAD_SHARE), CLIENTS)))
        grown, peak = current_rss_mb(server.pid) - warm, peak_rss_mb(server.pid)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        after = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"input": "still there?"},
                           headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    print(summary, f"rss growth {grown:.0f} MB, peak {peak:.0f} MB")
    assert summary["requests"] == REQUESTS and summary["lost"] == 0, summary
    assert summary["server_errors"] == 0, (summary, err[-3000:])
    assert summary["bad_not_json_4xx"] == 0 and summary["good_not_200"] == 0, summary
    assert summary["bad"] >= 0.08 * REQUESTS
    assert grown < RSS_GROWTH_LIMIT_MB and peak < RSS_PEAK_LIMIT_MB, (grown, peak)
    assert health.status_code == 200 and after.status_code == 200
    assert "Traceback" not in err
