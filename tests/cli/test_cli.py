"""The real console script: help, exit codes, no tracebacks for user errors, tracebacks for bugs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_config, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def tunelab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunelab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def test_help_lists_every_command():
    result = tunelab("--help")
    assert result.returncode == 0
    for command in ("demo", "prepare", "train", "predict", "merge", "config", "make-tiny-model"):
        assert command in result.stdout
    prepare_help = tunelab("prepare", "--help").stdout
    assert "KEY=VALUE" in prepare_help and "config schema" in prepare_help


def test_every_command_has_help(capsys):
    from tunelab.cli.commands import COMMANDS, main

    for name in list(COMMANDS) + ["config show", "config schema"]:
        with pytest.raises(SystemExit) as caught:
            main([*name.split(), "--help"])
        assert caught.value.code == 0, name
        assert "usage: tunelab" in capsys.readouterr().out


def test_user_error_exits_2_without_traceback(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n')
    result = tunelab("prepare", write_config(tmp_path))
    assert result.returncode == 2
    assert "train.jsonl line 2: invalid JSON" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    from tunelab.cli import commands as cli
    from tunelab.data import prepare

    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}])
    monkeypatch.setattr(prepare, "run", lambda cfg: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError):
        cli.main(["prepare", str(write_config(tmp_path))])


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    assert blocks[0].endswith("tunelab demo")
    assert blocks[1].endswith("pytest")
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("argv", [
    ["evaluate", "runs/x", "--max-examples", "0"],
    ["sweep", "c.yaml", "lora.r=2,4", "--samples", "-1"],
    ["advise", "c.yaml", "--tolerance", "-0.5"],
    ["predict", "runs/x", "hi", "--max-new-tokens", "0"],
])
def test_bad_numbers_are_usage_errors(argv, capsys):
    from tunelab.cli.commands import main

    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def all_help_texts() -> dict[str, str]:
    """``--help`` of the program and of every command and subcommand, as argparse renders it."""
    import argparse

    from tunelab.cli.commands import build_parser

    found = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        found[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "tunelab")
    return found


def test_help_shows_single_percent_signs():
    texts = all_help_texts()
    assert {"tunelab evaluate", "tunelab report", "tunelab config show", "tunelab config schema"} <= set(texts)
    for name, text in texts.items():
        assert "%%" not in text, name
    assert "95% CI" in " ".join(texts["tunelab evaluate"].split())
    assert "95% bootstrap CI" in " ".join(texts["tunelab"].split())


def test_percent_signs_in_descriptions_and_help_survive(monkeypatch):
    from tunelab.cli import commands as cli
    from tunelab.cli.args import Command

    commands = {"a": Command("100% of the help", lambda p: None, lambda a: None),
                "b": Command("short", lambda p: None, lambda a: None, "50% of a description, not %(prog)s")}
    monkeypatch.setattr(cli, "COMMANDS", commands)
    texts = all_help_texts()
    assert "100% of the help" in texts["tunelab"] and "100% of the help" in texts["tunelab a"]
    assert "50% of a description, not %(prog)s" in " ".join(texts["tunelab b"].split())
