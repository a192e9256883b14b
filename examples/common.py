"""What the examples share: the real chat model and its data by default, the LoRA settings of the reference
chat config, a --quick mode, and the options that point them at your own model and data."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from tunelab.config.load import read_yaml

CHAT_MODEL = "builtin:smollm2-135m"          # SmolLM2-135M-Instruct, a real Llama-architecture chat model, offline
CHAT_TRAIN = "builtin:support_instructions/train.jsonl"   # customer messages answered in one shop's house style
CHAT_TEST = "builtin:support_instructions/test.jsonl"
QUICK_MODEL = "builtin:tiny-llama"           # random weights: for checking that a script runs, not what it finds
QUICK_SETTINGS = ["data.max_rows=48", "train.max_steps=4", "eval.max_examples=8", "eval.max_new_tokens=8",
                  "quantize.timing_repeats=2"]
# The reference config for the chat model: the examples take their LoRA settings from it, so they cannot drift.
REFERENCE_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "support-replies-smollm2.yaml"

# the classification path of examples 01, 02 and 04: MiniLM on the built-in support intents
INTENTS_MODEL = "builtin:minilm"
INTENTS_TRAIN, INTENTS_TEST = "builtin:support_intents/train.jsonl", "builtin:support_intents/test.jsonl"


def add_chat_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """--model, --data, --test, --epochs, --out and --quick, defaulting to the chat model on the built-in replies."""
    parser.add_argument("--model", help=f"a hub id or a local folder (default {CHAT_MODEL}; {QUICK_MODEL} with --quick)")
    parser.add_argument("--data", help="training file: instruction/chat/text rows in .jsonl/.json/.csv/.tsv/.parquet "
                                       "(default: the built-in support replies)")
    parser.add_argument("--test", help="held-out test file (default: the built-in test replies, or 10%% of --data)")
    parser.add_argument("--epochs", type=float, help="training epochs (default: the example's own)")
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run in seconds: {QUICK_MODEL} (random weights) and "
                             f"{' '.join(QUICK_SETTINGS)}; the numbers mean nothing")


def chat_model(args: argparse.Namespace) -> str:
    return args.model or (QUICK_MODEL if args.quick else CHAT_MODEL)


def chat_data_section(args: argparse.Namespace) -> dict:
    """The built-in replies with their own test split, or the user's files (test split off train if not given);
    5% of train held out for validation, as in the reference config."""
    return {"train": args.data or CHAT_TRAIN, "test": args.test or (None if args.data else CHAT_TEST),
            "max_length": 256, "validation_fraction": 0.05}


def intents_data_section(args: argparse.Namespace) -> dict:
    """The built-in intents with their own test split, or the user's text/label file (test split off train if
    not given)."""
    return {"train": args.data or INTENTS_TRAIN, "test": args.test or (None if args.data else INTENTS_TEST),
            "max_length": 64}


@functools.cache
def _reference() -> dict:
    return read_yaml(REFERENCE_CONFIG)


def chat_lora() -> dict:
    """The reference config's ``lora:`` section (r, lora_alpha, lora_dropout, target_modules)."""
    return dict(_reference()["lora"])


def chat_learning_rate() -> float:
    """The reference config's LoRA learning rate."""
    return float(_reference()["train"]["learning_rate"])


def lora_summary() -> str:
    """The reference LoRA settings in words, for --help: 'r 16, alpha 32, dropout 0.05, all-linear, at 0.001'."""
    lora = chat_lora()
    modules = lora["target_modules"]
    return (f"r {lora['r']}, alpha {lora['lora_alpha']:g}, dropout {lora['lora_dropout']:g}, "
            f"{modules if isinstance(modules, str) else ','.join(modules)}, at {chat_learning_rate():g}")


def overrides(args: argparse.Namespace) -> list[str]:
    """The user's KEY=VALUE settings, after --quick's (so the user's win)."""
    return (QUICK_SETTINGS if args.quick else []) + list(getattr(args, "overrides", []))
