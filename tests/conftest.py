"""Shared fixtures: offline settings, a tiny causal LM, and helpers to write data and configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Nothing in the tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _tunelab_cache(tmp_path_factory):
    """Built-in tiny models are built once per test session, outside the user's cache."""
    os.environ["TUNELAB_CACHE"] = str(tmp_path_factory.mktemp("tunelab-cache"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tunelab.tiny import make_tiny_model

    return make_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"), hidden=32, layers=2, heads=4,
                           vocab_size=600)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def intent_rows(n_per_label: int = 10, labels=("billing", "shipping", "account")) -> list[dict]:
    return [{"text": f"message {i} about {label} number {i * 7 + len(label)}", "label": label}
            for label in labels for i in range(n_per_label)]


def write_config(folder: Path, **sections) -> Path:
    """A config file under ``folder`` whose run goes to ``folder/run``; sections override the defaults."""
    import yaml

    tree = {"task": "classification", "model": {"name": "builtin:minilm"},
            "data": {"train": str(folder / "train.jsonl")}, "output": {"dir": str(folder / "run")}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from tunelab.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
