"""Which fp32 weights a quantized copy was made from, so that a stale copy is never used.

A copy's ``quantized.json`` records the SHA-256 of the weight files it was made from and a cheap
stamp (sizes and modification times); ``check_fresh`` compares both with what the run holds now.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

from tunelab.errors import RunFolderError
from tunelab.rundir import RunDir, read_json, variant_info_path


def weights_stamp(folder: Path) -> dict[str, list[int]]:
    """{file: [bytes, modification time in ns]} of a model folder's weight files: a cheap check that
    they were not rewritten (``weights_digest`` is the exact one)."""
    return {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in sorted(folder.glob("*.safetensors"))}


def weights_digest(folder: Path) -> str:
    """SHA-256 over a model folder's weight files (name and content, in name order): which weights these are."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class SourceWeights:
    """The fp32 weights a copy is made from. A copy records their SHA-256 and a stamp (sizes and
    modification times): an unchanged stamp proves them unchanged without reading gigabytes."""

    def __init__(self, folder: Path):
        self.folder = folder

    @cached_property
    def sha256(self) -> str:
        return weights_digest(self.folder)

    def record(self) -> dict:
        return {"source_sha256": self.sha256, "source_stamp": weights_stamp(self.folder)}

    def made(self, info: dict) -> bool:
        """Whether the copy described by ``info`` (its quantized.json) was made from these weights."""
        if "source_sha256" not in info:
            return False
        return info.get("source_stamp") == weights_stamp(self.folder) or info["source_sha256"] == self.sha256


def check_fresh(run_dir: Path, folder: Path) -> None:
    """Refuse a quantized copy made from other weights than the run's fp32 model holds now.

    A run whose fp32 folder was deleted to save space cannot be checked, and is let through.

    Raises:
        RunFolderError: the copy has no record of its source, or was made from other weights.
    """
    info = read_json(variant_info_path(folder))
    run = RunDir(run_dir)
    source = run.model_dir if info.get("source") == run.model_dir.name else run.merged_dir
    again = f"quantize again: tunelab quantize {run_dir} --method {folder.name} --force"
    if "source_sha256" not in info:
        raise RunFolderError(f"{folder}: made by an older tunelab that did not record which weights it came from; "
                             f"{again}")
    if source.exists() and not SourceWeights(source).made(info):
        raise RunFolderError(f"{folder}: made from other weights than {source.name}/ holds now (the run was "
                             f"trained or merged again since); {again}")
