"""Turn clean examples into token ids and labels, with the prompt masked out of the loss.

- classification: ``input_ids``, ``attention_mask``, ``labels`` (the class id).
- causal LM: ``input_ids``, ``attention_mask`` and ``labels`` equal to the ids except -100 on
  prompt tokens, so the loss covers completions only, EOS included. Instruction rows become a
  user/assistant conversation rendered with the tokenizer's chat template (or
  ``DEFAULT_CHAT_TEMPLATE`` when it has none); ``text`` rows are split into ``max_length`` chunks.

Nothing is padded here: batches are padded dynamically at training time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from tunelab.errors import DataError

IGNORE_INDEX = -100  # label value the loss skips (PyTorch cross_entropy's ignore_index)

# Used when the tokenizer brings no chat template. One line per role marker, the assistant
# reply closed by EOS (so generation learns to stop), no newline after EOS.
DEFAULT_CHAT_TEMPLATE = (
    # Newlines are written as '\\n' expressions: transformers renders templates with trim_blocks,
    # which would eat a literal newline after a block tag.
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass
class EncodeStats:
    """Counts for the data report, per split."""

    lengths: list[int] = field(default_factory=list)   # tokens per example before truncation
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0                          # prompt filled max_length: nothing to learn
    chunked: int = 0                                    # text rows split into several chunks


def ensure_chat_template(tokenizer, override: str | None) -> str:
    """Set the chat template used for training (and saved with the tokenizer); return its origin."""
    if override:
        tokenizer.chat_template = override
        return "config (data.chat_template)"
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return "tunelab default"


def to_messages(example: dict) -> list[dict]:
    """A conversation for an instruction or chat example."""
    if "messages" in example:
        return example["messages"]
    prompt = example["instruction"] + (f"\n\n{example['input']}" if example["input"].strip() else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": example["output"]}]


def chat_segments(messages: list[dict], tokenizer) -> list[tuple[str, bool]]:
    """Split a rendered conversation into (text, in_loss) pieces; assistant replies are in the loss.

    Each assistant reply is the text the template adds between the prompt rendered with a
    generation prompt and the conversation rendered through that reply.
    """
    def render(msgs: list[dict], add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    segments, done = [], ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, full = render(messages[:i], True), render(messages[: i + 1], False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise DataError("the chat template does not render conversations as growing prefixes, so replies "
                            "cannot be located for loss masking; set data.chat_template to a template that does")
        segments += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return segments


def encode_causal(example: dict, tokenizer, max_length: int, mask_prompt: bool, drop_long: bool,
                  stats: EncodeStats) -> list[dict]:
    """Encode one causal-LM example; returns 0, 1 or (text chunks) several records."""
    if "text" in example:
        return _encode_text(example["text"], tokenizer, max_length, stats)
    ids, labels, reply = [], [], []
    for text, in_loss in chat_segments(to_messages(example), tokenizer):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if (in_loss or not mask_prompt) else [IGNORE_INDEX] * len(piece)
        reply = piece if in_loss else reply
    eos = tokenizer.eos_token_id
    if eos is not None and eos not in reply:  # the template did not close the last reply: do it here
        ids, labels = ids + [eos], labels + [eos]
    if _bos_needed(tokenizer, ids):
        ids, labels = [tokenizer.bos_token_id] + ids, [IGNORE_INDEX] + labels
    stats.lengths.append(len(ids))
    if len(ids) > max_length:
        if drop_long:
            stats.dropped_too_long += 1
            return []
        ids, labels = ids[:max_length], labels[:max_length]
        stats.truncated += 1
    if all(label == IGNORE_INDEX for label in labels):
        stats.dropped_no_target += 1
        return []
    return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}]


def _encode_text(text: str, tokenizer, max_length: int, stats: EncodeStats) -> list[dict]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)  # marks the end of the document
    stats.lengths.append(len(ids))
    chunks = [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    stats.chunked += len(chunks) > 1
    return [{"input_ids": c, "attention_mask": [1] * len(c), "labels": list(c)} for c in chunks if len(c) > 1]


def _bos_needed(tokenizer, ids: list[int]) -> bool:
    """True when the tokenizer normally starts with BOS but the template did not write it."""
    bos = tokenizer.bos_token_id
    if bos is None or (ids and ids[0] == bos) or bos == tokenizer.eos_token_id:
        return False
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and probe[0] == bos


def encode_classification(texts: list[str], labels: list[int], tokenizer, max_length: int,
                          drop_long: bool, stats: EncodeStats) -> list[dict]:
    """Encode texts with the tokenizer's own special tokens; labels are class ids."""
    full_lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    records = []
    for i, length in enumerate(full_lengths):
        stats.lengths.append(length)
        if length > max_length:
            if drop_long:
                stats.dropped_too_long += 1
                continue
            stats.truncated += 1
        records.append({"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
                        "labels": labels[i]})
    return records


def encode_causal_split(examples: list[dict], tokenizer, max_length: int, mask_prompt: bool,
                        drop_long: bool, split: str) -> tuple[list[dict], EncodeStats]:
    """Encode a whole split with a progress bar."""
    stats, records = EncodeStats(), []
    for example in tqdm(examples, desc=f"tokenizing {split}", unit="rows", leave=False, disable=None,
                        mininterval=1.0):
        records += encode_causal(example, tokenizer, max_length, mask_prompt, drop_long, stats)
    return records, stats


def pack(records: list[dict], max_length: int) -> list[dict]:
    """Greedily pack consecutive examples into sequences of at most ``max_length`` tokens.

    Position ids restart at 0 for each example, and each example's first label is -100, so
    no label is predicted across an example boundary.
    """
    packed: list[dict] = []
    current: dict[str, list[int]] = {"input_ids": [], "attention_mask": [], "labels": [], "position_ids": []}
    for record in records:
        n = len(record["input_ids"])
        if current["input_ids"] and len(current["input_ids"]) + n > max_length:
            packed.append(current)
            current = {key: [] for key in current}
        current["input_ids"] += record["input_ids"]
        current["attention_mask"] += [1] * n
        current["labels"] += [IGNORE_INDEX] + record["labels"][1:]
        current["position_ids"] += list(range(n))
    if current["input_ids"]:
        packed.append(current)
    return packed
