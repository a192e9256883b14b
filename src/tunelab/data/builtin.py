"""tunelab's built-in data: synthetic customer-support messages the project writes itself.

Two datasets ship inside the package (regenerate with ``python -m tunelab.data.builtin``;
a test checks the shipped files equal what this module writes):

- ``support_intents``: customer messages labelled with one of 10 intents, ``train.jsonl`` and a
  separate ``test.jsonl`` whose texts never occur in train.
- ``support_instructions``: instruction/response pairs in the same domain (reply, summarize,
  classify), Alpaca fields ``instruction``, ``input``, ``output``.

Config files refer to them as ``builtin:support_intents/train.jsonl``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from tunelab.data.builtin_templates import (
    CLOSERS, CONTEXTS, INSTRUCTIONS, INTENTS, OPENERS, REPLIES, SLOTS, SUMMARIES,
)

BUILTIN_DATA_DIR = Path(__file__).resolve().parent.parent / "builtin_data"
INTENT_TRAIN_PER_LABEL = 80
INTENT_TEST_PER_LABEL = 20
INSTRUCTION_PAIRS = 260
SEED = 20261129


def builtin_data_path(spec: str) -> Path:
    """Map ``builtin:<dataset>/<file>`` to the shipped file; raise ValueError naming what exists."""
    relative = spec.removeprefix("builtin:")
    path = BUILTIN_DATA_DIR / relative
    if ".." in Path(relative).parts or not path.is_file():
        available = sorted(f"builtin:{p.parent.name}/{p.name}" for p in BUILTIN_DATA_DIR.glob("*/*.jsonl"))
        raise ValueError(f"no built-in data '{spec}'; available: {', '.join(available)}")
    return path


def _fill(template: str, rng: random.Random, chosen: dict[str, str] | None = None) -> str:
    """Fill ``{slot}``s; ``chosen`` keeps one value per slot so a reply names what the message did."""
    chosen = {} if chosen is None else chosen

    def one(match: re.Match) -> str:
        slot = match.group(1)
        if slot not in chosen:
            value = rng.choice(SLOTS[slot])
            chosen[slot] = value.format(n=rng.randint(10000, 99999)) if slot == "order" else value
        return chosen[slot]

    return re.sub(r"\{(\w+)\}", one, template)


def _noisy(text: str, rng: random.Random) -> str:
    """Vary surface form the way real messages do: case, punctuation, an occasional typo."""
    if rng.random() < 0.25:
        text = text.lower()
    elif text[0].islower() and rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text = text.rstrip("?.!")
    if rng.random() < 0.12:
        words = text.split(" ")
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3:
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        text = " ".join(words)
    return text


def customer_message(intent: str, rng: random.Random, chosen: dict[str, str] | None = None) -> str:
    """One synthetic customer message for ``intent``."""
    body = _noisy(_fill(rng.choice(INTENTS[intent]), rng, chosen), rng)
    opener = rng.choice(OPENERS)
    if opener and body[0].isupper() and not body.startswith("I "):
        body = body[0].lower() + body[1:]
    closer = rng.choice(CLOSERS)
    if closer and body[-1] not in "?.!" and rng.random() < 0.5:
        body += "."
    message = f"{opener}{body}{closer}".strip()
    # Most tickets carry one or two background sentences, before or after the request.
    count = rng.choices([0, 1, 2], weights=[25, 45, 30])[0]
    context = " ".join(_fill(c, rng, chosen) for c in rng.sample(CONTEXTS, count))
    if not context:
        return message
    return f"{context} {message}" if rng.random() < 0.7 else f"{message} {context}"


def support_intents() -> dict[str, list[dict]]:
    """Train and test rows, balanced per intent; test texts never occur in train."""
    rng = random.Random(SEED)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for intent in INTENTS:
        seen: set[str] = set()
        texts: list[str] = []
        want = INTENT_TRAIN_PER_LABEL + INTENT_TEST_PER_LABEL
        while len(texts) < want:
            text = customer_message(intent, rng)
            if text.lower() not in seen:
                seen.add(text.lower())
                texts.append(text)
        splits["test"] += [{"text": t, "label": intent} for t in texts[:INTENT_TEST_PER_LABEL]]
        splits["train"] += [{"text": t, "label": intent} for t in texts[INTENT_TEST_PER_LABEL:]]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def support_instructions() -> list[dict]:
    """Instruction/response pairs: replies, one-line summaries and intent labels."""
    rng = random.Random(SEED + 1)
    rows, seen = [], set()
    kinds = ["reply"] * 6 + ["summarize"] * 2 + ["classify"] * 2
    while len(rows) < INSTRUCTION_PAIRS:
        intent = rng.choice(list(INTENTS))
        kind = rng.choice(kinds)
        chosen: dict[str, str] = {}
        message = customer_message(intent, rng, chosen)
        if kind == "reply":
            output = _fill(rng.choice(REPLIES[intent]), rng, chosen)
        elif kind == "summarize":
            output = SUMMARIES[intent]
        else:
            output = intent
        row = {"instruction": rng.choice(INSTRUCTIONS[kind]), "input": message, "output": output}
        key = (row["instruction"], message.lower())
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


INTENT_CARD = """# support_intents (built into tunelab)

