"""GGUF in: a ``.gguf`` file (llama.cpp's format) converted once to an fp32 safetensors folder.

    model: {name: ~/models/SmolLM2-135M-Instruct.Q4_1.gguf}

transformers reads GGUF through the ``gguf`` package and dequantizes every tensor; tunelab saves
the result as a normal ``save_pretrained`` folder in its cache (keyed by the file's path, size and
modification time), so the slow read happens once and every later stage loads plain safetensors.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from tunelab.errors import ModelLoadError
from tunelab.rundir import make_readable, read_json, write_json

GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "tunelab_source.json"  # provenance of a converted folder: where the weights came from
CONVERSION_VERSION = 1


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` of a GGUF file, after checking it is one transformers can read.

    Raises:
        ModelLoadError: not a GGUF file, truncated or corrupt, or an architecture transformers lacks.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ModelLoadError(f"model.name: cannot read {path} ({err.strerror})") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"model.name: {path} is not a GGUF file (it does not start with 'GGUF')")
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields.get("general.architecture")
        architecture = str(field.contents()) if field is not None else ""
    except Exception as err:  # the reader raises ValueError, IndexError, struct errors... on damaged files
        raise ModelLoadError(f"model.name: {path} is a damaged or truncated GGUF file ({type(err).__name__}: "
                             f"{str(err)[:120]}); download it again") from None
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"model.name: {path} holds a '{architecture or 'unnamed'}' model, which transformers "
                             f"cannot read from GGUF; supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}")
    return architecture


def convert(gguf_file: Path, target: Path, source: dict, echo: Callable[[str], None] = _stderr) -> Path:
    """Dequantize ``gguf_file`` to fp32 and save it, tokenizer included, as ``target`` (atomically).

    ``source`` (where the file came from, its license...) is saved beside the weights as
    ``tunelab_source.json``, so every run that uses the folder can say where its weights came from.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    architecture = gguf_architecture(gguf_file)
    size_mb = gguf_file.stat().st_size / 2**20
    echo(f"converting {gguf_file.name} ({architecture}, {size_mb:.0f} MiB) to an fp32 safetensors folder, "
         f"once: {target}")
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        folder, name = str(gguf_file.parent), gguf_file.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except (ValueError, KeyError, RuntimeError, NotImplementedError) as err:
            raise ModelLoadError(f"model.name: transformers could not read {gguf_file} ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:160]})") from None
        # The weights are plain fp32 now; without this transformers 5 would save them as "GGUF-quantized".
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / SOURCE_FILE, {**source, "gguf_file": gguf_file.name, "architecture": architecture,
                                           "converted_to": "fp32 safetensors (dequantized by transformers)",
                                           "conversion_version": CONVERSION_VERSION})
        make_readable(staging)
        if target.exists():  # a conversion of another version, or one interrupted before its marker
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_converted(target):  # not a lost race with another process converting the same file
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    echo(f"converted in {time.perf_counter() - started:.0f} s")
    return target


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion of this version."""
    marker = folder / SOURCE_FILE
    return marker.exists() and read_json(marker).get("conversion_version") == CONVERSION_VERSION


def cached_gguf_model(path: Path, cache: Path, echo: Callable[[str], None] = _stderr) -> Path:
    """The converted folder of a user's ``.gguf`` file, converting it on first use."""
    path = path.expanduser().resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache / "models" / f"gguf-{path.stem[:40]}-{key}"
    if is_converted(target):
        return target
    source = {"name": path.name, "obtained_from": str(path), "sha256": file_sha256(path),
              "license": _gguf_license(path)}
    return convert(path, target, source, echo)


def _gguf_license(path: Path) -> str | None:
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields.get("general.license")
        return str(field.contents()) if field is not None else None
    except Exception:  # the architecture check already reported a damaged file
        return None
