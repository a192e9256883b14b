"""Where the ticket router keeps its files, and its config with those paths filled in.

Every script in this folder imports this module, so they all agree on the locations under models/
no matter which folder they are started from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.config.load import read_yaml
from tunelab.errors import TunelabError

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "ticket_router.yaml"
DATA = HERE / "models" / "data"
RUN = HERE / "models" / "ticket-router"
README = HERE / "README.md"


def config(overrides: list[str] = ()):
    """The router's config: configs/ticket_router.yaml, paths under models/, then the caller's overrides."""
    tree = read_yaml(CONFIG)
    test = DATA / "test.jsonl"  # absent when the data came as one file: prepare then splits test off train
    tree["data"].update(train=str(DATA / "train.jsonl"), test=str(test) if test.exists() else None)
    tree["output"] = {"dir": str(RUN), "overwrite": True}
    return from_dict(tree, overrides, name="ticket-router", source=str(CONFIG))


def require(path: Path, step: str) -> None:
    """Stop with a clear message when an earlier step has not been run."""
    if not path.exists():
        sys.exit(f"{path} is missing: run `python {step}` first")


def main_guard(body) -> int:
    """Run ``body()``; a user error (bad data, bad setting) prints its problems and exits with code 2."""
    try:
        body()
    except TunelabError as err:
        report_problems(err)
        return 2
    return 0
