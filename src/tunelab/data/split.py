"""Deduplicate, split (seeded; stratified for classification) and check for leakage."""

from __future__ import annotations

import math
import random
from collections import defaultdict

from tunelab.data.examples import Example
from tunelab.data.formats import example_key, input_key
from tunelab.errors import DataError


def deduplicate(examples: list[Example]) -> tuple[list[Example], int]:
    """Drop exact duplicates, keeping the first; return (kept, number removed)."""
    seen: set[str] = set()
    kept = []
    for example in examples:
        key = example_key(example.data)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept, len(examples) - len(kept)


def split_off(examples: list[Example], fractions: dict[str, float], seed: int, stratify: bool,
              source: str = "data.train") -> dict[str, list[Example]]:
    """Split ``examples`` into ``train`` plus one split per entry of ``fractions``.

    Seeded and deterministic. With ``stratify`` every label keeps its share in each split
    (to within one row) and at least one row in train.

    Raises:
        DataError: when a split would be empty, saying how many rows would be enough.
    """
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        groups[example.data["label"] if stratify else ""].append(index)
    for label in sorted(groups):
        rng.shuffle(groups[label])

    taken: dict[str, list[int]] = {}
    for split, fraction in fractions.items():
        counts = _allocate({k: len(v) for k, v in groups.items()}, fraction, len(examples))
        taken[split] = [i for label in sorted(groups) for i in groups[label][: counts[label]]]
        for label in groups:
            groups[label] = groups[label][counts[label]:]
    taken = {"train": [i for label in sorted(groups) for i in groups[label]], **taken}

    empty = [split for split, idx in taken.items() if not idx]
    if empty:
        need = max(math.ceil(0.5 / f) for f in fractions.values()) + 1
        shares = ", ".join(f"{s} {f:.0%}" for s, f in fractions.items())
        raise DataError(f"{source}: {len(examples)} rows are too few to split off {shares}: "
                        f"{', '.join(empty)} would be empty; give at least {need} rows, or set "
                        f"{' and '.join('data.' + s for s in fractions)} to files of their own")
    return {split: [examples[i] for i in sorted(idx)] for split, idx in taken.items()}


def _allocate(sizes: dict[str, int], fraction: float, total: int) -> dict[str, int]:
    """Rows to take from each group: ``fraction`` of ``total`` overall, shared out in proportion
    (largest remainder first), never taking a group's last row."""
    target = round(total * fraction)
    exact = {k: n * fraction for k, n in sizes.items()}
    counts = {k: min(int(exact[k]), max(sizes[k] - 1, 0)) for k in sizes}
    order = sorted(sizes, key=lambda k: (-(exact[k] - int(exact[k])), k))
    while sum(counts.values()) < target:
        grew = False
        for k in order:
            if sum(counts.values()) < target and counts[k] < sizes[k] - 1:
                counts[k] += 1
                grew = True
        if not grew:
            break
    return counts


def count_leakage(splits: dict[str, list[Example]]) -> dict[str, int]:
    """How many validation/test rows have an input that also occurs in train."""
    train_inputs = {input_key(e.data) for e in splits["train"]}
    return {
        f"{split}_in_train": sum(input_key(e.data) in train_inputs for e in splits[split])
        for split in ("validation", "test")
        if split in splits
    }
