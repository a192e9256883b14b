"""The HTML report holds the numbers of the runs it was given and makes no external request."""

import json

from conftest import train_config
from report_fixtures import Collector
from tunelab.config import load_config
from tunelab.evaluation import evaluate
from tunelab.training import train


def test_report_contains_run_numbers_and_no_external_requests(tmp_path, tiny_bert, run_cli):
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"epochs": 3},
                                                 eval={"bootstrap_samples": 100})))
    report = evaluate.run(run_dir)
    code, out, err = run_cli("report", run_dir, "--out", tmp_path / "r.html")
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    parsed = Collector()
    parsed.feed(html)
    assert parsed.external == []
    assert "url(" not in html.split("<style>")[1].split("</style>")[0]
    assert parsed.tags.count("svg") >= 2 and "table" in parsed.tags
    text = " ".join(parsed.text)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['trainable_params']:,}" in text
    assert f"{report['metrics']['accuracy']['tuned']:.4g}" in text
    assert "Confusion matrix" in text and "base_output" in text

    code, _, err = run_cli("report", run_dir, "--out", tmp_path / "r.md", "--markdown")
    assert code == 0, err
    assert "| accuracy |" in (tmp_path / "r.md").read_text()


def test_report_refuses_folders_it_cannot_read(tmp_path, run_cli):
    code, _, err = run_cli("report", tmp_path, "--out", tmp_path / "r.html")
    assert code == 2 and "not a finished run, bake-off or sweep folder" in err


def test_replace_marked_rewrites_only_between_its_markers():
    import pytest

    from tunelab.tables import replace_marked

    page = "intro\n<!-- results -->\nold\n<!-- /results -->\noutro\n"
    new = replace_marked(page, "results", "| a |\n")
    assert new == "intro\n<!-- results -->\n| a |\n<!-- /results -->\noutro\n"
    assert replace_marked(new, "results", "| a |") == new  # idempotent
    with pytest.raises(ValueError, match="markers"):
        replace_marked(page, "missing", "x")


def test_report_without_out_goes_into_the_folder_it_is_about(tmp_path, monkeypatch, run_cli):
    from report_fixtures import write_bakeoff, write_run

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_dir = write_run(tmp_path / "run")
    code, out, err = run_cli("report", run_dir)
    assert code == 0, err
    assert (run_dir / "report.html").read_text().startswith("<!doctype html>")
    assert f"wrote {run_dir / 'report.html'}" in out
    code, out, err = run_cli("report", run_dir, "--markdown")
    assert code == 0, err
    assert "| accuracy |" in (run_dir / "report.md").read_text()
    bakeoff = write_bakeoff(tmp_path / "bakeoff")
    code, _, err = run_cli("report", bakeoff)
    assert code == 0 and (bakeoff / "report.html").exists(), err
    assert list(elsewhere.iterdir()) == []


def test_report_of_several_folders_needs_out(tmp_path, monkeypatch, run_cli):
    from report_fixtures import write_bakeoff, write_run

    monkeypatch.chdir(tmp_path)
    run_dir, bakeoff = write_run(tmp_path / "run"), write_bakeoff(tmp_path / "bakeoff")
    code, _, err = run_cli("report", run_dir, bakeoff)
    assert code == 2 and "--out" in err
    assert not list(tmp_path.rglob("report.*"))
    code, _, err = run_cli("report", run_dir, bakeoff, "--out", tmp_path / "both.html")
    assert code == 0, err
    html = (tmp_path / "both.html").read_text()
    assert "Run " in html and "Bake-off " in html


def test_report_help_says_where_the_report_goes():
    from tunelab.cli.commands import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(commands.choices["report"].format_help().split())
    assert "report.html, or report.md with --markdown, inside the folder given" in text
    assert "required when several folders are given" in text
