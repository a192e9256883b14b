"""Each format is parsed from each kind of file, and encodings/line endings users have are accepted."""

import csv
import json

import pytest

from tunelab.config.schema import DataSection
from tunelab.data.formats import FORMATS, detect_format
from tunelab.data.sources import read_source

ROWS = {
    "classification": [{"text": "where is my parcel", "label": "shipping"}, {"text": "refund me", "label": "billing"}],
    "instruction": [{"instruction": "Reply politely.", "input": "hi", "output": "Hello!"},
                    {"instruction": "Say yes.", "input": "", "output": "Yes."}],
    "text": [{"text": "Once upon a time."}, {"text": "The end."}],
}
CHAT = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]


def write(path, rows):
    kind = path.suffix
    if kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == ".json":
        path.write_text(json.dumps(rows, indent=2))
    elif kind in (".csv", ".tsv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if kind == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif kind == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == ".txt":
        path.write_text("\n\n".join(r["text"] for r in rows) + "\n")
    return path


def parse(spec, task="classification", split="train", **data):
    cfg = DataSection(train=spec, **data)
    source = read_source(spec, split, cfg.text_field)
    assert source.problems == []
    fmt = detect_format(task, source.rows[0].record, cfg)
    return fmt, [FORMATS[fmt](row.record, cfg) for row in source.rows], source


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
@pytest.mark.parametrize("fmt", ["classification", "instruction", "text"])
def test_flat_formats_from_every_file_type(tmp_path, suffix, fmt):
    path = write(tmp_path / f"data{suffix}", ROWS[fmt])
    detected, examples, source = parse(str(path), "classification" if fmt == "classification" else "causal_lm")
    assert detected == fmt
    assert examples == [FORMATS[fmt](r, DataSection(train="x")) for r in ROWS[fmt]]
    assert len(source.sha256) == 64


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_chat_from_nested_file_types(tmp_path, suffix):
    path = write(tmp_path / f"chat{suffix}", CHAT)
    fmt, examples, _ = parse(str(path), "causal_lm")
    assert fmt == "chat"
    assert examples[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert examples[1]["messages"][-1]["role"] == "assistant"


def test_sharegpt_conversations_are_mapped(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    fmt, examples, _ = parse(str(write(tmp_path / "s.json", rows)), "causal_lm")
    assert fmt == "chat"
    assert examples[0] == {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def test_txt_blocks_become_text_rows_with_their_first_line(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("First paragraph\nstill first.\n\n\nSecond one.\n")
    fmt, examples, source = parse(str(path), "causal_lm")
    assert fmt == "text"
    assert examples == [{"text": "First paragraph\nstill first."}, {"text": "Second one."}]
    assert source.rows[1].where.endswith("line 5")


def test_save_to_disk_folder_and_its_splits(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS["classification"]).save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS["classification"]),
                          "test": datasets.Dataset.from_list(ROWS["classification"][:1])}
                         ).save_to_disk(str(tmp_path / "dict"))
    assert parse(str(tmp_path / "single"))[1][1] == {"text": "refund me", "label": "billing"}
    assert len(parse(str(tmp_path / "dict"), split="test")[1]) == 1
    missing = read_source(str(tmp_path / "dict"), "validation", "text")
    assert "has splits train, test but no 'validation'" in missing.problems[0]


def test_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "a", "label": "x"}\r\n{"text": "b", "label": "y"}\r\n')
    assert parse(str(path))[1] == [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    csv_path = tmp_path / "win.csv"
    csv_path.write_bytes(b"\xef\xbb\xbftext,label\r\nhello,x\r\n")
    assert parse(str(csv_path))[1] == [{"text": "hello", "label": "x"}]


def test_integer_labels_and_field_names_are_configurable(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"sentence": "good", "y": 1}, {"sentence": "bad", "y": 0.0}])
    _, examples, _ = parse(str(path), text_field="sentence", label_field="y")
    assert examples == [{"text": "good", "label": "1"}, {"text": "bad", "label": "0"}]


def test_builtin_data_source():
    source = read_source("builtin:support_intents/test.jsonl", "test", "text")
    assert source.problems == [] and len(source.rows) >= 100
    missing = read_source("builtin:nope/train.jsonl", "train", "text")
    assert "builtin:support_instructions/train.jsonl" in missing.problems[0]


def test_hub_source_offline_is_one_line():
    source = read_source("hf:someone/some-dataset", "train", "text")
    assert len(source.problems) == 1 and "save_to_disk" in source.problems[0]
