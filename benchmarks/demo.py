"""The README's main job, timed: `tunelab demo` in a fresh process, as a new user runs it.

    python benchmarks/demo.py [--repeats 1] [--out benchmarks/results]

Runs ``tunelab demo --out benchmarks/.work/demo`` ``--repeats`` times, each in its own process with
the built-in models already cached, and reports the median wall time against a goal of ten minutes
on a 2-core CPU (the README says about three), with the demo's own accuracy figures. Prints a table and
writes ``OUT/demo.json``. A benchmark, not a test: the suite checks what the demo computes, this
measures how long it takes on this machine.
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

GOAL_SECONDS = 600


def run_once(out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tunelab", "demo", "--out", str(out)],
                          env={**os.environ, **QUIET_ENV}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tunelab demo failed (exit code {done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"seconds": round(seconds, 1), "base_accuracy": summary["base"]["accuracy"],
            "tuned_accuracy": summary["tuned"]["accuracy"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="demo runs; the median is reported (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for demo.json")
    args = parser.parse_args(argv)
    runs = [run_once(WORK / "demo") for _ in range(args.repeats)]
    median = statistics.median(r["seconds"] for r in runs)
    result = {"machine": machine(), "runs": runs, "median_seconds": median,
              "verdicts": [{"target": "`tunelab demo` wall time, models cached",
                            "goal": f"< {GOAL_SECONDS} s", "measured": f"{median:g} s",
                            "met": median < GOAL_SECONDS}]}
    print(markdown_table(["run", "seconds", "base accuracy", "tuned accuracy"],
                         [[i + 1, r["seconds"], r["base_accuracy"], r["tuned_accuracy"]] for i, r in enumerate(runs)]))
    print(f"wrote {write_result('demo', result, args.out)}")


if __name__ == "__main__":
    main()
