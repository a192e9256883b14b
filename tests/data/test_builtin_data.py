"""The built-in datasets: big and varied enough, honest splits, and exactly what the generator writes."""

import json
import re
import string
from collections import Counter

from tunelab.data.builtin import (
    BUILTIN_DATA_DIR,
    support_instruction_splits,
    support_instructions,
    support_intents,
    write_builtin_data,
)
from tunelab.data.builtin_replies import GREETING, INSTRUCTION, POLICIES, REPLIES, SIGN_OFF, reply_topic
from tunelab.data.builtin_templates import INTENTS

DURATION = re.compile(r"\d+(?:-\d+)? (?:working days?|days|hours|minutes)|\d+-year")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read(name):
    return [json.loads(line) for line in (BUILTIN_DATA_DIR / name).read_text().splitlines()]


def instruction_splits():
    return read("support_instructions/train.jsonl"), read("support_instructions/test.jsonl")


def reply_pattern(phrasing: str) -> str:
    """A regex for a reply made from ``phrasing``: policies verbatim, any text for the customer's details."""
    body = "".join(re.escape(literal) + (re.escape(POLICIES[field]) if field in POLICIES else ".*?" if field else "")
                   for literal, field, _, _ in string.Formatter().parse(phrasing))
    return f"{re.escape(GREETING)}( I've added order #\\d+ to this ticket\\.)? {body} {re.escape(SIGN_OFF)}"


REPLY_PATTERNS = [(intent, re.compile(reply_pattern(p))) for intent, topics in REPLIES.items()
                  for _, phrasings in topics.values() for p in phrasings]


def intent_of(reply: str) -> str:
    """The intent whose house-style template made ``reply``; fails for a reply no template made."""
    intents = {intent for intent, pattern in REPLY_PATTERNS if pattern.fullmatch(reply)}
    assert len(intents) == 1, f"not exactly one template makes: {reply}"
    return intents.pop()


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    written = write_builtin_data(tmp_path)
    names = {str(path.relative_to(tmp_path)) for path in written}
    assert {"support_instructions/train.jsonl", "support_instructions/test.jsonl", "support_intents/test.jsonl"} <= names
    for path in written:
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


def test_instruction_splits_are_big_balanced_and_never_overlap():
    train, test = instruction_splits()
    assert len(train) >= 300 and len(test) >= 40
    for rows in (train, test):
        assert all(set(r) == {"instruction", "input", "output"} and r["instruction"] == INSTRUCTION for r in rows)
        per_intent = Counter(intent_of(r["output"]) for r in rows)
        assert set(per_intent) == set(INTENTS) and len(set(per_intent.values())) == 1, per_intent
    train_messages = {r["input"].lower() for r in train}
    assert len(train_messages) == len(train)
    assert not {r["input"].lower() for r in test} & train_messages


def test_every_reply_is_in_house_style_and_echoes_the_order_number():
    for row in sum(instruction_splits(), []):
        reply, words = row["output"], len(row["output"].split())
        assert reply.startswith(GREETING) and reply.endswith(SIGN_OFF) and 35 <= words <= 70, reply
        asked = set(re.findall(r"\b\d{5}\b", row["input"]))     # order numbers run 10000-99999
        assert set(re.findall(r"#(\d+)", reply)) == asked, row  # every one echoed, none invented


def test_policy_numbers_are_the_same_in_every_reply():
    sentences = [s for row in sum(instruction_splits(), []) for s in SENTENCE_END.split(row["output"])]
    durations = Counter(d for s in sentences for d in DURATION.findall(s))
    assert set(durations) == {"1 working day", "3-5 working days", "30 days", "5 working days", "48 hours",
                              "60 minutes", "30 minutes", "24 hours", "2-year"}
    for sentence in sentences:  # a number of days or hours only ever appears in a policy, word for word
        assert not DURATION.search(sentence) or sentence in POLICIES.values(), sentence
    for topic_words, duration in [("return", "30 days"), ("Refunds", "5 working days"), ("delivery takes",
                                  "3-5 working days"), ("charges", "48 hours"), ("reset links", "60 minutes")]:
        said = {d for s in sentences if topic_words in s for d in DURATION.findall(s)}
        assert said == {duration}, (topic_words, said)


def test_every_message_template_has_a_reply_topic_and_every_topic_is_used():
    assert set(REPLIES) == set(INTENTS)
    for intent, templates in INTENTS.items():
        assert {reply_topic(intent, t) for t in templates} == set(REPLIES[intent]), intent


def test_generation_is_deterministic():
    assert support_intents() == support_intents()
    assert support_instruction_splits() == support_instruction_splits()
    assert support_instructions() == support_instruction_splits()["train"]  # what tiny.py trains its tokenizer on


def test_data_cards_exist():
    for name in ("support_intents", "support_instructions"):
        card = (BUILTIN_DATA_DIR / name / "CARD.md").read_text()
        assert "Made by" in card and "Limits" in card
    card = (BUILTIN_DATA_DIR / "support_instructions" / "CARD.md").read_text()
    assert SIGN_OFF in card and all(policy in card for policy in POLICIES.values())


def test_tickets_are_a_harder_set_with_honest_splits_and_a_little_label_noise():
    from tunelab.data.builtin import support_tickets
    from tunelab.data.builtin_ticket_templates import FAMILIES, TICKET_INTENTS

    splits = {name: read(f"support_tickets/{name}.jsonl") for name in ("train", "validation", "test")}
    assert splits == support_tickets()
    assert len(TICKET_INTENTS) >= 30 and len(splits["validation"]) >= 300 and len(splits["test"]) >= 300
    for name in ("validation", "test"):  # clean and balanced
        assert set(Counter(r["label"] for r in splits[name]).values()) == {10}
    texts = {name: {r["text"].lower() for r in rows} for name, rows in splits.items()}
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    # the training labels that differ from the generator's are look-alikes of the same family, about 3%
    family = {intent: name for name, members in FAMILIES.items() for intent in members}
    assert sorted(family) == sorted(TICKET_INTENTS)
    clean = support_tickets(mislabelled=0.0)
    assert [r["text"] for r in clean["train"]] == [r["text"] for r in splits["train"]]
    slips = [(c["label"], r["label"]) for c, r in zip(clean["train"], splits["train"]) if c["label"] != r["label"]]
    assert len(slips) == round(0.03 * len(splits["train"]))
    assert all(family[true] == family[given] for true, given in slips)
    counts = Counter(r["label"] for r in splits["train"])
    assert len(counts) == len(TICKET_INTENTS) and min(counts.values()) >= 50
    # most tickets also mention a look-alike's topic, so a keyword cannot decide the label
    mentioning = [r for r in splits["test"] if any(_mentions(r["text"], other) for other in TICKET_INTENTS
                                                   if other != r["label"] and family[other] == family[r["label"]])]
    assert len(mentioning) > len(splits["test"]) / 2


def _mentions(text: str, intent: str) -> bool:
    """Whether ``text`` holds one of ``intent``'s background sentences, whole (its slots filled with anything)."""
    from tunelab.data.builtin_ticket_templates import MENTIONS

    patterns = [re.escape(m).replace(r"\{", "{").replace(r"\}", "}") for m in MENTIONS[intent]]
    return any(re.search(re.sub(r"\{\w+\}", ".+?", p), text) for p in patterns)
