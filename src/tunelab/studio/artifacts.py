"""What a finished run can hand over: its adapter or model, the merged model, each quantized copy and each
exported file; listed by name, and only what is listed can be downloaded (folders as a zip)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterator

from tunelab.rundir import RunDir
from tunelab.studio.jobs import UnknownRun


class UnknownArtifact(UnknownRun):
    title = "no such artifact"


def artifacts(root: Path) -> dict[str, Path]:
    """``{name: path}`` of what the run folder holds: ``adapter`` or ``model``, ``merged``,
    ``quantized/<method>`` and ``export/<file>``."""
    run = RunDir(root)
    found: dict[str, Path] = {}
    trained = run.trained_dir()
    if trained.is_dir():
        found[trained.name] = trained
    if run.merged_dir.is_dir():
        found["merged"] = run.merged_dir
    for parent in (run.quantized_dir, run.export_dir):
        if parent.is_dir():
            for entry in sorted(parent.iterdir()):
                if not entry.name.startswith(".") and (entry.is_dir() or entry.is_file()):
                    found[f"{parent.name}/{entry.name}"] = entry
    return found


def size_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def listing(root: Path) -> list[dict]:
    return [{"name": name, "kind": "folder" if path.is_dir() else "file", "bytes": size_bytes(path)}
            for name, path in artifacts(root).items()]


def artifact(root: Path, name: str) -> Path:
    """The file or folder of artifact ``name``; only a listed name is one."""
    found = artifacts(root)
    if name not in found:
        raise UnknownArtifact(f"artifact: {name!r} is not one of this run's ({', '.join(found) or 'none yet'})")
    return found[name]


class _Pending(io.RawIOBase):
    """A write-only stream that keeps what was written until ``take`` hands it on."""

    def __init__(self):
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, block) -> int:
        self.data += block
        return len(block)

    def take(self) -> bytes:
        block, self.data = bytes(self.data), bytearray()
        return block


def zipped(folder: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """``folder`` as a zip archive (stored, not compressed: weights do not compress), made while it is sent:
    nothing is written to disk and at most about ``chunk`` bytes are held at a time."""
    out = _Pending()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with path.open("rb") as source, archive.open(path.relative_to(folder).as_posix(), "w",
                                                           force_zip64=True) as target:
                while block := source.read(chunk):
                    target.write(block)
                    yield out.take()
    yield out.take()  # the central directory, written when the archive closes
