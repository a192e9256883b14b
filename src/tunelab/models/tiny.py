"""Tiny randomly initialised causal LMs for offline tests and demos.

    tunelab make-tiny-model --arch llama --out models/tiny-llama

The tokenizer is a byte-level BPE trained with the `tokenizers` library on tunelab's built-in
support data, so it round-trips any text. The model is built from a transformers config and
saved with ``save_pretrained`` (safetensors), so it loads like any hub model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from tunelab.data.builtin import support_instructions, support_intents
from tunelab.rundir import make_readable

EOS = "<|endoftext|>"
PAD = "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]  # markers of tunelab's default chat template
CACHE_VERSION = 2


def _llama_config(vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int, ids: dict):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 3,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max_positions, tie_word_embeddings=True, **ids)


def _gpt2_config(vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int, ids: dict):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                      n_positions=max_positions, **ids)


ARCHITECTURES: dict[str, Callable] = {"llama": _llama_config, "gpt2": _gpt2_config}


def corpus() -> list[str]:
    """Texts the tokenizer learns from: every built-in message, instruction and reply."""
    intents = support_intents()
    texts = [row["text"] for split in intents.values() for row in split]
    for row in support_instructions():
        texts += [row["instruction"], row["input"], row["output"]]
    return texts


def train_tokenizer(vocab_size: int = 2048):
    """A byte-level BPE tokenizer (GPT-2 style) trained on ``corpus()``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD, *ROLE_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=ROLE_TOKENS, model_max_length=512)


def make_tiny_model(arch: str, out: str | Path, hidden: int = 64, layers: int = 2, heads: int = 4,
                    vocab_size: int = 2048, max_positions: int = 512, seed: int = 0) -> Path:
    """Write a tiny causal LM plus tokenizer to ``out`` and return the folder.

    Raises:
        ValueError: for an unknown ``arch`` (the message lists the valid ones) or bad sizes.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}'; valid: {', '.join(ARCHITECTURES)}")
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} must be divisible by the number of heads {heads}")
    tokenizer = train_tokenizer(vocab_size)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = ARCHITECTURES[arch](len(tokenizer), hidden, layers, heads, max_positions, ids)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one instant shard
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = {"made_by": "tunelab make-tiny-model", "arch": arch, "hidden": hidden, "layers": layers,
            "heads": heads, "vocab_size": len(tokenizer), "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters()),
            "note": "randomly initialised: for tests and offline demos, not for real use"}
    (out / "tunelab_tiny_model.json").write_text(json.dumps(card, indent=2) + "\n")
    return out


def tiny_folder(arch: str, cache: Path) -> Path:
    """Where ``builtin:tiny-<arch>`` is kept inside tunelab's cache."""
    return cache / "models" / f"tiny-{arch}-v{CACHE_VERSION}"


def cached_tiny_model(arch: str, cache: Path) -> Path:
    """The folder of ``builtin:tiny-<arch>``, built on first use (atomically, so concurrent runs are safe)."""
    target = tiny_folder(arch, cache)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tiny-{arch}-", dir=target.parent))
    try:
        make_tiny_model(arch, staging)
        make_readable(staging)  # mkdtemp made it private
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").exists():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
