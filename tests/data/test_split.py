from collections import Counter

import pytest

from tunelab.data.examples import Example
from tunelab.data.split import count_leakage, deduplicate, split_off
from tunelab.errors import DataError


def examples(counts: dict[str, int]) -> list[Example]:
    return [Example(f"line {i}", {"text": f"{label} text {i}", "label": label})
            for label, n in counts.items() for i in range(n)]


FRACTIONS = {"validation": 0.1, "test": 0.2}


def texts(split):
    return [e.data["text"] for e in split]


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    rows = examples({"a": 50, "b": 30, "c": 20})
    first, again = split_off(rows, FRACTIONS, seed=3, stratify=True), split_off(rows, FRACTIONS, seed=3, stratify=True)
    other = split_off(rows, FRACTIONS, seed=4, stratify=True)
    assert {k: texts(v) for k, v in first.items()} == {k: texts(v) for k, v in again.items()}
    assert texts(first["test"]) != texts(other["test"])


def test_splits_are_disjoint_complete_and_sized():
    rows = examples({"a": 50, "b": 30, "c": 20})
    parts = split_off(rows, FRACTIONS, seed=0, stratify=True)
    assert (len(parts["train"]), len(parts["validation"]), len(parts["test"])) == (70, 10, 20)
    all_texts = texts(parts["train"]) + texts(parts["validation"]) + texts(parts["test"])
    assert sorted(all_texts) == sorted(texts(rows))


def test_stratified_split_keeps_label_shares():
    rows = examples({"a": 60, "b": 30, "c": 10})
    parts = split_off(rows, {"test": 0.2}, seed=1, stratify=True)
    assert Counter(e.data["label"] for e in parts["test"]) == {"a": 12, "b": 6, "c": 2}


def test_rare_label_keeps_a_training_row():
    rows = examples({"a": 40, "rare": 1})
    parts = split_off(rows, FRACTIONS, seed=0, stratify=True)
    assert "rare" in {e.data["label"] for e in parts["train"]}


def test_too_few_rows_is_refused_with_a_minimum():
    with pytest.raises(DataError) as caught:
        split_off(examples({"a": 2, "b": 2}), {"validation": 0.1, "test": 0.1}, seed=0, stratify=True)
    message = caught.value.problems[0]
    assert "4 rows are too few" in message and "give at least 6 rows" in message


def test_deduplicate_counts_exact_copies():
    rows = examples({"a": 3}) + examples({"a": 2})
    kept, removed = deduplicate(rows)
    assert removed == 2 and len(kept) == 3


def test_leakage_counts_test_inputs_seen_in_train():
    train = [Example("", {"text": "Hello There", "label": "a"}), Example("", {"text": "bye", "label": "a"})]
    test = [Example("", {"text": "hello  there", "label": "b"}), Example("", {"text": "new", "label": "a"})]
    assert count_leakage({"train": train, "test": test}) == {"test_in_train": 1}
