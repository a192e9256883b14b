"""The documentation's code is real: Python blocks run (and print what the page says they print), and every
`tunelab ...` command line in a bash block names a real command and real options."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"),
                *ROOT.glob("mini-project/*/README.md")])
BLOCK = re.compile(r"```(\w*)\n(.*?)```(?:\n\nprints:\n\n```\n(.*?)```)?", re.S)


def blocks(language: str) -> list[tuple[str, str, str | None]]:
    """(page:line, code, documented output) for every fenced block of ``language``."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2), match.group(3)))
    return found


# Blocks that load a finished run (runs/demo) run in tests/training/test_plain_peft.py, which makes one first.
PYTHON = [block for block in blocks("python") if "runs/demo/" not in block[1]]
COMMANDS = [(where, line.strip()) for where, code, _ in blocks("bash") for line in code.splitlines()
            if line.strip().startswith("tunelab ")]


def test_the_docs_have_code_to_check():
    assert len(PYTHON) >= 5 and len(COMMANDS) >= 10


@pytest.mark.slow
@pytest.mark.parametrize("where, code, output", PYTHON, ids=[w for w, _, _ in PYTHON])
def test_python_snippet_runs(where, code, output, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, f"{where} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    if output is not None:
        assert done.stdout.strip() == output.strip(), f"{where} printed something else than the page shows"


def _help(command: str) -> str:
    from tunelab.cli.commands import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*command.split(), "--help"])
    return out.getvalue()


@pytest.mark.parametrize("where, line", COMMANDS, ids=[f"{w} {line[:40]}" for w, line in COMMANDS])
def test_documented_command_exists_with_its_options(where, line):
    words = shlex.split(line.split("&&")[0].split("#")[0])
    command = " ".join(words[1:3]) if words[1] == "config" else words[1]
    text = _help(command)
    for option in [w.split("=")[0] for w in words if w.startswith("--")]:
        assert option in text, f"{where}: `{line}` uses {option}, which `tunelab {command} --help` does not list"