Synthetic customer-support messages, each labelled with one of {n_labels} intents:
{labels}.

- **Made by**: `tunelab/data/builtin.py` from hand-written templates in `builtin_templates.py`,
  filled with seeded random slot values (products, order numbers, dates, cities, payment
  methods), with varied openers, closers, casing, punctuation and occasional typos.
  Seed {seed}. Regenerate with `python -m tunelab.data.builtin`.
- **Size**: {n_train} training rows and {n_test} test rows, balanced
  ({train_per} and {test_per} per intent). No test text occurs in train (case-insensitive).
- **Fields**: `text` (the customer message), `label` (the intent name).
- **Made to be hard in two ways**: intents come in confusable pairs (cancel an order vs a
  subscription, refund vs double charge, late parcel vs damaged parcel), and three in four messages
  carry one or two background sentences shared by all intents ("I paid with my Visa.", "I have the
  Plus plan."), so a model has to find the request inside the message, as with real tickets.
- **What the test split measures**: test texts never occur in train, but they come from the same
  templates, so scores are in-distribution; expect lower ones on your own tickets.
- **Limits**: English only, template-based, short messages; no personal data. Numbers measured on
  it say how a method behaves, not how it will do on real tickets: use your own data for that.
"""

INSTRUCTION_CARD = """# support_instructions (built into tunelab)

{n} instruction/response pairs in the customer-support domain, Alpaca fields
`instruction`, `input` (a customer message) and `output`.

- **Made by**: `tunelab/data/builtin.py`. Customer messages come from the same generator as
  `support_intents`; outputs are agent replies from hand-written templates (naming the customer's
  order number and product), one-line request summaries, or the intent name. Task mix about 60% replies,
  20% summaries, 20% intent labels. Seed {seed}. Regenerate with `python -m tunelab.data.builtin`.
- **Use**: instruction tuning of small causal LMs offline (`configs/support-instructions-tiny.yaml`).
  `tunelab prepare` splits validation and test from it.
- **Limits**: synthetic and templated; replies are plausible, not company policy. English only.
"""


def write_builtin_data(root: Path = BUILTIN_DATA_DIR) -> list[Path]:
    """Write both datasets with their data cards under ``root``; return the files written."""
    intents = support_intents()
    instructions = support_instructions()
    files = {
        "support_intents/train.jsonl": _jsonl(intents["train"]),
        "support_intents/test.jsonl": _jsonl(intents["test"]),
        "support_intents/CARD.md": INTENT_CARD.format(
            n_labels=len(INTENTS), labels=", ".join(f"`{k}`" for k in INTENTS), seed=SEED,
            n_train=len(intents["train"]), n_test=len(intents["test"]),
            train_per=INTENT_TRAIN_PER_LABEL, test_per=INTENT_TEST_PER_LABEL),
        "support_instructions/train.jsonl": _jsonl(instructions),
        "support_instructions/CARD.md": INSTRUCTION_CARD.format(n=len(instructions), seed=SEED + 1),
    }
    written = []
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    for written_path in write_builtin_data():
        print(written_path)
