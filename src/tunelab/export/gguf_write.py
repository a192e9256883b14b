"""Write a merged transformers model and its tokenizer as one GGUF file, then check it reads back.

    result = export_gguf(model, tokenizer, Path("out/model-q8_0.gguf"), "q8_0", name="my-run")

The file is written under a temporary name in the target folder, read back with transformers
(unless ``verify`` is off) and only then renamed into place, so the target is either the old
file or a complete, checked new one. An Ollama ``Modelfile`` is written beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import gguf
import numpy as np

from tunelab import __version__
from tunelab.errors import ExportError
from tunelab.export.architectures import Architecture, architecture_for, gguf_tensors
from tunelab.export.dtypes import GGUFDtype, dtype_entry
from tunelab.export.modelfile import ollama_name, write_modelfile
from tunelab.export.verify import Verification, verify_gguf
from tunelab.export.vocab import Vocabulary, vocabulary, write_vocabulary
from tunelab.rundir import make_readable


@dataclass
class ExportResult:
    path: Path
    modelfile: Path
    name: str                          # the Ollama model name the Modelfile suggests (from general.name)
    dtype: str
    architecture: str
    size_bytes: int
    write_seconds: float
    verification: Verification | None  # None with verify off


def export_gguf(model, tokenizer, out: Path, dtype: str = "f16", name: str = "model", verify: bool = True,
                description: str = "") -> ExportResult:
    """Write ``model`` (a transformers causal LM, adapter already merged) and ``tokenizer`` to ``out``.

    Returns what was written and, with ``verify``, how closely transformers' reading of the file
    matches ``model``.

    Raises:
        ExportError: unsupported architecture, tokenizer or dtype, an ``out`` not ending in .gguf,
            or a file that failed the read-back check (nothing is written then).
    """
    out = check_target(out)
    entry, arch = dtype_entry(dtype), architecture_for(model.config)
    vocab = vocabulary(tokenizer, model.get_input_embeddings().weight.shape[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with staged_file(out) as partial:
        write_file(partial, model, vocab, arch, entry, name, description)
        write_seconds = time.perf_counter() - start
        check = verify_gguf(partial, model, tokenizer, entry, label=str(out)) if verify else None
    make_readable(out)
    modelfile = write_modelfile(out, tokenizer, name, check)
    return ExportResult(out, modelfile, ollama_name(name), dtype, arch.name, out.stat().st_size, write_seconds, check)


def check_target(out: str | Path) -> Path:
    """``out`` as a Path, if it can be a GGUF file's name.

    Raises:
        ExportError: it does not end in .gguf, or is a folder.
    """
    out = Path(out)
    if out.suffix != ".gguf" or out.is_dir():
        raise ExportError(f"--out: {out} must be a file name ending in .gguf")
    return out


@contextlib.contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``, on any failure delete it."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_file(path: Path, model, vocab: Vocabulary, arch: Architecture, dtype: GGUFDtype, name: str,
               description: str = "") -> None:
    """Write the GGUF: general metadata, the architecture's hyperparameters, the vocabulary, the tensors."""
    writer = gguf.GGUFWriter(path, arch.name)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_description(description or f"exported by tunelab {__version__}")
        writer.add_file_type(gguf.LlamaFileType[dtype.file_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        arch.write_hyperparameters(writer, model.config)
        write_vocabulary(writer, vocab)
        for tensor_name, array in gguf_tensors(arch, model):
            data, kind = encode(array, dtype)
            writer.add_tensor(tensor_name, data, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def encode(array: np.ndarray, dtype: GGUFDtype) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """An fp32 tensor in the file's type: 1-D tensors (norms, biases) stay F32, as llama.cpp's own
    converter keeps them; a matrix whose rows do not split into whole quantization blocks falls back to F16."""
    kind = gguf.GGMLQuantizationType[dtype.matrix_type] if array.ndim >= 2 else gguf.GGMLQuantizationType.F32
    block_size = gguf.GGML_QUANT_SIZES[kind][0]  # weights per block (1 for float types)
    if array.shape[-1] % block_size:
        kind = gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), kind), kind
