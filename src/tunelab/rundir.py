"""The run folder: where every stage writes and the next stage reads, and the only module that
knows its file names (``RunDir``).

A run folder describes itself: the resolved config, library versions, the data report and
(after training) metrics. Stages talk to each other only through it::

    RUN/config.yaml  data_report.json  labels.json  data/{train,validation,test}.jsonl  data/tokenized/
        tokenizer/  adapter/ or model/  checkpoints/  train_log.jsonl  metrics.json  versions.json
        README.md  COMPLETE  eval.json  predictions.jsonl  merged/  quantized/<method>/quantized.json
        quantization.json  summary.json  report.html
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import yaml

from tunelab.config.describe import to_yaml
from tunelab.config.load import validate
from tunelab.config.schema import QUANTIZE_METHODS, TunelabConfig
from tunelab.errors import RunFolderError
from tunelab.secrets import redact

COMPLETE_MARKER = "COMPLETE"
VARIANT_INFO = "quantized.json"  # inside quantized/<method>/: how and from which weights the copy was made
VARIANTS = ("adapter", "merged") + QUANTIZE_METHODS
LIBRARIES = ("tunelab", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "bitsandbytes")


@dataclass(frozen=True)
class RunDir:
    """Every path in one run folder, by what it holds."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    # what preparation writes
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_report_path(self) -> Path:
        return self.root / "data_report.json"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def split_path(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"

    @property
    def tokenized_dir(self) -> Path:
        return self.data_dir / "tokenized"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    # what training writes
    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapter"

    @property
    def model_dir(self) -> Path:
        """Full and freeze runs save the whole model here instead of an adapter."""
        return self.root / "model"

    @property
    def adapter_config_path(self) -> Path:
        return self.adapter_dir / "adapter_config.json"  # PEFT's name for it

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def train_log_path(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def train_state_path(self) -> Path:
        return self.root / "train_state.json"

    @property
    def progress_path(self) -> Path:
        """Where training stands (step, total steps, ETA), rewritten as it goes; the studio reads it."""
        return self.root / "progress.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def versions_path(self) -> Path:
        return self.root / "versions.json"

    @property
    def readme_path(self) -> Path:
        return self.root / "README.md"

    @property
    def complete_marker(self) -> Path:
        return self.root / COMPLETE_MARKER

    # what evaluation, quantization and reports write
    @property
    def merged_dir(self) -> Path:
        return self.root / "merged"

    @property
    def quantized_dir(self) -> Path:
        return self.root / "quantized"

    @property
    def quantization_report_path(self) -> Path:
        return self.root / "quantization.json"

    @property
    def quantization_markdown_path(self) -> Path:
        return self.root / "quantization.md"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    def report_path(self, markdown: bool = False) -> Path:
        return self.root / ("report.md" if markdown else "report.html")

    def training_outputs(self) -> list[Path]:
        """Everything a training run and the stages after it leave; removed before a fresh start."""
        return [self.adapter_dir, self.model_dir, self.checkpoints_dir, self.tensorboard_dir, self.metrics_path,
                self.train_log_path, self.versions_path, self.readme_path, self.train_state_path, self.progress_path,
                self.merged_dir,
                self.quantized_dir, self.quantization_report_path, self.quantization_markdown_path,
                eval_path(self.root), predictions_path(self.root), self.summary_path, self.report_path(),
                self.report_path(markdown=True)]

    @property
    def is_run(self) -> bool:
        return self.config_path.exists()

    @property
    def is_complete(self) -> bool:
        return self.complete_marker.exists()

    @property
    def full_model(self) -> bool:
        """Whether training saved the whole model (full, freeze) rather than an adapter."""
        return self.model_dir.exists()

    def trained_dir(self) -> Path:
        """The folder training saved: ``model/`` or ``adapter/``."""
        return self.model_dir if self.full_model else self.adapter_dir

    def variant_dir(self, variant: str | None) -> Path:
        """Where a variant's weights live: None or ``adapter`` for what training saved, ``merged``,
        or a quantization method (``quantized/<method>/``)."""
        if variant in (None, "adapter"):
            return self.trained_dir()
        if variant == "merged":
            return self.model_dir if self.full_model else self.merged_dir
        return self.quantized_dir / variant

    def outputs_dir(self, variant: str | None) -> Path:
        """Where evaluating a variant writes eval.json and predictions.jsonl: the run folder for what
        training saved, the variant's own folder for a merged or quantized copy."""
        folder = self.variant_dir(variant)
        return self.root if folder in (self.model_dir, self.adapter_dir) else folder

    # readers
    def labels(self) -> list[str]:
        """Classification label names in id order, from ``labels.json``."""
        id2label = read_json(self.labels_path)["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]

    def metrics(self) -> dict:
        return read_json(self.metrics_path)

    def data_report(self) -> dict:
        return read_json(self.data_report_path)

    def read_split(self, split: str) -> list[dict]:
        """The prepared rows of one split (train, validation, test)."""
        path = self.split_path(split)
        if not path.exists():
            raise RunFolderError(f"--split: {self.root} has no '{split}' split; use train, validation or test")
        return read_jsonl(path)

    def read_config(self) -> TunelabConfig:
        tree = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return validate(tree, source=str(self.config_path))


STUDIES = ("bakeoff", "sweep", "advise")  # folders of several runs, each with <kind>.json and <kind>.md


def study_path(root: Path, kind: str, markdown: bool = False) -> Path:
    """The report of a study folder: ``bakeoff.json``, ``sweep.md``, ..."""
    return Path(root) / f"{kind}.{'md' if markdown else 'json'}"


def study_kind(root: Path) -> str | None:
    """Which study a folder holds (None: not a study folder)."""
    return next((kind for kind in STUDIES if study_path(root, kind).exists()), None)


def eval_path(folder: Path) -> Path:
    """``eval.json`` of a run folder, or of a merged/quantized copy's folder."""
    return Path(folder) / "eval.json"


def model_card_path(folder: Path) -> Path:
    """The model card inside a saved model or adapter folder (the Hugging Face hub shows ``README.md``)."""
    return Path(folder) / "README.md"


def predictions_path(folder: Path) -> Path:
    return Path(folder) / "predictions.jsonl"


def variant_info_path(folder: Path) -> Path:
    return Path(folder) / VARIANT_INFO


def open_run(run_dir: str | Path) -> tuple[RunDir, TunelabConfig]:
    """A complete run folder and its config; refuses missing or unfinished runs clearly."""
    run = RunDir(run_dir)
    if not run.is_run:
        raise RunFolderError(f"{run.root}: not a tunelab run folder (no config.yaml); train one with tunelab train")
    if not run.is_complete:
        raise RunFolderError(f"{run.root}: the run is incomplete (training did not finish); continue it with "
                             "tunelab train CONFIG --resume")
    return run, run.read_config()


def refuse_remote_code(run_dir: Path, cfg: TunelabConfig, trusted: bool) -> None:
    """Refuse a run whose config asks to run its model's own Python code, unless the user said so."""
    if cfg.model.trust_remote_code and not trusted:
        raise RunFolderError(f"{run_dir}: its config.yaml sets model.trust_remote_code: true, which runs Python code "
                             "that came with the model; if you trust where this run came from, pass "
                             "--trust-remote-code")


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` whole: beside ``path`` first, then renamed over it, so a reader (the studio polls
    these files while a run writes them) never sees half of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(redact(json.dumps(value, indent=2, ensure_ascii=False)) + "\n", encoding="utf-8")
    os.replace(partial, path)


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


def read_optional(path: Path) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    return read_json(path) if path.exists() else None


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (``train_log.jsonl``, ``predictions.jsonl``); [] when it does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
