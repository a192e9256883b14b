"""Shared fixtures: offline settings, a tiny causal LM, and helpers to write data and configs."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

# The studio's fixtures (a stand-in training child, a workspace with data), for tests/studio/.
pytest_plugins = ["studio_support", "example_support"]

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
    from tunelab.models.tiny import make_tiny_model

    # Widths in multiples of 64 (hidden 64, MLP 192): what bitsandbytes' 4-bit CPU kernel takes.
    return make_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"), hidden=64, layers=2, heads=4,
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
    from tunelab.cli.commands import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 64, MLP 128: widths the 4-bit kernel takes) with MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunelab.models.resolve import resolve_model

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("builtin:minilm"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # deterministic steps
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train_config(folder: Path, model: Path, task: str = "classification", **sections) -> Path:
    """A fast training config on tiny data written into ``folder``."""
    if task == "classification":
        rows = [{"text": f"{word} item {i}", "label": word} for word in ("alpha", "beta", "gamma") for i in range(12)]
    else:
        rows = [{"instruction": f"Say {word}.", "input": "", "output": f"{word} {word}."}
                for word in ("alpha", "beta", "gamma", "delta") for _ in range(1)]
        rows = [dict(r, input=str(i)) for i in range(9) for r in rows]
    write_jsonl(folder / "train.jsonl", rows)
    defaults = {"model": {"name": str(model)}, "task": task,
                "data": {"max_length": 32},
                "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear"},
                "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-2, "report_to": ["none"],
                          "logging_steps": 2, "warmup_ratio": 0.0}}
    for key, value in sections.items():
        defaults[key] = {**defaults.get(key, {}), **value} if isinstance(value, dict) else value
    return write_config(folder, **defaults)


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, tiny_llama):
    """A tiny causal-LM run (2 steps), loaded; one per test module."""
    from tunelab.config import load_config
    from tunelab.inference import load_run
    from tunelab.training import train

    folder = tmp_path_factory.mktemp("causal")
    return load_run(train.run(load_config(train_config(folder, tiny_llama, task="causal_lm",
                                                       train={"max_steps": 2}))))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_bert) -> Path:
    """A tiny classification run's folder (2 steps); one per test module."""
    from tunelab.config import load_config
    from tunelab.training import train

    folder = tmp_path_factory.mktemp("classifier")
    return train.run(load_config(train_config(folder, tiny_bert, train={"max_steps": 2})))


class Server:
    """A real uvicorn server on a free loopback port, in a thread; stopped by ``stop``.

    With ``timeouts``, it is set up as tunelab's servers set themselves up (``tunelab.serving.web.uvicorn_server``,
    with its deadlines on request heads and idle connections).
    """

    def __init__(self, app, timeouts=None):
        import uvicorn

        from tunelab.serving.web import uvicorn_server

        self.port = free_port()
        self.server = (uvicorn_server(app, "127.0.0.1", self.port, timeouts, log_level="error") if timeouts else
                       uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, process, timeout: float = 120) -> None:
    """Wait until a server process answers /health; fail with its output if it dies first."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the server exited ({process.returncode}): {out}\n{err}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the server did not become healthy")
