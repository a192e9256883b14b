"""Row formats: detect which one a dataset uses and turn each raw record into a clean example.

A registry maps each format name to a function ``(record, data_config) -> example`` that
raises ``RowError`` naming the field and what was expected. Clean examples look like:

- classification: ``{"text": str, "label": str}``
- instruction:    ``{"instruction": str, "input": str, "output": str}``
- chat:           ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
- text:           ``{"text": str}``
"""

from __future__ import annotations

import json
from typing import Any, Callable

from tunelab.config.schema import DataSection

ROLES = ("system", "user", "assistant")
# ShareGPT's `from` values, mapped to OpenAI roles.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bot": "assistant"}


class RowError(ValueError):
    """One problem in one row: the field and what was expected."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"field '{field}': {message}")


def detect_format(task: str, record: dict, data: DataSection) -> str | None:
    """The format a record's fields imply for ``task``; None when nothing fits."""
    if task == "classification":
        return "classification"
    if data.messages_field in record or "conversations" in record:
        return "chat"
    if data.instruction_field in record and data.output_field in record:
        return "instruction"
    if data.text_field in record:
        return "text"
    return None


def _text(record: dict, field: str, what: str, required: bool = True) -> str:
    if field not in record or record[field] is None:
        if not required:
            return ""
        raise RowError(field, f"missing; expected {what}")
    value = record[field]
    if not isinstance(value, str):
        raise RowError(field, f"expected a string ({what}), got {_describe(value)}")
    if required and not value.strip():
        raise RowError(field, f"empty; expected {what}")
    return value


def _classification(record: dict, data: DataSection) -> dict:
    text = _text(record, data.text_field, "the input text (set data.text_field if it has another name)")
    if data.label_field not in record or record[data.label_field] is None:
        raise RowError(data.label_field, "missing; expected the class label (set data.label_field if it has another name)")
    label = record[data.label_field]
    if isinstance(label, float) and label.is_integer():
        label = int(label)  # parquet and pandas turn integer labels with gaps into floats
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise RowError(data.label_field, f"expected a string or integer label, got {_describe(label)}")
    label = str(label).strip()
    if not label:
        raise RowError(data.label_field, "empty; expected the class label")
    return {"text": text, "label": label}


def _instruction(record: dict, data: DataSection) -> dict:
    return {
        "instruction": _text(record, data.instruction_field, "the instruction"),
        "input": _text(record, data.input_field, "extra input for the instruction", required=False),
        "output": _text(record, data.output_field, "the expected response"),
    }


def _chat(record: dict, data: DataSection) -> dict:
    if data.messages_field in record:
        field, role_key, content_key, roles = data.messages_field, "role", "content", {r: r for r in ROLES}
    elif "conversations" in record:
        field, role_key, content_key, roles = "conversations", "from", "value", SHAREGPT_ROLES
    else:
        raise RowError(data.messages_field, "missing; expected a list of {role, content} messages (or a ShareGPT "
                                            "`conversations` list)")
    turns = record[field]
    if not isinstance(turns, list) or not turns:
        raise RowError(field, f"expected a non-empty list of messages, got {_describe(turns)}")
    messages = []
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, f"expected an object with '{role_key}' and '{content_key}', got {_describe(turn)}")
        role = turn.get(role_key)
        if role not in roles:
            raise RowError(f"{where}.{role_key}", f"unknown role {role!r}; expected one of {', '.join(roles)}")
        try:
            content = _text(turn, content_key, "the message text")
        except RowError as err:
            raise RowError(f"{where}.{err.field}", err.message) from None
        messages.append({"role": roles[role], "content": content})
    _check_turn_order(messages, field, role_key)
    return {"messages": messages}


def _check_turn_order(messages: list[dict], field: str, role_key: str) -> None:
    for i, message in enumerate(messages):
        if message["role"] == "system" and i > 0:
            raise RowError(f"{field}[{i}].{role_key}", "a system message may only come first")
    if not any(m["role"] == "user" for m in messages):
        raise RowError(field, "no user message; a conversation needs at least one user turn")
    if messages[-1]["role"] != "assistant":
        last = len(messages) - 1
        raise RowError(f"{field}[{last}].{role_key}",
                       f"the conversation ends with '{messages[-1]['role']}'; it must end with an assistant reply to train on")


def _plain_text(record: dict, data: DataSection) -> dict:
    return {"text": _text(record, data.text_field, "the text (set data.text_field if it has another name)")}


FORMATS: dict[str, Callable[[dict, DataSection], dict]] = {
    "classification": _classification,
    "instruction": _instruction,
    "chat": _chat,
    "text": _plain_text,
}


def example_key(example: dict) -> str:
    """The whole example, for exact-duplicate detection."""
    return json.dumps(example, sort_keys=True, ensure_ascii=False)


def input_key(example: dict) -> str:
    """The part a model sees as input, for leakage checks (the same question with another answer leaks too)."""
    if "label" in example:
        return " ".join(example["text"].lower().split())
    if "instruction" in example:
        return json.dumps([example["instruction"].strip(), example["input"].strip()])
    if "messages" in example:
        return json.dumps(example["messages"][:-1], sort_keys=True)
    return example["text"].strip()


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value[:30]!r}"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)
