"""A transformers tokenizer as GGUF tokenizer metadata (llama.cpp's ``gpt2`` model: byte-level BPE).

llama.cpp stores the vocabulary, its BPE merges and the special token ids under
``tokenizer.ggml.*``, and picks its pre-tokenizer (how text is split before the merges) by name
from ``tokenizer.ggml.pre``; ``PRE_TOKENIZERS`` maps the Hugging Face pre-tokenizers whose split
llama.cpp reproduces to that name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import gguf

from tunelab.errors import ExportError

GPT2_SPLIT = ("ByteLevel(regex)",)
# llama.cpp's "llama-bpe" (Llama 3) split regex, as Llama 3's tokenizer.json spells it
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Pre-tokenizer steps (see ``pre_tokenizer_steps``) -> llama.cpp's name for the same split.
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    GPT2_SPLIT: "gpt-2",                                     # GPT-2's regex, as in SmolLM2 and tunelab's tiny models
    ("Digits(individual)", *GPT2_SPLIT): "smollm",           # GPT-2's regex after splitting off every digit
    (f"Split({LLAMA3_REGEX})", "ByteLevel"): "llama-bpe",     # Llama 3's regex
}


@dataclass
class Vocabulary:
    pre: str                     # llama.cpp pre-tokenizer name
    tokens: list[str]            # by id, spelled as the BPE model spells them (bytes mapped to printable chars)
    token_types: list[int]       # gguf.TokenType per token
    merges: list[str]            # "left right", best first
    special_ids: dict[str, int]  # bos, eos, pad, unk -> id (those the tokenizer has)
    add_bos: bool                # the tokenizer puts BOS before a text
    add_eos: bool
    chat_template: str | list[dict] | None


def pre_tokenizer_steps(spec: dict | None) -> tuple[str, ...]:
    """A tokenizer.json pre-tokenizer as a tuple of readable steps, the keys of ``PRE_TOKENIZERS``."""
    if not spec:
        return ()
    kind = spec["type"]
    if kind == "Sequence":
        return tuple(step for inner in spec["pretokenizers"] for step in pre_tokenizer_steps(inner))
    if kind == "ByteLevel":
        prefix = ", prefix space" if spec.get("add_prefix_space") else ""
        return (f"ByteLevel{'(regex' + prefix + ')' if spec.get('use_regex', True) else prefix}",)
    if kind == "Digits":
        return ("Digits(individual)" if spec.get("individual_digits") else "Digits",)
    if kind == "Split":
        pattern = spec.get("pattern", {})
        return (f"Split({pattern.get('Regex', pattern.get('String'))})",)
    return (kind,)


def vocabulary(tokenizer, vocab_size: int) -> Vocabulary:
    """The GGUF vocabulary of a fast byte-level BPE tokenizer, padded to the model's ``vocab_size`` rows.

    Raises:
        ExportError: the tokenizer is not a byte-level BPE llama.cpp reproduces, or has more tokens
            than the model has embedding rows.
    """
    spec = _tokenizer_json(tokenizer)
    pre = PRE_TOKENIZERS.get(pre_tokenizer_steps(spec.get("pre_tokenizer")))
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or pre is None or spec.get("normalizer"):
        steps = " + ".join(pre_tokenizer_steps(spec.get("pre_tokenizer"))) or "none"
        raise ExportError(f"tokenizer: a {model.get('type')} model with pre-tokenizer {steps} and normalizer "
                          f"{(spec.get('normalizer') or {}).get('type')}: GGUF export supports byte-level BPE "
                          "tokenizers without a normalizer, split like GPT-2, SmolLM or Llama 3")
    tokens, token_types = _tokens(tokenizer, vocab_size)
    return Vocabulary(pre=pre, tokens=tokens, token_types=token_types,
                      merges=[m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])],
                      special_ids=_special_ids(tokenizer), **_added_specials(tokenizer),
                      chat_template=_chat_template(tokenizer))


def write_vocabulary(writer: gguf.GGUFWriter, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "pad": writer.add_pad_token_id,
              "unk": writer.add_unk_token_id}
    for role, token_id in vocab.special_ids.items():
        adders[role](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"tokenizer: {type(tokenizer).__name__} is a slow (Python) tokenizer; GGUF export "
                          "needs a fast one with a tokenizer.json")
    return json.loads(backend.to_str())


def _tokens(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportError(f"tokenizer: it has token ids up to {max(by_id)} but the model has only {vocab_size} "
                          "embedding rows")
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id not in by_id:  # embedding rows no token uses (vocabularies padded to a round size)
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[token_id])
        if token_id in added:
            types.append(gguf.TokenType.CONTROL if added[token_id].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
           "unk": tokenizer.unk_token_id}
    return {role: token_id for role, token_id in ids.items() if token_id is not None}


def _added_specials(tokenizer) -> dict[str, bool]:
    """Whether the tokenizer puts BOS before and EOS after a plain text (what llama.cpp should do too)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    start = full.index(plain[0]) if plain and plain[0] in full else 0
    before, after = full[:start], full[start + len(plain):]
    return {"add_bos": tokenizer.bos_token_id is not None and tokenizer.bos_token_id in before,
            "add_eos": tokenizer.eos_token_id is not None and tokenizer.eos_token_id in after}


def _chat_template(tokenizer) -> str | list[dict] | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: GGUF keeps them as a list
        return [{"name": name, "template": text} for name, text in template.items()]
    return template or None
