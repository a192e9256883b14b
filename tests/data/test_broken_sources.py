"""Every kind of broken source, in every split, with and without the other splits, under `format: auto`
and an explicit format: exit 2, a message naming the file (and line or item where there is one), no
traceback, nothing written."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from conftest import write_config, write_jsonl

SPLITS = ("train", "validation", "test")
TASKS = {  # task -> (explicit format, good rows, model)
    "classification": ("classification",
                       [{"text": f"message {i} about {label}", "label": label}
                        for i in range(8) for label in ("billing", "shipping")], "builtin:minilm"),
    "causal_lm": ("instruction",
                  [{"instruction": f"Say {word} {i}.", "input": "", "output": f"{word}."}
                   for i in range(8) for word in ("yes", "no")], "builtin:tiny-llama"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not a dataset\n")
    return path


def _damaged_dataset(path: Path) -> Path:
    """A folder that looks like a datasets.save_to_disk folder but whose files are damaged."""
    path.mkdir()
    (path / "dataset_info.json").write_text("{}")
    (path / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}')
    (path / "data-00000-of-00001.arrow").write_bytes(b"not arrow")
    return path


# kind -> (make the broken source under a path stem, what the message must hold besides the file name)
BROKEN = {
    "missing file": (lambda stem: stem.with_suffix(".jsonl"), "file not found"),
    "empty file": (lambda stem: _write(stem.with_suffix(".jsonl"), b""), "empty"),
    "blank lines only": (lambda stem: _write(stem.with_suffix(".jsonl"), b"\n  \n\n"), "empty"),
    "a folder": (_folder, "not one written by datasets.save_to_disk"),
    "JSON of the wrong shape": (lambda stem: _write(stem.with_suffix(".json"), b'{"a": 1, "b": 2}'),
                                "expected a JSON list of objects"),
    "a JSON number": (lambda stem: _write(stem.with_suffix(".json"), b"42"), "expected a JSON list of objects"),
    "truncated JSON": (lambda stem: _write(stem.with_suffix(".json"), b'[{"text": "a", "la'), "line 1"),
    "lines that are not objects": (lambda stem: _write(stem.with_suffix(".jsonl"), b'[1, 2]\n"text"\n'),
                                   "line 1: expected a JSON object"),
    "invalid UTF-8": (lambda stem: _write(stem.with_suffix(".jsonl"), b'{"text": "caf\xe9", "label": "x"}\n'),
                      "line 1: not valid UTF-8"),
    "a CSV header only": (lambda stem: _write(stem.with_suffix(".csv"), b"text,label\n"), "empty"),
    "a corrupt parquet file": (lambda stem: _write(stem.with_suffix(".parquet"), b"PAR1 not really"),
                               "not a readable parquet file"),
    "an unsupported file type": (lambda stem: _write(stem.with_suffix(".xlsx"), b"PK\x03\x04"),
                                 "unsupported file type"),
    "a damaged saved dataset": (lambda stem: _damaged_dataset(stem), "cannot be read"),
    "JSON nested too deeply": (lambda stem: _write(stem.with_suffix(".jsonl"), b"[" * 200_000 + b"]" * 200_000),
                               "line 1: JSON nested too deeply"),
}

CELLS = list(itertools.product(BROKEN, SPLITS, ("alone", "with the other splits"), ("auto", "explicit"), TASKS))


def cell_id(cell) -> str:
    kind, split, others, fmt, task = cell
    return f"{kind}-{split}-{others}-{fmt}-{task}".replace(" ", "_")


@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_a_broken_source_is_one_clear_line(tmp_path, run_cli, cell):
    kind, split, others, fmt, task = cell
    explicit, rows, model = TASKS[task]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make, expected = BROKEN[kind]
    broken = make(inputs / f"broken-{split}")
    data = {split: str(broken), "format": fmt if fmt == "auto" else explicit}
    given = [s for s in SPLITS if s != split] if others != "alone" else ([] if split == "train" else ["train"])
    for other in given:
        data[other] = str(write_jsonl(inputs / f"{other}.jsonl", rows))
    config = write_config(tmp_path, task=task, model={"name": model}, data=data)
    before = sorted(p.name for p in tmp_path.iterdir())

    code, out, err = run_cli("prepare", config)

    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    problems = [line.strip() for line in err.splitlines()[1:] if not line.strip().startswith("... and")]
    assert problems and all(line.startswith(str(inputs)) for line in problems), err  # each names its file first
    assert any(str(broken) in line and expected in line for line in problems), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"


def test_the_matrix_covers_every_split_and_both_format_modes():
    assert {c[1] for c in CELLS} == set(SPLITS) and {c[3] for c in CELLS} == {"auto", "explicit"}
    assert len(CELLS) == len(BROKEN) * 3 * 2 * 2 * len(TASKS)


def test_a_broken_train_with_good_other_splits_reports_every_problem(tmp_path, run_cli):
    """The other splits are still read and checked: all problems at once, not only train's."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    validation = inputs / "validation.jsonl"
    validation.write_text(json.dumps({"text": "hello"}) + "\n", encoding="utf-8")  # no label
    config = write_config(tmp_path, data={"train": str(inputs / "missing.jsonl"), "validation": str(validation)})
    code, _, err = run_cli("prepare", config)
    assert code == 2 and "missing.jsonl: file not found" in err
    assert f"{validation} line 1: field 'label': missing" in err


def test_an_unreadable_file_is_a_problem_with_reading_not_writing(tmp_path, run_cli, monkeypatch):
    """Permissions cannot stop root, who runs many CI jobs; the read is made to fail instead."""
    source = write_jsonl(tmp_path / "locked.jsonl", TASKS["classification"][1])
    real = Path.read_bytes

    def read_bytes(self):
        if self == source:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    code, _, err = run_cli("prepare", write_config(tmp_path, data={"train": str(source)}))
    assert code == 2 and f"{source}: cannot read it (Permission denied)" in err and "cannot write" not in err, err
