"""Every bad row is explained: file, line, field, what was expected; exit 2, no traceback, nothing written."""

import json

import pytest

from conftest import intent_rows, write_config, write_jsonl

GOOD = [{"text": f"row {i}", "label": "a" if i % 2 else "b"} for i in range(30)]
CHAT_GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def lines_of(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def bad_jsonl(tmp_path, bad_line_text, line=4):
    rows = [json.dumps(r) for r in GOOD]
    rows.insert(line - 1, bad_line_text)
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")


CASES = {
    "invalid json": (lambda p: bad_jsonl(p, '{"text": "oops", "label": '), {},
                     ["train.jsonl line 4: invalid JSON"]),
    "missing field": (lambda p: bad_jsonl(p, '{"text": "no label here"}'), {},
                      ["train.jsonl line 4: field 'label': missing"]),
    "wrong type": (lambda p: bad_jsonl(p, '{"text": 42, "label": "a"}', line=7), {},
                   ["train.jsonl line 7: field 'text': expected a string", "got number 42"]),
    "empty text": (lambda p: bad_jsonl(p, '{"text": "   ", "label": "a"}', line=2), {},
                   ["train.jsonl line 2: field 'text': empty"]),
    "not an object": (lambda p: bad_jsonl(p, '["text", "a"]', line=3), {},
                      ["train.jsonl line 3: expected a JSON object, got a list"]),
    "unknown chat role": (
        lambda p: (p / "train.jsonl").write_text(lines_of([CHAT_GOOD] * 3 + [
            {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}])),
        {"task": "causal_lm", "model": {"name": "builtin:tiny-llama"}},
        ["train.jsonl line 4: field 'messages[1].role': unknown role 'bot'", "system, user, assistant"]),
    "chat not ending with assistant": (
        lambda p: (p / "train.jsonl").write_text(lines_of([CHAT_GOOD, {"messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "and?"}]}] + [CHAT_GOOD] * 3)),
        {"task": "causal_lm", "model": {"name": "builtin:tiny-llama"}},
        ["train.jsonl line 2: field 'messages[2].role': the conversation ends with 'user'"]),
    "unseen label in test": (
        lambda p: (write_jsonl(p / "train.jsonl", GOOD),
                   write_jsonl(p / "test.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "zzz"}])),
        {"data": {"test": "TMP/test.jsonl"}},
        ["test.jsonl line 2: field 'label': 'zzz' never occurs in the training data"]),
    "empty file": (lambda p: (p / "train.jsonl").write_text(""), {}, ["train.jsonl: the file is empty"]),
    "non-utf8 bytes": (
        lambda p: (p / "train.jsonl").write_bytes(
            lines_of(GOOD[:4]).encode() + b'{"text": "caf\xe9", "label": "a"}\n' + lines_of(GOOD[4:]).encode()),
        {}, ["train.jsonl line 5: not valid UTF-8 (byte 0xe9 at column 14)"]),
    "ragged csv": (
        lambda p: (p / "train.csv").write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(5))
                                               + "an, unquoted comma,b\n" + "last,a\n"),
        {"data": {"train": "TMP/train.csv"}},
        ["train.csv line 7: 3 fields, but the header has 2 (text, label)"]),
    "missing file": (lambda p: None, {"data": {"train": "TMP/nope.jsonl"}}, ["nope.jsonl: file not found"]),
    "undetectable format": (
        lambda p: write_jsonl(p / "train.jsonl", [{"question": "q", "answer": "a"}] * 3),
        {"task": "causal_lm", "model": {"name": "builtin:tiny-llama"}},
        ["train.jsonl line 1: cannot tell the data format from the fields (answer, question)"]),
}


def substitute(value, tmp_path):
    if isinstance(value, dict):
        return {k: substitute(v, tmp_path) for k, v in value.items()}
    return value.replace("TMP", str(tmp_path)) if isinstance(value, str) else value


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_location_and_writes_nothing(tmp_path, run_cli, case):
    make, sections, expected = CASES[case]
    make(tmp_path)
    config = write_config(tmp_path, **substitute(sections, tmp_path))
    code, out, err = run_cli("prepare", config)
    assert code == 2, err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.staging")]


def test_problems_in_several_files_are_reported_together(tmp_path, run_cli):
    bad_jsonl(tmp_path, '{"text": "", "label": "a"}')
    write_jsonl(tmp_path / "test.jsonl", [{"text": "fine", "label": "a"}, {"label": "b"}])
    config = write_config(tmp_path, data={"test": str(tmp_path / "test.jsonl")})
    code, _, err = run_cli("prepare", config)
    assert code == 2
    assert "train.jsonl line 4: field 'text': empty" in err
    assert "test.jsonl line 2: field 'text': missing" in err


def test_at_most_20_problems_are_printed_plus_a_count(tmp_path, run_cli):
    write_jsonl(tmp_path / "train.jsonl", GOOD + [{"text": "", "label": "a"}] * 27)
    code, _, err = run_cli("prepare", write_config(tmp_path))
    assert code == 2
    assert "(27 problems)" in err
    assert err.count("field 'text': empty") == 20
    assert "... and 7 more" in err


def test_bad_model_name_is_one_line(tmp_path, run_cli):
    write_jsonl(tmp_path / "train.jsonl", intent_rows())
    code, _, err = run_cli("prepare", write_config(tmp_path, model={"name": "./no/such/folder"}))
    assert code == 2 and "folder ./no/such/folder not found" in err and "Traceback" not in err
    code, _, err = run_cli("prepare", write_config(tmp_path, model={"name": "someone/not-downloadable"}))
    assert code == 2 and "could not download 'someone/not-downloadable'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
