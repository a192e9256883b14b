"""What the example tests share: running a script as a user would, and finding its printed tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_script(script: Path, *args, cwd: Path | None = None, timeout: int = 600) -> str:
    """Run a script as a user would; fail with its output when it exits non-zero."""
    done = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, f"{script.name} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def header_line(output: str, *columns: str) -> str:
    """The printed line holding every one of ``columns`` (a table's header)."""
    lines = [line for line in output.splitlines() if all(c in line for c in columns)]
    assert lines, f"no table with columns {columns} in:\n{output[-3000:]}"
    return lines[0]


@pytest.fixture
def tickets(tmp_path) -> Path:
    rows = [{"text": f"{word} ticket number {i}", "label": word} for word in ("billing", "shipping", "login")
            for i in range(12)]
    return write_jsonl(tmp_path / "tickets.jsonl", rows)
