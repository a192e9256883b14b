"""The GGUF weight types ``tunelab export --dtype`` offers, with the facts each carries.

Light on purpose (no numpy or gguf import): the command line reads it to list the choices.
Type names are members of ``gguf.LlamaFileType`` and ``gguf.GGMLQuantizationType``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import ExportError

FORMATS = ("gguf",)  # what --format accepts: one file that llama.cpp and Ollama run


@dataclass(frozen=True)
class GGUFDtype:
    file_type: str          # gguf.LlamaFileType member, written as general.file_type
    matrix_type: str        # gguf.GGMLQuantizationType member for 2-D weights (1-D norms stay F32)
    # Read-back check: largest |logit difference| allowed, as a fraction of the reference logits' spread
    # (max - min) on the check prompt. SmolLM2-135M measures 0.06% (f16) and 1.9% (q8_0); a wrong tensor
    # layout or tokenizer is off by a large part of the spread.
    logit_tolerance: float
    description: str


DTYPES: dict[str, GGUFDtype] = {
    "f16": GGUFDtype("MOSTLY_F16", "F16", 0.02,
                     "16-bit floats: half the size of fp32, outputs all but identical"),
    "q8_0": GGUFDtype("MOSTLY_Q8_0", "Q8_0", 0.10,
                      "8-bit integers in blocks of 32 with one fp16 scale each (8.5 bits a weight): about "
                      "a quarter of fp32, outputs very close"),
}


def dtype_entry(name: str) -> GGUFDtype:
    """The registry entry for ``name``.

    Raises:
        ExportError: ``name`` is not a supported type (the message lists them).
    """
    if name not in DTYPES:
        raise ExportError(f"--dtype: unknown type '{name}'; valid: {', '.join(DTYPES)}")
    return DTYPES[name]
