"""One process vs two data-parallel processes on this machine: the figures in docs/scaling.md.

    python benchmarks/scaling.py [--steps 60] [--repeats 3]

MiniLM LoRA on the built-in support-intent data, the same number of optimizer steps each time,
evaluation off so only training is timed. Contestants, each in its own process (`tunelab train`):
one process with the thread count tunelab measures at start, one process with one thread, and
`--nproc 2` (torchrun, one thread each) at the same global batch and at twice the global batch.
Reports the median samples/s over ``--repeats`` runs and ratios to the single process, prints a
table, writes benchmarks/results/scaling.json and the table in docs/scaling.md (``--render-only``
rebuilds both from the last JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from common import QUIET_ENV, RESULTS, ROOT, WORK, machine, ratio, write_result

DOC = ROOT / "docs" / "scaling.md"
CONTESTANTS = [  # (label, processes, per-process batch, extra overrides)
    ("1 process, threads measured at start", 1, 16, []),
    ("1 process, 1 thread", 1, 16, ["train.threads=1"]),
    ("2 processes x 1 thread, global batch 16", 2, 8, []),
    ("2 processes x 1 thread, global batch 32", 2, 16, []),
]


def train_once(processes: int, batch: int, extra: list[str], steps: int, folder: Path) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "tunelab", "train", str(ROOT / "configs" / "support-intents-lora.yaml"),
               f"output.dir={folder}", f"train.batch_size={batch}", f"train.max_steps={steps}",
               "train.eval_strategy=no", "train.report_to=[none]", *extra, "--nproc", str(processes)]
    done = subprocess.run(command, env={**os.environ, **QUIET_ENV}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {key: metrics[key] for key in ("train_seconds", "train_samples_per_second", "final_train_loss",
                                          "threads", "processes", "global_batch")}


def summarize(runs: dict[str, list[dict]], steps: int) -> list[dict]:
    """One row per contestant: medians over its runs, and ratios to the two single-process rows.

    Samples/s counts every sample of every process over the wall time of the Trainer's train call
    (the Trainer's own figure leaves out its start-up, which is longer with several processes).
    """
    rows = []
    for label, results in runs.items():
        rows.append({
            "run": label, "global_batch": results[0]["global_batch"], "threads": results[0]["threads"],
            "samples_per_second": round(statistics.median(steps * r["global_batch"] / r["train_seconds"]
                                                          for r in results), 1),
            "trainer_samples_per_second": round(statistics.median(r["train_samples_per_second"] for r in results), 1),
            "final_train_loss": statistics.median(r["final_train_loss"] for r in results), "runs": results})
    for row in rows:
        row["vs_single"] = ratio(row["samples_per_second"], rows[0]["samples_per_second"])
        row["vs_one_thread"] = ratio(row["samples_per_second"], rows[1]["samples_per_second"])
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| run | global batch | threads per process | samples/s (median) | vs 1 process, measured threads | "
             "vs 1 process, 1 thread | final train loss |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['global_batch']} | {r['threads']} | {r['samples_per_second']} | "
                     f"{r['vs_single']}x | {r['vs_one_thread']}x | {r['final_train_loss']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    from tunelab.tables import replace_marked

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contestant; the median counts (default 3)")
    parser.add_argument("--render-only", action="store_true", help="rebuild the table from the last results")
    args = parser.parse_args()
    if args.render_only:
        last = json.loads((RESULTS / "scaling.json").read_text())
        report = {**last, "rows": summarize({r["run"]: r["runs"] for r in last["rows"]}, last["steps"])}
    else:
        runs: dict[str, list[dict]] = {label: [] for label, *_ in CONTESTANTS}
        for _ in range(args.repeats):  # interleaved, so a noisy minute hurts every contestant alike
            for label, processes, batch, extra in CONTESTANTS:
                result = train_once(processes, batch, extra, args.steps, WORK / "scaling" / "run")
                runs[label].append(result)
                print(f"{label}: {result}")
        report = {"machine": machine(), "steps": args.steps, "repeats": args.repeats,
                  "rows": summarize(runs, args.steps)}
    path = write_result("scaling", report)
    text = table(report["rows"])
    print(text)
    DOC.write_text(replace_marked(DOC.read_text(encoding="utf-8"), "measured:scaling", text), encoding="utf-8")
    print(f"wrote {path} and the table in {DOC}")


if __name__ == "__main__":
    main()
