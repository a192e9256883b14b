"""tunelab's built-in data: synthetic customer-support messages the project writes itself.

Three datasets ship inside the package (regenerate with ``python -m tunelab.data.builtin``;
a test checks the shipped files equal what this module writes):

- ``support_intents``: customer messages labelled with one of 10 intents, ``train.jsonl`` and a
  separate ``test.jsonl`` whose texts never occur in train.
- ``support_tickets``: the harder classification set, 32 fine-grained intents in families of look-alikes
  (``builtin_ticket_templates.py``) with ``train.jsonl`` (3% of its rows carry a look-alike's label, as
  annotators' slips do), ``validation.jsonl`` and ``test.jsonl`` of 320 rows each, none of whose texts occur
  in another split.
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
from tunelab.data.builtin_ticket_templates import FAMILIES, MENTIONS, TICKET_INTENTS

BUILTIN_DATA_DIR = Path(__file__).resolve().parent.parent / "builtin_data"
INTENT_TRAIN_PER_LABEL = 80
INTENT_TEST_PER_LABEL = 20
TICKETS_PER_LABEL = {"train": 60, "validation": 10, "test": 10}
TICKET_MISLABELLED = 0.03
TICKET_MENTION_SHARE = 2 / 3
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
        if slot.startswith("other_"):  # a second value of the slot, never the first one again
            base = slot.removeprefix("other_")
            return rng.choice([v for v in SLOTS[base] if v != chosen.get(base)])
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


def support_tickets(mislabelled: float = TICKET_MISLABELLED) -> dict[str, list[dict]]:
    """Train, validation and test rows of ``support_tickets``, balanced per intent, no text in two splits.

    A seeded ``mislabelled`` share (3%) of the training rows get the label of another intent of the same family: real training
    sets carry such slips, and a method that memorises them pays for it on the clean validation and test rows.
    """
    rng = random.Random(SEED + 2)
    splits: dict[str, list[dict]] = {name: [] for name in TICKETS_PER_LABEL}
    seen: set[str] = set()
    family = {intent: members for members in FAMILIES.values() for intent in members}
    for intent, templates in TICKET_INTENTS.items():
        texts: list[str] = []
        while len(texts) < sum(TICKETS_PER_LABEL.values()):
            text = _with_mention(customer_message(intent, rng, template=rng.choice(templates)), intent, family, rng)
            if text.lower() not in seen:
                seen.add(text.lower())
                texts.append(text)
        start = 0
        for name, count in TICKETS_PER_LABEL.items():
            splits[name] += [{"text": t, "label": intent} for t in texts[start:start + count]]
            start += count
    slips = random.Random(SEED + 3)  # its own generator: the texts and their order do not depend on the noise
    for row in slips.sample(splits["train"], round(mislabelled * len(splits["train"]))):
        row["label"] = slips.choice([other for other in family[row["label"]] if other != row["label"]])
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def _with_mention(message: str, intent: str, family: dict[str, list[str]], rng: random.Random) -> str:
    """Two in three tickets also mention a look-alike intent's topic, in a sentence that asks for nothing."""
    if rng.random() >= TICKET_MENTION_SHARE:
        return message
    mention = _fill(rng.choice(MENTIONS[rng.choice([i for i in family[intent] if i != intent])]), rng)
    return f"{mention} {message}" if rng.random() < 0.5 else f"{message} {mention}"


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

TICKET_CARD = """# support_tickets (built into tunelab)

The harder built-in classification set: synthetic customer-support messages, each labelled with one
of {n_labels} fine-grained intents in {n_families} families of look-alikes:
{families}

- **Made by**: `tunelab/data/builtin.py` from the hand-written templates in
  `builtin_ticket_templates.py` (several paraphrases per intent), filled and varied like
  `support_intents` (slot values, openers, closers, casing, punctuation, occasional typos, one or two
  background sentences shared by every intent). Seed {seed}. Regenerate with `python -m tunelab.data.builtin`.
- **Size**: {n_train} training, {n_validation} validation and {n_test} test rows, balanced ({per}
  per intent). No text occurs in two splits (case-insensitive).
- **Label noise**: {n_mislabelled} training rows ({share:.0%}) carry the label of another intent of the same
  family, as annotators' slips do. Validation and test labels are clean.
- **Fields**: `text` (the customer message), `label` (the intent name).
- **Why it exists**: on `support_intents` a fine-tuned MiniLM scores near 1.0 on 80 validation rows,
  so settings cannot be told apart. Here the words a message shares with its family (refund, cancel,
  change, card, password) do not decide the label, and with {n_validation} validation rows one example
  is {resolution:.1%} of accuracy. `experiments.md` compares a linear probe on the frozen encoder with a
  fine-tuned model on it, and sweeps LoRA's rank, alpha, dropout and learning rate against the seed noise.
- **Limits**: English only, template-based, short messages, in-distribution test split; no
  personal data. Scores say how methods and settings compare, not how a model will do on real tickets.
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
    """Write the three datasets with their data cards under ``root``; return the files written."""
    intents = support_intents()
    instructions = support_instruction_splits()
    files = {
        "support_intents/train.jsonl": _jsonl(intents["train"]),
        "support_intents/test.jsonl": _jsonl(intents["test"]),
        "support_intents/CARD.md": INTENT_CARD.format(
            n_labels=len(INTENTS), labels=", ".join(f"`{k}`" for k in INTENTS), seed=SEED,
            n_train=len(intents["train"]), n_test=len(intents["test"]),
            train_per=INTENT_TRAIN_PER_LABEL, test_per=INTENT_TEST_PER_LABEL),
        **_ticket_files(),
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


def _ticket_files() -> dict[str, str]:
    tickets = support_tickets()
    n_train = len(tickets["train"])
    families = "\n".join(f"- {name}: {', '.join(f'`{i}`' for i in members)}" for name, members in FAMILIES.items())
    card = TICKET_CARD.format(
        n_labels=len(TICKET_INTENTS), n_families=len(FAMILIES), families=families, seed=SEED + 2, n_train=n_train,
        n_validation=len(tickets["validation"]), n_test=len(tickets["test"]),
        per=" / ".join(f"{n} {name}" for name, n in TICKETS_PER_LABEL.items()),
        n_mislabelled=round(TICKET_MISLABELLED * n_train), share=TICKET_MISLABELLED,
        resolution=1 / len(tickets["validation"]))
    return {**{f"support_tickets/{name}.jsonl": _jsonl(rows) for name, rows in tickets.items()},
            "support_tickets/CARD.md": card}


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
