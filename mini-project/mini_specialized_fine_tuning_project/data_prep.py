"""Step 1: the data of both models: gather it, check every row, split it, tokenize it, report on it.

    python data_prep.py                                  # tunelab's built-in support tickets (10 queues)
    python data_prep.py --data ../../../shared/data/banking77   # BANKING77 (77 queues): a folder with
                                                         #   train.csv and test.csv, columns text,category
    python data_prep.py --data my_tickets.csv --text-column body --label-column team
    python data_prep.py data.max_rows=300 --drafter-set data.max_rows=100   # router and drafter settings

Router: writes models/data/{train,test}.jsonl ({"text", "label"} per line), then runs `tunelab prepare` on
them: every bad row is reported with its file and line, duplicates are removed, a validation split is
taken from train (stratified, seeded), test rows that also occur in train are counted (leakage), and the
summary shows rows per split, label counts and token lengths.

Drafter: its data is tunelab's built-in support replies (the data section of the repository's
configs/support-replies-smollm2.yaml, which the drafter's config reads): customer messages over the same
10 intents, each with the reply in the shop's house style. It is checked and tokenized with SmolLM2's chat
template the same way; its report shows how many tokens the loss sees (the replies only).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from project import DATA, add_overrides, config, drafter_config, main_guard, timed

from tunelab.data import prepare
from tunelab.data.builtin import builtin_data_path
from tunelab.data.report import summary_text
from tunelab.errors import DataError
from tunelab.rundir import read_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_overrides(parser)
    parser.add_argument("--data", help="a CSV/JSONL file (train only; test is split off) or a folder with "
                                       "train.csv and test.csv (default: the built-in support tickets)")
    parser.add_argument("--text-column", default="text", help="column holding the ticket text (default text)")
    parser.add_argument("--label-column", help="column holding the queue (default: label, or category for CSV folders)")
    return parser.parse_args(argv)


def read_rows(path: Path, text: str, label: str) -> list[dict]:
    """{"text", "label"} rows from a CSV or JSONL file; a row lacking a column is kept as is for prepare to report."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise DataError(f"{path}: expected a .csv or .jsonl file")
    return [{"text": r.get(text), "label": r.get(label)} for r in rows]


def gather(args: argparse.Namespace) -> dict[str, list[dict]]:
    if args.data is None:
        return {split: read_rows(builtin_data_path(f"support_intents/{split}.jsonl"), "text", "label")
                for split in ("train", "test")}
    source = Path(args.data)
    if source.is_dir():
        label = args.label_column or "category"
        missing = [name for name in ("train.csv", "test.csv") if not (source / name).is_file()]
        if missing:
            raise DataError(f"{source}: expected train.csv and test.csv in the folder; missing {', '.join(missing)}")
        return {split: read_rows(source / f"{split}.csv", args.text_column, label) for split in ("train", "test")}
    if not source.is_file():
        raise DataError(f"--data {source}: no such file or folder")
    return {"train": read_rows(source, args.text_column, args.label_column or "label")}


def write(splits: dict[str, list[dict]]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "test.jsonl").unlink(missing_ok=True)
    for split, rows in splits.items():
        with open(DATA / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"wrote {DATA / f'{split}.jsonl'} ({len(rows):,} tickets)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body():
        with timed("data_prep.py"):
            splits = gather(args)
            write(splits)
            run_dir = prepare.run(config(args.overrides))
            print(summary_text(read_json(run_dir / "data_report.json")))
            print("\nthe drafter's data (built-in support replies):")
            run_dir = prepare.run(drafter_config(args.drafter_set))
            print(summary_text(read_json(run_dir / "data_report.json")))
        print("next: python train.py")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
