"""The studio's workspace: one folder holding everything the browser may create or read.

    tunelab-workspace/
        runs/<name>/          run folders, written by `tunelab train` (output.dir is always here)
        uploads/<file>        data files uploaded from the page
        studio/<name>.yaml    the config each run was started with (what `tunelab train` reads)
        studio/<name>.log     that run's output (training progress, errors)
        studio/<name>.json    its state in the studio's queue (queued, running, complete, failed, stopped)

Every path a submitted config names must resolve inside the workspace (symbolic links followed), or be
a built-in (``builtin:...``), a hub dataset (``hf:...``) or a hub model id. Anything else is refused
before anything is written.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, TunelabError
from tunelab.models.resolve import BUILTIN_MODELS

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")  # the hub's names: at most 96 each
BUILTIN_DATA = re.compile(r"builtin:[A-Za-z0-9][\w.-]{0,63}/[A-Za-z0-9][\w.-]{0,63}")
HUB_DATA = re.compile(rf"hf:{HUB_ID.pattern}(:[\w.-]{{1,64}})?")
UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
# Config keys that name data files or folders (train, validation, test) or other local folders and files.
DATA_KEYS = ("train", "validation", "test")
FOLDER_KEYS = (("method", "init_from"), ("train", "distributed_config"))


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a usable run or file name: letters, digits, ``_ . -``, at most 64, starting with a
    letter or digit (so never ``..``, a hidden file or a path)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TunelabError(f"{what}: {printable_name(name)} is not a usable name; use letters, digits, '_', '.' "
                           "or '-' (at most 64, starting with a letter or digit)")
    return name


def printable_name(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Workspace:
    """The folders under ``root`` (created on first use) and the checks that keep paths inside it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def studio_dir(self) -> Path:
        return self.root / "studio"

    def create(self) -> Workspace:
        for folder in (self.runs_dir, self.uploads_dir, self.studio_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / check_name(name, "run name")

    def config_path(self, name: str) -> Path:
        return self.studio_dir / f"{check_name(name, 'run name')}.yaml"

    def log_path(self, name: str) -> Path:
        return self.studio_dir / f"{check_name(name, 'run name')}.log"

    def state_path(self, name: str) -> Path:
        return self.studio_dir / f"{check_name(name, 'run name')}.json"

    def inside(self, given: str, key: str) -> Path:
        """``given`` (relative to the workspace, or absolute) resolved, if it lies inside the workspace."""
        if not isinstance(given, str) or not given.strip() or given.startswith("~") or "\x00" in given:
            raise ConfigError(f"{key}: {printable_name(given)} is not a path inside the workspace")
        path = Path(given) if Path(given).is_absolute() else self.root / given
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ConfigError(f"{key}: {printable_name(given)} is outside the workspace {self.root}; the studio "
                              "reads and writes only inside it (upload the file, or copy it there)")
        return resolved

    def confine(self, tree: dict[str, Any], name: str) -> dict[str, Any]:
        """A copy of the submitted config ``tree`` with every local path made absolute inside the workspace and
        ``output`` pointing at the run's folder; raises ConfigError naming each key that points elsewhere."""
        if not isinstance(tree, dict):
            raise ConfigError("config: expected an object of config sections (task, model, data, ...)")
        tree, problems = copy.deepcopy(tree), []
        for section, key, check in self._path_keys(tree):
            try:
                tree[section][key] = check(tree[section][key], f"{section}.{key}")
            except ConfigError as err:
                problems += err.problems
        output = tree.get("output") if isinstance(tree.get("output"), dict) else {}
        wanted = self.run_dir(name)
        if output.get("dir") not in (None, "") and not self._resolves_to(output["dir"], wanted):
            problems.append(f"output.dir: the studio writes each run to runs/<name> in the workspace ({wanted}); "
                            "leave output.dir out")
        if problems:
            raise ConfigError(problems)
        tree["output"] = {**output, "dir": str(wanted), "name": name}
        return tree

    def _path_keys(self, tree: dict[str, Any]):
        data = tree.get("data")
        if isinstance(data, dict):
            for key in DATA_KEYS:
                if data.get(key) is not None:
                    yield "data", key, self._data_source
        model = tree.get("model")
        if isinstance(model, dict) and model.get("name") is not None:
            yield "model", "name", self._model_source
        for section, key in FOLDER_KEYS:
            part = tree.get(section)
            if isinstance(part, dict) and part.get(key) is not None:
                yield section, key, lambda given, where: str(self.inside(given, where))

    def _data_source(self, given: Any, key: str) -> str:
        if isinstance(given, str) and given.startswith(("builtin:", "hf:")):
            hub_name = given.removeprefix("hf:").partition(":")[0]
            local = given.startswith("hf:") and (self._exists(hub_name) or self._exists(self.root / hub_name))
            if ".." in given or local or not (BUILTIN_DATA.fullmatch(given) or HUB_DATA.fullmatch(given)):
                raise ConfigError(f"{key}: {printable_name(given)} is not a built-in (builtin:<set>/<file>) or hub "
                                  "dataset (hf:<owner>/<name>[:<config>])")
            return given
        return str(self.inside(given, key))

    def _model_source(self, given: Any, key: str) -> str:
        """A built-in, a local folder inside the workspace, or a hub id (``org/name``) that names no folder."""
        if isinstance(given, str) and given.startswith("builtin:"):
            if given.split(":", 1)[1] not in BUILTIN_MODELS:
                raise ConfigError(f"{key}: {printable_name(given)} is not a built-in model; they are "
                                  + ", ".join(f"builtin:{name}" for name in BUILTIN_MODELS))
            return given
        if isinstance(given, str) and HUB_ID.fullmatch(given) and ".." not in given \
                and not self._exists(self.root / given) and not self._exists(given):
            return given  # a hub id: no folder of that name, here or where the app runs
        folder = self.inside(given, key)
        if not self._exists(folder):
            raise ConfigError(f"{key}: {printable_name(given)} is neither a folder in the workspace nor a hub id "
                              "(owner/name) nor a built-in (builtin:<name>)")
        return str(folder)

    @staticmethod
    def _exists(path: str | Path) -> bool:
        try:
            return Path(path).exists()
        except (OSError, ValueError):  # a name too long for the file system, or with a NUL
            return False

    def _resolves_to(self, given: Any, wanted: Path) -> bool:
        try:
            return self.inside(given, "output.dir") == wanted.resolve()
        except ConfigError:
            return False

    def write_upload(self, filename: str, body: bytes) -> Path:
        """Save an uploaded file under ``uploads/`` atomically (a temporary file renamed into place)."""
        check_name(filename, "file name")
        if not filename.lower().endswith(UPLOAD_SUFFIXES):
            raise TunelabError(f"file name: {filename} must end in one of {', '.join(UPLOAD_SUFFIXES)}")
        if not body:
            raise TunelabError(f"{filename}: the file is empty")
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        target = self.uploads_dir / filename
        handle, partial = tempfile.mkstemp(prefix=f".{filename}.", suffix=".partial", dir=self.uploads_dir)
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(body)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return target

    def uploads(self) -> list[dict]:
        if not self.uploads_dir.exists():
            return []
        return [{"name": p.name, "path": str(p.relative_to(self.root)), "bytes": p.stat().st_size}
                for p in sorted(self.uploads_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
