"""The built-in datasets: big and varied enough, honest splits, and exactly what the generator writes."""

import json
from collections import Counter

from tunelab.data.builtin import BUILTIN_DATA_DIR, support_instructions, support_intents, write_builtin_data


def read(name):
    return [json.loads(line) for line in (BUILTIN_DATA_DIR / name).read_text().splitlines()]


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    for path in write_builtin_data(tmp_path):
        relative = path.relative_to(tmp_path)
        assert path.read_text() == (BUILTIN_DATA_DIR / relative).read_text(), f"regenerate {relative}"


def test_intents_are_many_varied_and_balanced():
    train, test = read("support_intents/train.jsonl"), read("support_intents/test.jsonl")
    counts = Counter(r["label"] for r in train)
    assert len(counts) >= 8 and len(train) + len(test) >= 600
    assert len(set(counts.values())) == 1
    assert len({r["text"] for r in train}) == len(train)  # no duplicates
    assert not {r["text"].lower() for r in test} & {r["text"].lower() for r in train}
    assert set(Counter(r["label"] for r in test)) == set(counts)


def test_instruction_pairs():
    rows = read("support_instructions/train.jsonl")
    assert len(rows) >= 200
    assert all(r["instruction"] and r["output"] for r in rows)
    assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows)


def test_generation_is_deterministic():
    assert support_intents() == support_intents()
    assert support_instructions()[:5] == support_instructions()[:5]


def test_data_cards_exist():
    for name in ("support_intents", "support_instructions"):
        card = (BUILTIN_DATA_DIR / name / "CARD.md").read_text()
        assert "Made by" in card and "Limits" in card
