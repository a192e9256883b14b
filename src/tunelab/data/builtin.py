"""tunelab's built-in data: synthetic customer-support messages the project writes itself.

Two datasets ship inside the package (regenerate with ``python -m tunelab.data.builtin``;
a test checks the shipped files equal what this module writes):

- ``support_intents``: customer messages labelled with one of 10 intents, ``train.jsonl`` and a
  separate ``test.jsonl`` whose texts never occur in train.
- ``support_instructions``: customer messages answered in one house style (greeting, the order
  number and product echoed, the shop's fixed policies, one next step, a fixed sign-off), Alpaca
  fields ``instruction`` (always the same), ``input``, ``output``; ``train.jsonl`` and a separate
  ``test.jsonl`` whose messages never occur in train. Replies come from ``builtin_replies.py``.

Config files refer to them as ``builtin:support_intents/train.jsonl``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from tunelab.data.builtin_replies import (
    GREETING,
    INSTRUCTION,
    POLICIES,
    REPLIES,
    SIGN_OFF,
    house_reply,
    order_number,
)
from tunelab.data.builtin_templates import CLOSERS, CONTEXTS, INTENTS, OPENERS, SLOTS

BUILTIN_DATA_DIR = Path(__file__).resolve().parent.parent / "builtin_data"
INTENT_TRAIN_PER_LABEL = 80
INTENT_TEST_PER_LABEL = 20
INSTRUCTION_TRAIN_PER_INTENT = 32
INSTRUCTION_TEST_PER_INTENT = 5
SEED = 20261129


def builtin_data_path(spec: str) -> Path:
    """Map ``builtin:<dataset>/<file>`` to the shipped file; raise ValueError naming what exists."""
    relative = spec.removeprefix("builtin:")
    path = (BUILTIN_DATA_DIR / relative).resolve()
    if Path(relative).is_absolute() or BUILTIN_DATA_DIR.resolve() not in path.parents or not path.is_file():
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


def customer_message(intent: str, rng: random.Random, chosen: dict[str, str] | None = None,
                     template: str | None = None) -> str:
    """One synthetic customer message for ``intent``, from ``template`` or a random one of its templates."""
    template = rng.choice(INTENTS[intent]) if template is None else template
    body = _noisy(_fill(template, rng, chosen), rng)
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


def _reply_pair(intent: str, rng: random.Random) -> dict | None:
    """One message and its house-style reply; None when a typo hit a number the reply repeats."""
    template = rng.choice(INTENTS[intent])
    chosen: dict[str, str] = {}
    message = customer_message(intent, rng, chosen, template=template)
    echoed = [order_number(chosen), chosen.get("amount")]
    if any(value and value.lower() not in message.lower() for value in echoed):
        return None  # the reply would quote "#12345" to a customer who wrote "#13245"
    return {"instruction": INSTRUCTION, "input": message, "output": house_reply(intent, template, chosen, rng)}


def support_instruction_splits() -> dict[str, list[dict]]:
    """Train and test reply pairs, balanced per intent; no test message occurs in train (case-insensitive)."""
    rng = random.Random(SEED + 1)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    seen: set[str] = set()
    for intent in INTENTS:
        rows: list[dict] = []
        while len(rows) < INSTRUCTION_TRAIN_PER_INTENT + INSTRUCTION_TEST_PER_INTENT:
            row = _reply_pair(intent, rng)
            if row and row["input"].lower() not in seen:
                seen.add(row["input"].lower())
                rows.append(row)
        splits["test"] += rows[:INSTRUCTION_TEST_PER_INTENT]
        splits["train"] += rows[INSTRUCTION_TEST_PER_INTENT:]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def support_instructions() -> list[dict]:
    """The training reply pairs (``instruction``, ``input``, ``output``) of ``support_instructions``."""
    return support_instruction_splits()["train"]


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

Customer messages answered by Sam of Northwind, a fictional online shop, in one house style with
fixed policies: {n_train} pairs in `train.jsonl` and {n_test} in `test.jsonl`. Alpaca fields
`instruction`, `input` (the customer message) and `output` (the reply).

- **Made by**: `tunelab/data/builtin.py`. Messages come from the same generator as `support_intents`
  (same templates, slot values, background sentences and noise; another seed) and cover its
  {n_labels} intents. Replies come from hand-written templates in `builtin_replies.py`: each intent is
  split into topics by its message template ({n_topics} topics, e.g. a wrong, damaged or missing
  delivery), each topic has two phrasings, and the policy sentences below are pasted in verbatim.
  Seed {seed}. Regenerate with `python -m tunelab.data.builtin`.
- **Instruction**: the same in every row: "{instruction}"
- **House style**: every reply opens with "{greeting}",
  echoes the order number as `#12345` and the product when the message names them (it never
  invents one), states the policy that applies, gives one next step and ends with
  "{sign_off}". Replies are {min_words}-{max_words} words long ({mean_words} on average).
- **Policies**, stated in exactly these words wherever they apply; no reply has any other duration:
{policies}
- **Size**: {n_train} training and {n_test} test pairs, balanced ({train_per} and {test_per} per intent).
  No test message occurs in train (case-insensitive).
- **Use**: instruction tuning of small chat models (SmolLM2-135M-Instruct and the like) or the offline
  tiny models (`configs/support-instructions-tiny.yaml`). Set `data.test` to
  `builtin:support_instructions/test.jsonl` to score held-out messages; otherwise `tunelab prepare`
  splits validation and test from train.
- **What the test split measures**: test messages are new, but come from the same templates and are
  answered by the same reply templates, so it shows whether a model learned the style and the
  policies, in-distribution; real tickets will be harder.
- **Limits**: synthetic and templated. Northwind and its policies are fictional; replies state a
  policy rather than an order's real state, which no template knows. English only, short messages,
  no personal data.
"""


def write_builtin_data(root: Path = BUILTIN_DATA_DIR) -> list[Path]:
    """Write both datasets with their data cards under ``root``; return the files written."""
    intents = support_intents()
    instructions = support_instruction_splits()
    files = {
        "support_intents/train.jsonl": _jsonl(intents["train"]),
        "support_intents/test.jsonl": _jsonl(intents["test"]),
        "support_intents/CARD.md": INTENT_CARD.format(
            n_labels=len(INTENTS), labels=", ".join(f"`{k}`" for k in INTENTS), seed=SEED,
            n_train=len(intents["train"]), n_test=len(intents["test"]),
            train_per=INTENT_TRAIN_PER_LABEL, test_per=INTENT_TEST_PER_LABEL),
        "support_instructions/train.jsonl": _jsonl(instructions["train"]),
        "support_instructions/test.jsonl": _jsonl(instructions["test"]),
        "support_instructions/CARD.md": _instruction_card(instructions),
    }
    written = []
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _instruction_card(splits: dict[str, list[dict]]) -> str:
    words = [len(row["output"].split()) for rows in splits.values() for row in rows]
    return INSTRUCTION_CARD.format(
        n_train=len(splits["train"]), n_test=len(splits["test"]), n_labels=len(INTENTS),
        n_topics=sum(len(topics) for topics in REPLIES.values()), seed=SEED + 1, instruction=INSTRUCTION,
        greeting=GREETING, sign_off=SIGN_OFF, min_words=min(words), max_words=max(words),
        mean_words=round(sum(words) / len(words)), policies="\n".join(f"  - {p}" for p in POLICIES.values()),
        train_per=INSTRUCTION_TRAIN_PER_INTENT, test_per=INSTRUCTION_TEST_PER_INTENT)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    for written_path in write_builtin_data():
        print(written_path)
