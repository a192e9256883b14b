"""What examples 02 and 03 share: the options that pick the model and the data, and the data section they give."""

from __future__ import annotations

import argparse

BUILTIN_TRAIN, BUILTIN_TEST = "builtin:support_intents/train.jsonl", "builtin:support_intents/test.jsonl"


def add_model_and_data_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--model", default="builtin:minilm", help="a hub id or a local folder (default: MiniLM)")
    parser.add_argument("--data", help="training file (default: the built-in support intents)")
    parser.add_argument("--test", help="held-out test file (default: built-in test split, or 10%% of --data)")
    parser.add_argument("--task", choices=["classification", "causal_lm"], default="classification",
                        help="task of --data (default classification)")
    parser.add_argument("--epochs", type=float, default=3, help="training epochs (default 3)")
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")


def data_section(args: argparse.Namespace) -> dict:
    """The built-in intents with their own test split, or the user's files (test split off train if not given)."""
    return {"train": args.data or BUILTIN_TRAIN, "test": args.test or (None if args.data else BUILTIN_TEST),
            "max_length": 64 if args.task == "classification" else 256}
