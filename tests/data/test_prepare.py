"""`tunelab prepare` end to end: what it writes and what the report says."""

import json
from pathlib import Path

import datasets
import pytest

from conftest import intent_rows, write_config, write_jsonl
from tunelab.data.tokenize import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[2]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_classification_run_folder(tmp_path, run_cli):
    rows = intent_rows(20) + intent_rows(20)[:5]  # 5 exact duplicates
    rows[10]["text"] += " and a few more words to truncate"
    write_jsonl(tmp_path / "train.jsonl", rows)
    code, out, err = run_cli("prepare", write_config(tmp_path, data={"max_length": 8}))
    assert code == 0, err
    run = tmp_path / "run"
    for name in ("config.yaml", "data_report.json", "labels.json", "data/train.jsonl", "data/test.jsonl",
                 "data/validation.jsonl", "data/tokenized", "tokenizer/tokenizer.json"):
        assert (run / name).exists(), name
    report = json.loads((run / "data_report.json").read_text())
    splits = report["splits"]
    assert splits["train"]["duplicates_removed"] == 5
    assert [splits[s]["rows"] for s in ("train", "validation", "test")] == [48, 6, 6]
    assert splits["test"]["label_distribution"] == {"account": 2, "billing": 2, "shipping": 2}
    assert splits["train"]["truncated"] > 0 and splits["train"]["tokens"]["max"] > 8
    assert report["labels"] == ["account", "billing", "shipping"] and len(report["data_hash"]) == 64
    labels = json.loads((run / "labels.json").read_text())
    tokenized = datasets.load_from_disk(str(run / "data" / "tokenized"))
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 8
    first = read_jsonl(run / "data" / "train.jsonl")[0]
    assert tokenized["train"][0]["labels"] == labels["label2id"][first["label"]]
    assert "label:" in out and "tok p50" in out


def test_prepare_is_reproducible_and_rerunnable(tmp_path, run_cli):
    write_jsonl(tmp_path / "train.jsonl", intent_rows(20))
    config = write_config(tmp_path)
    assert run_cli("prepare", config)[0] == 0
    first = (tmp_path / "run" / "data" / "test.jsonl").read_text()
    assert run_cli("prepare", config)[0] == 0
    assert (tmp_path / "run" / "data" / "test.jsonl").read_text() == first
    assert run_cli("prepare", config, "train.seed=1")[0] == 0
    assert (tmp_path / "run" / "data" / "test.jsonl").read_text() != first


def test_finished_runs_are_not_overwritten(tmp_path, run_cli):
    write_jsonl(tmp_path / "train.jsonl", intent_rows(20))
    config = write_config(tmp_path)
    assert run_cli("prepare", config)[0] == 0
    (tmp_path / "run" / "COMPLETE").write_text("")
    code, _, err = run_cli("prepare", config)
    assert code == 2 and "output.overwrite=true" in err
    assert run_cli("prepare", config, "output.overwrite=true")[0] == 0


def test_leakage_is_counted_and_warned(tmp_path, run_cli):
    rows = intent_rows(20)
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", [{**rows[0], "label": "billing"}, rows[1], {"text": "fresh", "label": "account"}])
    code, out, err = run_cli("prepare", write_config(tmp_path, data={"test": str(tmp_path / "test.jsonl")}))
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["leakage"]["test_in_train"] == 2
    assert "warning: 2 test rows have an input that also occurs in train" in out


def test_instruction_run_masks_prompt_and_packs(tmp_path, run_cli, tiny_llama):
    rows = [{"instruction": f"Answer question {i}.", "input": "", "output": f"The answer is {i}."} for i in range(40)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    config = write_config(tmp_path, task="causal_lm", model={"name": str(tiny_llama)},
                          data={"packing": True, "max_length": 64})
    code, out, err = run_cli("prepare", config)
    assert code == 0, err
    run = tmp_path / "run"
    report = json.loads((run / "data_report.json").read_text())
    assert report["format"] == "instruction" and report["chat_template"] == "tunelab default"
    tokenized = datasets.load_from_disk(str(run / "data" / "tokenized"))
    train = tokenized["train"]
    assert "position_ids" in train.column_names and len(train) < report["splits"]["train"]["rows"]
    assert "position_ids" not in tokenized["test"].column_names  # evaluation splits stay one example per row
    test_row = tokenized["test"][0]
    assert test_row["labels"][0] == IGNORE_INDEX and test_row["labels"][-1] != IGNORE_INDEX
    assert [s["in_loss"] for s in report["sample"]] == [False, True]
    assert "[loss]" in out and "[no loss]" in out
    # The saved tokenizer carries the template used for training.
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(run / "tokenizer").chat_template


def test_shipped_classification_config_prepares(tmp_path, run_cli):
    code, out, err = run_cli("prepare", ROOT / "configs" / "support-intents-lora.yaml",
                             f"output.dir={tmp_path / 'run'}")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["split_from_train"] == ["validation"]
    assert report["splits"]["test"]["rows"] == 200 and len(report["labels"]) == 10
    assert report["leakage"] == {"validation_in_train": 0, "test_in_train": 0}


@pytest.mark.slow
def test_shipped_instruction_config_prepares_with_builtin_tiny_llama(tmp_path, run_cli):
    code, out, err = run_cli("prepare", ROOT / "configs" / "support-instructions-tiny.yaml",
                             f"output.dir={tmp_path / 'run'}")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["splits"]["train"]["dropped_no_target"] == 0
    # 320 training replies, and the 50 of the separate test file
    assert sum(report["splits"][s]["rows"] for s in report["splits"]) == 370
