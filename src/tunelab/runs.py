"""The run folder: where every stage writes and the next stage reads.

A run folder describes itself: the resolved config, library versions, the data report and
(after training) metrics. Stages talk to each other only through it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from tunelab.config.describe import to_yaml
from tunelab.config.schema import TunelabConfig
from tunelab.errors import RunFolderError
from tunelab.secrets import redact

COMPLETE_MARKER = "COMPLETE"
LIBRARIES = ("tunelab", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "bitsandbytes")


def write_json(path: Path, value: Any) -> None:
    path.write_text(redact(json.dumps(value, indent=2, ensure_ascii=False)) + "\n", encoding="utf-8")


def write_config(path: Path, cfg: TunelabConfig) -> None:
    path.write_text(redact(to_yaml(cfg)), encoding="utf-8")


def versions() -> dict[str, str | None]:
    """Python, platform and library versions (None where a library is not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform(),
                                    "processor": platform.processor() or platform.machine()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


@contextmanager
def staged_update(run_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its entries into ``run_dir``.

    Nothing in ``run_dir`` changes unless the block finishes, so a failure never leaves a
    half-written run. A run marked complete is only replaced with ``overwrite``.
    """
    if (run_dir / COMPLETE_MARKER).exists() and not overwrite:
        raise RunFolderError(f"{run_dir}: holds a finished run; choose another output.dir, "
                             "or set output.overwrite=true to replace it")
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.staging-", dir=run_dir.parent))
    except OSError as err:
        raise RunFolderError(f"output.dir: cannot create {run_dir} ({err.strerror}: {err.filename}); choose "
                             "another output.dir") from None
    try:
        yield staging
        run_dir.mkdir(exist_ok=True)
        (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        for entry in staging.iterdir():
            target = run_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def make_readable(path: Path) -> None:
    """Give what tunelab wrote under ``path`` the permission bits the user's umask allows.

    safetensors writes its files 0600 (private) whatever the umask; a run folder is meant to be
    shared like any other files the user writes. Bits are only added (a setgid folder stays one),
    and a file system that refuses chmod (vfat, some network mounts) is left as it is.
    """
    umask = _umask()
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
        try:
            if entry.is_symlink():
                continue
            mode = entry.stat().st_mode
            wanted = (0o777 if entry.is_dir() else 0o666) & ~umask
            if mode & wanted != wanted:
                entry.chmod(stat.S_IMODE(mode) | wanted)
        except OSError:
            continue


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask can only be read by setting it)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def folder_size_mb(folder: Path) -> float:
    """MiB of every file under ``folder`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (``train_log.jsonl``, ``predictions.jsonl``); [] when it does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def weights_stamp(folder: Path) -> dict[str, list[int]]:
    """{file: [bytes, modification time in ns]} of a model folder's weight files: a cheap check that
    they were not rewritten (``weights_digest`` is the exact one)."""
    return {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in sorted(folder.glob("*.safetensors"))}


def weights_digest(folder: Path) -> str:
    """SHA-256 over a model folder's weight files (name and content, in name order): which weights these are."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_labels(run_dir: Path) -> list[str]:
    """Classification label names in id order, from ``labels.json``."""
    id2label = read_json(run_dir / "labels.json")["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]
