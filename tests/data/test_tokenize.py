"""Masking puts -100 exactly on prompt tokens and keeps EOS; packing never lets a label cross examples."""

import pytest

from tunelab.data.tokenize import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    EncodeStats,
    chat_segments,
    encode_causal,
    encode_classification,
    ensure_chat_template,
    pack,
)


@pytest.fixture
def tokenizer(tiny_tokenizer):
    ensure_chat_template(tiny_tokenizer, None)
    return tiny_tokenizer


def encode(example, tokenizer, max_length=512, mask_prompt=True, drop_long=False, stats=None):
    return encode_causal(example, tokenizer, max_length, mask_prompt, drop_long, stats or EncodeStats())


def test_default_template_is_used_when_the_tokenizer_has_none(tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    assert ensure_chat_template(tiny_tokenizer, None) == "tunelab default"
    assert tiny_tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    assert ensure_chat_template(tiny_tokenizer, "{{ messages }}") == "config (data.chat_template)"
    ensure_chat_template(tiny_tokenizer, DEFAULT_CHAT_TEMPLATE)


def test_instruction_labels_mask_exactly_the_prompt_and_keep_eos(tokenizer):
    example = {"instruction": "Reply to the customer.", "input": "where is my order", "output": "It shipped today."}
    [record] = encode(example, tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Reply to the customer.\n\nwhere is my order"}], tokenize=False,
        add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids, labels = record["input_ids"], record["labels"]
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[n_prompt:], skip_special_tokens=True) == "It shipped today."


def test_multi_turn_chat_trains_on_every_assistant_reply_only(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "See you."}]
    [record] = encode({"messages": messages}, tokenizer)
    learned = [t for t, label in zip(record["input_ids"], record["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == f"Hello.{tokenizer.eos_token}See you.{tokenizer.eos_token}"
    segments = chat_segments(messages, tokenizer)
    assert [in_loss for _, in_loss in segments] == [False, True, False, True]


def test_mask_prompt_off_trains_on_everything(tokenizer):
    [record] = encode({"instruction": "Say hi.", "input": "", "output": "hi"}, tokenizer, mask_prompt=False)
    assert record["labels"] == record["input_ids"]


def test_a_tokenizer_template_is_respected(tiny_tokenizer):
    tiny_tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                                    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    try:
        assert ensure_chat_template(tiny_tokenizer, None) == "tokenizer"
        [record] = encode({"instruction": "Q", "input": "", "output": "A"}, tiny_tokenizer)
        text = tiny_tokenizer.decode(record["input_ids"])
        assert text.startswith("user: Q\nassistant: A")
        # This template does not close replies, so tunelab appends EOS inside the loss.
        assert record["input_ids"][-1] == tiny_tokenizer.eos_token_id == record["labels"][-1]
    finally:
        tiny_tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def test_truncation_counts_and_drops(tokenizer):
    long = {"instruction": "Reply to this.", "input": "", "output": "answer " * 40}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Reply to this."}], tokenize=False,
                                           add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    stats = EncodeStats()
    [record] = encode(long, tokenizer, max_length=n_prompt + 5, stats=stats)
    assert len(record["input_ids"]) == n_prompt + 5 and stats.truncated == 1 and stats.lengths[0] > n_prompt + 40
    assert sum(label != IGNORE_INDEX for label in record["labels"]) == 5
    stats = EncodeStats()
    assert encode(long, tokenizer, max_length=n_prompt + 5, drop_long=True, stats=stats) == []
    assert stats.dropped_too_long == 1
    stats = EncodeStats()  # the prompt alone fills max_length: nothing left to learn
    assert encode(long, tokenizer, max_length=n_prompt, stats=stats) == [] and stats.dropped_no_target == 1


def test_text_rows_are_chunked_not_truncated(tokenizer):
    text = " ".join(f"word{i}" for i in range(200))
    stats = EncodeStats()
    records = encode({"text": text}, tokenizer, max_length=64, stats=stats)
    assert len(records) > 1 and stats.chunked == 1
    assert sum(len(r["input_ids"]) for r in records) == stats.lengths[0]
    assert records[-1]["input_ids"][-1] == tokenizer.eos_token_id


def test_packing_keeps_example_boundaries(tokenizer):
    examples = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer number {i}."} for i in range(12)]
    records = [r for e in examples for r in encode(e, tokenizer)]
    packed = pack(records, max_length=64)
    assert len(packed) < len(records)
    assert all(len(p["input_ids"]) <= 64 for p in packed)
    # Walk the packed sequences: each example starts where position ids restart at 0.
    rebuilt = []
    for p in packed:
        assert len(p["input_ids"]) == len(p["labels"]) == len(p["position_ids"]) == len(p["attention_mask"])
        starts = [i for i, pos in enumerate(p["position_ids"]) if pos == 0] + [len(p["input_ids"])]
        for a, b in zip(starts, starts[1:]):
            assert p["labels"][a] == IGNORE_INDEX  # no label predicted from the previous example
            rebuilt.append(p["input_ids"][a:b])
    assert rebuilt == [r["input_ids"] for r in records]
    assert sum(lab != IGNORE_INDEX for p in packed for lab in p["labels"]) == sum(
        lab != IGNORE_INDEX for r in records for lab in r["labels"][1:])


def test_classification_encoding_uses_special_tokens_and_truncates():
    from transformers import AutoTokenizer

    from tunelab.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("builtin:minilm"))
    stats = EncodeStats()
    records = encode_classification(["short one", "long " * 50], [0, 1], tokenizer, 16, False, stats)
    assert records[0]["input_ids"][0] == tokenizer.cls_token_id and records[0]["input_ids"][-1] == tokenizer.sep_token_id
    assert len(records[1]["input_ids"]) == 16 and records[1]["input_ids"][-1] == tokenizer.sep_token_id
    assert [r["labels"] for r in records] == [0, 1] and stats.truncated == 1
