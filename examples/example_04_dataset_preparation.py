"""Example 4: preparing custom datasets (classification, chat, generation) from raw files, then measuring them.

What it demonstrates
    1. Raw files in three shapes, as they arrive from real systems: a ticket export (CSV, columns
       message/queue), chat logs in ShareGPT's {"conversations": [{"from", "value"}]} layout (JSONL), and
       question/context/answer pairs (TSV). tunelab reads each with ``data.*_field`` settings that name
       the columns; nothing is converted by hand.
    2. ``tunelab prepare`` on each: validation, deduplication, a seeded (stratified) split, tokenization
       with prompt masking, and a summary of rows, token lengths and leakage.
    3. A deliberately broken file: every bad row reported with its file, line and field, and nothing written.
    4. Fine-tuning on each dataset, then perplexity, BLEU and ROUGE-L (chat, generation) and accuracy
       (classification) before and after, on held-out data.

    python examples/example_04_dataset_preparation.py                  # all three formats (~8 min)
    python examples/example_04_dataset_preparation.py --formats chat,generation --causal-model gpt2
    python examples/example_04_dataset_preparation.py --data my_tickets.csv data.text_field=body data.label_field=team

What to look for
    - the training example in each summary: for chat and generation only the reply is [loss]; the
      prompt is masked, so the model learns to answer, not to echo questions;
    - the broken file's report: one line per problem, each naming the line and the field;
    - before/after: the tiny default causal model starts from random weights, so its "before" is noise;
      point --causal-model at a real model (distilgpt2, a local folder) for a meaningful baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.data import prepare
from tunelab.data.builtin import builtin_data_path
from tunelab.data.report import summary_text
from tunelab.errors import DataError, TunelabError
from tunelab.evaluation import evaluate
from tunelab.rundir import read_json
from tunelab.tables import text_table
from tunelab.training import train

SYSTEM = "You are a customer support agent for an online shop."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config settings for every dataset, e.g. data.max_rows=100 train.epochs=1")
    parser.add_argument("--formats", default="classification,chat,generation",
                        help="which raw datasets to build (default: all three)")
    parser.add_argument("--data", help="your own raw file instead of the built-in ones (name its columns with "
                                       "data.text_field=... data.label_field=... overrides)")
    parser.add_argument("--task", choices=["classification", "causal_lm"], default="classification",
                        help="task of --data (default classification)")
    parser.add_argument("--model", default="builtin:minilm", help="classification model (default: MiniLM)")
    parser.add_argument("--causal-model", default="builtin:tiny-llama",
                        help="chat/generation model: a hub id or folder (default: a tiny offline Llama)")
    parser.add_argument("--epochs", type=float, help="training epochs (default: 3 classification, 8 causal)")
    parser.add_argument("--out", default="runs/example_04", help="folder for raw files and runs (default runs/example_04)")
    return parser.parse_args(argv)


# --- 1. raw files --------------------------------------------------------------------------------------------

def _builtin(name: str) -> list[dict]:
    return [json.loads(line) for line in builtin_data_path(name).read_text(encoding="utf-8").splitlines()]


def write_raw_files(raw: Path) -> dict[str, dict]:
    """The built-in data re-shaped into three raw layouts; returns each dataset's data.* settings."""
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(raw / f"tickets_{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["ticket_id", "message", "queue"])
            for i, row in enumerate(_builtin(f"support_intents/{split}.jsonl")):
                writer.writerow([f"T{i:05d}", row["text"], row["label"]])
    pairs = _builtin("support_instructions/train.jsonl")
    with open(raw / "conversations.jsonl", "w", encoding="utf-8") as f:
        for row in pairs:
            turns = [{"from": "system", "value": SYSTEM},
                     {"from": "human", "value": f"{row['instruction']}\n\n{row['input']}".strip()},
                     {"from": "gpt", "value": row["output"]}]
            f.write(json.dumps({"id": len(turns), "conversations": turns}, ensure_ascii=False) + "\n")
    with open(raw / "answers.tsv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["question", "context", "answer"])
        writer.writerows([row["instruction"], row["input"], row["output"]] for row in pairs)
    return {
        "classification": {"task": "classification", "data": {"train": str(raw / "tickets_train.csv"),
                           "test": str(raw / "tickets_test.csv"), "text_field": "message", "label_field": "queue",
                           "max_length": 64}},
        "chat": {"task": "causal_lm", "data": {"train": str(raw / "conversations.jsonl"), "format": "chat",
                 "max_length": 192}},
        "generation": {"task": "causal_lm", "data": {"train": str(raw / "answers.tsv"), "format": "instruction",
                       "instruction_field": "question", "input_field": "context", "output_field": "answer",
                       "max_length": 192}},
    }


def write_broken_file(raw: Path) -> Path:
    """A ticket file with the mistakes real exports contain."""
    lines = ['{"message": "Where is my parcel? It is late.", "queue": "delivery_problem"}',
             '{"message": "I want my money back", "queue": "refund_request"',         # truncated JSON
             '{"message": "Please cancel my order 1234"}',                            # no label
             '{"message": "   ", "queue": "cancel_order"}',                           # blank text
             '{"message": ["not", "a", "string"], "queue": "payment_issue"}',         # wrong type
             '{"message": "Card declined twice", "queue": "payment_issue"}']
    path = raw / "tickets_broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- 2-4. prepare, show errors, fine-tune and measure --------------------------------------------------------

def config_for(name: str, spec: dict, args: argparse.Namespace, out: Path):
    classification = spec["task"] == "classification"
    tree = {**spec, "model": {"name": args.model if classification else args.causal_model},
            "method": {"name": "lora" if classification else "full"},
            "train": {"epochs": args.epochs or (3 if classification else 8), "batch_size": 16 if classification else 8,
                      "learning_rate": 2e-3 if classification else 3e-3},
            "eval": {"max_new_tokens": 32},
            "output": {"dir": str(out / name), "overwrite": True}}
    return from_dict(tree, args.overrides, name=name, source=f"example_04 {name}")


def show_broken(path: Path, args: argparse.Namespace, out: Path) -> None:
    spec = {"task": "classification", "data": {"train": str(path), "text_field": "message", "label_field": "queue"}}
    try:
        prepare.run(config_for("broken", spec, args, out))
    except DataError as err:
        print(f"tunelab refused {path.name} and wrote nothing:\n  " + "\n  ".join(err.problems))
        return
    raise AssertionError(f"{path} was accepted, but it is broken on purpose")


def before_after(name: str, report: dict) -> list[list]:
    keep = ("accuracy", "macro_f1") if report["task"] == "classification" else ("perplexity", "bleu", "rougeL")
    return [[name, metric, row["base"], row["tuned"], f"{row['delta']:+.4g}"]
            for metric, row in report["metrics"].items() if metric in keep]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.data:
        datasets = {"your data": {"task": args.task, "data": {"train": args.data}}}
    else:
        datasets = write_raw_files(out / "raw")
        wanted = [f.strip() for f in args.formats.split(",") if f.strip()]
        unknown = sorted(set(wanted) - set(datasets))
        if unknown:
            print(f"example_04: --formats: unknown {', '.join(unknown)}; valid: {', '.join(datasets)}", file=sys.stderr)
            return 2
        datasets = {name: datasets[name] for name in wanted}
        print(f"[1/4] wrote raw files to {out / 'raw'}/: " + ", ".join(p.name for p in sorted((out / "raw").iterdir())))
    configs = {name: config_for(name.replace(" ", "_"), spec, args, out) for name, spec in datasets.items()}
    rows = []
    try:
        for name, cfg in configs.items():
            print(f"\n[2/4] tunelab prepare: {name} ({cfg.data.train})")
            print(summary_text(read_json(prepare.run(cfg) / "data_report.json")))
        if not args.data:
            print("\n[3/4] a deliberately broken file:")
            show_broken(write_broken_file(out / "raw"), args, out)
        for name, cfg in configs.items():
            print(f"\n[4/4] fine-tuning {cfg.model.name} ({cfg.method.name}) on {name}, then scoring before/after ...")
            rows += before_after(name, evaluate.run(train.run(cfg), split="test"))
    except TunelabError as err:
        report_problems(err)
        return 2
    print("\n== before vs after fine-tuning (held-out test split)")
    print(text_table(["dataset", "metric", "before", "after", "delta"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
