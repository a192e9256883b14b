"""Read a GGUF back with transformers and check it is the model it was written from.

transformers dequantizes the file to fp32 and undoes llama.cpp's q/k row order, so a correct
file gives the same token ids, the same chat template and (within the type's rounding) the same
logits as the merged fp32 model.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

import gguf

from tunelab.errors import ExportError, ModelLoadError
from tunelab.export.architectures import ARCHITECTURES
from tunelab.export.dtypes import GGUFDtype

# Texts whose token ids must match: words, digits, punctuation, runs of spaces, newlines, non-ASCII.
CHECK_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Order #12345 costs $67.89 -- 3x faster!",
               "  two spaces,\ttab,\nnew line\n\n  indented", "naïve café, Grüße, 日本語, emoji 🙂")
READABLE_ARCHITECTURES = {entry.name for entry in ARCHITECTURES.values()}


@dataclass
class Verification:
    max_abs_logit_diff: float  # over every position and vocabulary entry of the check prompt
    logit_spread: float        # max - min of the reference logits there
    tolerance: float           # largest difference accepted (the dtype's fraction of the spread)
    top1_agreement: float      # share of positions whose most likely next token is the same
    texts_checked: int         # texts whose token ids matched
    chat_template: bool        # whether a chat template was compared (and matched)
    seconds: float

    def summary(self) -> str:
        template = ", chat template identical" if self.chat_template else ""
        return (f"verified: transformers reads it back; max |logit diff| {self.max_abs_logit_diff:.4g} vs the "
                f"merged fp32 model (tolerance {self.tolerance:.3g}), top-1 agreement {self.top1_agreement:.0%}, "
                f"token ids identical on {self.texts_checked} texts{template}")


def check_gguf_file(path: Path) -> str:
    """The architecture of a complete GGUF file tunelab can read back.

    Raises:
        ModelLoadError: not a GGUF file, truncated, or of another architecture.
    """
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # whatever the parser trips on, the cause is the file's bytes
        raise ModelLoadError(f"{path}: not a readable GGUF file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'malformed'})") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelLoadError(f"{path}: truncated GGUF file: tensor {tensor.name} ends at byte "
                                 f"{tensor.data_offset + tensor.n_bytes:,} but the file has {size:,}")
    field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    architecture = field.contents() if field is not None else None
    if architecture not in READABLE_ARCHITECTURES:
        raise ModelLoadError(f"{path}: GGUF architecture '{architecture}' is not supported; tunelab reads "
                             f"{', '.join(sorted(READABLE_ARCHITECTURES))}")
    return architecture


def read_gguf(path: Path):
    """(model, tokenizer) that transformers builds from a GGUF file, the model in fp32 and eval mode.

    transformers 5 leaves ``model.hf_quantizer`` and ``config.quantization_config`` set on it.

    Raises:
        ModelLoadError: the file is not a complete GGUF of a supported architecture.
    """
    path = Path(path)
    check_gguf_file(path)
    return _load(path)


def _load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.models.loading import quietly

    tokenizer = quietly(AutoTokenizer.from_pretrained, path.parent, gguf_file=path.name)
    with contextlib.redirect_stderr(io.StringIO()):  # transformers' dequantizing bar ignores its own switch
        model = quietly(AutoModelForCausalLM.from_pretrained, path.parent, gguf_file=path.name,
                        dtype=torch.float32)
    return model.eval(), tokenizer


def verify_gguf(path: Path, model, tokenizer, dtype: GGUFDtype, label: str | None = None) -> Verification:
    """Compare the GGUF at ``path`` with the ``model`` and ``tokenizer`` it was written from.

    ``label`` names the file in messages (the target's name while ``path`` is still a temporary file).

    Raises:
        ExportError: token ids, the chat template or the logits differ beyond the dtype's tolerance.
    """
    label = label or path.name
    start = time.perf_counter()
    gguf_model, gguf_tokenizer = _load(path)  # just written here: read_gguf's file checks would only cost time
    prompt = check_prompt(tokenizer)
    texts = [*CHECK_TEXTS, prompt]
    for text in texts:
        expected, found = tokenizer(text)["input_ids"], gguf_tokenizer(text)["input_ids"]
        if expected != found:
            raise ExportError(f"{label}: the tokenizer read back from the file splits {text!r} into "
                              f"{found[:12]}... instead of {expected[:12]}...; the tokenizer is not exported right")
    if (tokenizer.chat_template or None) != (gguf_tokenizer.chat_template or None):
        raise ExportError(f"{label}: the chat template read back from the file differs from the tokenizer's")
    diff, spread, agreement = compare_logits(model, gguf_model, tokenizer(prompt, return_tensors="pt"))
    tolerance = dtype.logit_tolerance * spread
    if not diff <= tolerance:
        raise ExportError(f"{label}: its logits differ from the model's by up to {diff:.4g} (tolerance "
                          f"{tolerance:.3g}); the file was not written. --no-verify writes it unchecked")
    return Verification(diff, spread, tolerance, agreement, len(texts), bool(tokenizer.chat_template),
                        time.perf_counter() - start)


def check_prompt(tokenizer) -> str:
    """A short chat turn in the tokenizer's own template (special tokens included), else a plain text."""
    if not getattr(tokenizer, "chat_template", None):
        return CHECK_TEXTS[0]
    return tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2? Answer briefly."}],
                                         tokenize=False, add_generation_prompt=True)


def compare_logits(reference, other, batch) -> tuple[float, float, float]:
    """(max |difference|, spread of the reference logits, share of positions with the same top token)."""
    import torch

    with torch.inference_mode():
        expected = reference(**batch).logits.float()  # (1, T, vocab)
        found = other(**batch).logits.float()
    diff = (expected - found).abs().max().item()
    spread = (expected.max() - expected.min()).item()
    agreement = (expected.argmax(-1) == found.argmax(-1)).float().mean().item()
    return diff, spread, agreement
