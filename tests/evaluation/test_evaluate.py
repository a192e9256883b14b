"""`tunelab evaluate` on tiny runs: every number and file it promises."""

import json

import pytest

from conftest import train_config
from tunelab.config import load_config
from tunelab.training import train


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_classification_evaluation(tmp_path, tiny_bert, run_cli):
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"epochs": 6})))
    code, out, err = run_cli("evaluate", run_dir, "--split", "test")
    assert code == 0, err
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["split"] == "test" and report["examples"] == 4 and "linear probe" in report["base"]
    for name in ("accuracy", "macro_f1"):
        row = report["metrics"][name]
        assert row["delta"] == pytest.approx(row["tuned"] - row["base"])
        assert row["ci95"][0] <= row["delta"] <= row["ci95"][1]
    assert set(report["per_class"]["tuned"]) == {"alpha", "beta", "gamma"}
    assert sum(map(sum, report["confusion_matrix"]["tuned"])) == 4
    rows = read_jsonl(run_dir / "predictions.jsonl")
    assert len(rows) == 4 and {"input", "reference", "base_output", "tuned_output"} <= set(rows[0])
    assert "95% CI of delta" in out and "accuracy" in out


def test_causal_evaluation_has_perplexity_and_generation_metrics(tmp_path, tiny_llama, run_cli):
    cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm", train={"epochs": 3},
                                   eval={"max_new_tokens": 8, "bootstrap_samples": 100}))
    run_dir = train.run(cfg)
    code, out, err = run_cli("evaluate", run_dir)
    assert code == 0, err
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report["metrics"]) == {"perplexity", "mean_loss", "bleu", "rouge1", "rouge2", "rougeL", "exact_match"}
    ppl = report["metrics"]["perplexity"]
    assert ppl["lower_is_better"] and ppl["tuned"] < ppl["base"]  # training on this data lowers its perplexity
    rows = read_jsonl(run_dir / "predictions.jsonl")
    assert len(rows) == report["examples"] and rows[0]["reference"].endswith(".")


def test_sliding_window_scores_every_token_once(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunelab.evaluation import causal as evaluate_causal

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = list(range(5, 45))
    record = {"input_ids": ids, "labels": [-100] * 10 + ids[10:]}
    [(full_nll, full_count)] = evaluate_causal.sequence_nll(model, [record], 8)
    monkeypatch.setattr(evaluate_causal, "context_window", lambda m: 16)
    [(window_nll, window_count)] = evaluate_causal.sequence_nll(model, [record], 8)
    assert full_count == window_count == 30
    assert window_nll > 0 and window_nll == pytest.approx(full_nll, rel=0.2)


def test_evaluate_split_takes_only_the_three_splits(capsys):
    import re

    from tunelab.cli.commands import build_parser

    parser = build_parser()
    assert parser.parse_args(["evaluate", "runs/x"]).split is None  # the run's eval.split decides
    for split in ("train", "validation", "test"):
        assert parser.parse_args(["evaluate", "runs/x", "--split", split]).split == split
    with pytest.raises(SystemExit) as caught:  # argparse's own usage error, before anything is loaded
        parser.parse_args(["evaluate", "runs/x", "--split", "dev"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tunelab evaluate")
    # Python 3.12.8+ prints the choices unquoted
    assert re.search(r"tunelab evaluate: error: argument --split: invalid choice: 'dev' "
                     r"\(choose from '?train'?, '?validation'?, '?test'?\)$", err.strip()), err


def test_printed_table_warns_when_tuned_is_worse():
    from tunelab.evaluation.evaluate import table_text

    def row(base, tuned, ci, lower):
        return {"base": base, "tuned": tuned, "delta": tuned - base, "ci95": ci, "lower_is_better": lower}

    report = {"task": "causal_lm", "split": "test", "examples": 9, "base": "the base model",
              "metrics": {"perplexity": row(10.0, 12.0, [0.5, 3.5], True),
                          "mean_loss": row(2.3, 2.2, [-0.2, 0.0], True), "bleu": row(0.3, 0.25, [-0.1, 0.02], False), "rougeL": row(0.3, 0.4, [0.05, 0.15], False)}}
    warnings = [line for line in table_text(report).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: tuned is significantly worse than base on perplexity (delta +2")
    assert "lower is better" in warnings[0]
    assert warnings[1].startswith("warning: tuned is worse than base on bleu") and "may be noise" in warnings[1]
