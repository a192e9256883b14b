"""Bad input never crashes: every broken file in tests/data/bad/ exits 2 with its location, writes nothing.

The corpus and what each case must say are in tests/data/bad/cases.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import write_config, write_jsonl

BAD = Path(__file__).parent / "bad"
CASES = yaml.safe_load((BAD / "cases.yaml").read_text(encoding="utf-8"))
GOOD_ROWS = [{"text": f"a good row {i}", "label": "billing" if i % 2 else "shipping"} for i in range(24)]
GENERATED = {
    # A single 10 MB line: refused by size, never handed to the tokenizer.
    "huge-line": lambda path: path.write_text("\n".join(
        [json.dumps(GOOD_ROWS[0]), json.dumps(GOOD_ROWS[1]),
         json.dumps({"text": "x" * 10_000_000, "label": "billing"})]) + "\n"),
}


def case_config(tmp_path: Path, name: str, case: dict) -> Path:
    """The config that feeds ``name`` to tunelab as ``case['use']`` says; the run goes to tmp_path/run."""
    use = case.get("use", "train")
    good = write_jsonl(tmp_path / "good.jsonl", GOOD_ROWS)
    if use == "config":
        text = (BAD / name).read_bytes()
        for key, value in {"{bad}": BAD, "{good}": good, "{out}": tmp_path / "run"}.items():
            text = text.replace(key.encode(), str(value).encode())
        config = tmp_path / name
        config.write_bytes(text)
        return config
    source = BAD / name
    if "generate" in case:
        source = tmp_path / name
        GENERATED[case["generate"]](source)
    if use == "model":
        return write_config(tmp_path, model={"name": str(source)}, data={"train": str(good)})
    task = case.get("task", "classification")
    model = {"name": "builtin:tiny-llama" if task == "causal_lm" else "builtin:minilm"}
    data = {"train": str(good), use: str(source)} if use != "train" else {"train": str(source)}
    return write_config(tmp_path, task=task, model=model, data=data)


def test_the_corpus_is_large_and_every_file_has_a_case():
    assert len(CASES) >= 40
    files = {p.name for p in BAD.iterdir()} - {"cases.yaml"}
    covered = {name for name in CASES} | {c["file"] for c in CASES.values() if "file" in c}
    assert files <= covered, f"files without a case: {sorted(files - covered)}"


@pytest.mark.parametrize("name", list(CASES))
def test_broken_input_exits_2_naming_where_and_writes_nothing(tmp_path, run_cli, name):
    case = CASES[name]
    config = case_config(tmp_path, name, case)
    before = {p.name for p in tmp_path.iterdir()}
    code, out, err = run_cli("prepare", config)
    assert code == 2, f"exit {code}\n{out}\n{err}"
    for fragment in case["expect"]:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert "Traceback" not in err + out
    assert {p.name for p in tmp_path.iterdir()} == before, "something was written"
