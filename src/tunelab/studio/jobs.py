"""The studio's queue: runs started from the browser train one at a time, each in a child process.

A child runs the same code a user would type: ``python -m tunelab train studio/<name>.yaml`` (with
``--resume`` to continue from the last checkpoint), then ``python -m tunelab evaluate runs/<name>``, its
output appended to ``studio/<name>.log``. A run's state lives in ``studio/<name>.json`` and survives the
app: queued runs start when the app starts again, and a run the app left while it trained is ``stopped``
(resumable from its last checkpoint).

Stopping sends the child SIGTERM: training finishes its step, saves a checkpoint and exits (a second stop
kills it at once). A child that fails marks its run ``failed``; its last log lines say why, and the app
keeps serving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import yaml

from tunelab.config import from_dict
from tunelab.config.schema import TunelabConfig
from tunelab.errors import ConfigError, TunelabError
from tunelab.rundir import RunDir, eval_path
from tunelab.serving.web import log_bug
from tunelab.studio.workspace import NAME, Workspace

STATUSES = ("queued", "running", "complete", "failed", "stopped")
LOCAL_TRACKERS = ("tensorboard", "none")  # train.report_to values that stay in the run folder
ACTIONS = ("quantize", "export")  # what a finished run may queue: `tunelab quantize RUN ...`, `tunelab export RUN ...`
LOG_TAIL_LINES = 20
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Job:
    """One run's place in the studio: its state and what its child process is doing."""

    name: str
    status: str = "queued"
    stage: Optional[str] = None          # train, evaluate, quantize or export, while running
    resume: bool = False                 # continue from the last checkpoint
    actions: list[list[str]] = field(default_factory=list)  # tunelab commands to run after evaluating
    returncode: Optional[int] = None
    message: Optional[str] = None        # why it failed or stopped
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    ended: Optional[float] = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


class Jobs:
    """The queue over one workspace. ``start`` begins the worker thread; ``close`` stops it and its child."""

    def __init__(self, workspace: Workspace, python: str = sys.executable, evaluate: bool = True):
        self.workspace, self.python, self.evaluate = workspace.create(), python, evaluate
        self.lock = threading.Condition()
        self.jobs: dict[str, Job] = {}
        self.process: Optional[subprocess.Popen] = None
        self.current: Optional[Job] = None
        self.stop_requested = False
        self.closing = False
        self.thread: Optional[threading.Thread] = None
        self._load()

    # ---- what the API calls ----

    def checked(self, name: str, tree: dict[str, Any]) -> tuple[dict[str, Any], TunelabConfig]:
        """The submitted config ``tree`` confined to the workspace, and validated; what the studio refuses to
        run (model code, pickle weights) raises like an invalid config."""
        tree = self.workspace.confine(tree, name)
        cfg = from_dict(tree, name=name, source=f"submitted for {name}")
        problems = [f"model.{key}: the studio does not run code that comes with a model; train such a model with "
                    "tunelab train on the command line" for key in ("trust_remote_code", "allow_pickle_weights")
                    if getattr(cfg.model, key)]
        if cfg.train.distributed_config is not None:
            problems.append("train.distributed_config: a DeepSpeed or FSDP file can name paths of its own, so the "
                            "studio takes tunelab's templates only; use tunelab train for your own")
        elsewhere = [r for r in cfg.train.report_to if r not in LOCAL_TRACKERS]
        if elsewhere:
            problems.append(f"train.report_to: {', '.join(elsewhere)} would send the run outside this machine or "
                            f"read credentials; the studio reports to {' or '.join(LOCAL_TRACKERS)}")
        if problems:
            raise ConfigError(problems, title=f"invalid config submitted for {name}")
        return tree, cfg

    def submit(self, name: str, tree: dict[str, Any]) -> Job:
        """Queue a new run from a config ``tree``; the config is confined to the workspace and validated, its
        data read and checked first, and nothing is written when it is refused."""
        from tunelab.data.examples import load_examples

        with self.lock:
            if name in self.jobs or self.workspace.run_dir(name).exists():
                raise NameTaken(f"name: a run called {name} already exists in this workspace; choose another name")
        tree, cfg = self.checked(name, tree)
        load_examples(cfg)  # data errors now, as one line per bad row, not minutes later in the child
        with self.lock:
            if name in self.jobs:
                raise NameTaken(f"name: a run called {name} already exists in this workspace; choose another name")
            self.workspace.config_path(name).write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True),
                                                        encoding="utf-8")
            job = self.jobs[name] = Job(name)
            self._save(job)
            self.lock.notify_all()
            return replace(job)  # as queued: the worker may pick it up before the caller reads it

    def submitted(self, name: str) -> TunelabConfig:
        """The config a run was submitted with (its YAML in the workspace)."""
        path = self.workspace.config_path(name)
        return from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), name=name, source=str(path))

    def add_action(self, name: str, argv: list[str]) -> Job:
        """Queue one more command for a complete run: ``quantize`` or ``export``. If it fails, the run stays
        complete and its message says why."""
        with self.lock:
            job = self._get(name)
            if job.status != "complete":
                raise TunelabError(f"{name} is {job.status}; only a complete run can be quantized or exported")
            job.actions.append(list(argv))
            job.status, job.message, job.returncode = "queued", None, None
            self._save(job)
            self.lock.notify_all()
            return replace(job)

    def stop(self, name: str) -> Job:
        with self.lock:
            job = self._get(name)
            if job.status == "queued" and job.actions and RunDir(self.workspace.run_dir(name)).is_complete:
                job.status, job.message = "complete", f"cancelled before it started: {job.actions[0][0]}"
                job.actions.clear()  # the trained run stays as it was
                self._save(job)
            elif job.status == "queued":
                job.status, job.message = "stopped", "stopped before it started"
                self._save(job)
            elif job.status == "running" and self.current is job:
                # First stop: finish the step and save a checkpoint. Second stop: at once. Before the
                # child has started, it never starts.
                if self.process is not None:
                    self.process.send_signal(signal.SIGKILL if self.stop_requested else signal.SIGTERM)
                self.stop_requested = True
            return job

    def resume(self, name: str) -> Job:
        with self.lock:
            job = self._get(name)
            if job.status not in ("stopped", "failed"):
                raise TunelabError(f"{name} is {job.status}; only a stopped or failed run can be resumed")
            job.status, job.resume, job.message, job.returncode = "queued", True, None, None
            self._save(job)
            self.lock.notify_all()
            return job

    def get(self, name: str) -> Job:
        with self.lock:
            return self._get(name)

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.jobs, key=lambda n: self.jobs[n].created)

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        path = self.workspace.log_path(name)
        if not path.exists():
            return []
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64_000))
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:]

    def start(self) -> Jobs:
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="tunelab-studio-jobs", daemon=True)
            self.thread.start()
        return self

    def close(self, timeout: float = 120) -> None:
        """Stop the worker; a training child gets SIGTERM (it saves a checkpoint) and is waited for."""
        with self.lock:
            self.closing = True
            process = self.process
            if process is not None:
                process.send_signal(signal.SIGTERM)
            self.lock.notify_all()
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.thread is not None:
            self.thread.join(timeout)

    # ---- the worker ----

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.closing and self._next() is None:
                    self.lock.wait()
                if self.closing:
                    return
                job = self._next()
                job.status, job.started, job.ended, job.message = "running", time.time(), None, None
                self.current, self.stop_requested = job, False
                self._save(job)
            try:
                self._run(job)
            except Exception as err:  # noqa: BLE001 - the queue goes on; the run says what happened
                log_bug("studio queue", err)
                self._finish(job, -1, job.stage, f"the studio could not run it: {type(err).__name__}: {err}")

    def _next(self) -> Optional[Job]:
        queued = [job for job in self.jobs.values() if job.status == "queued"]
        return min(queued, key=lambda job: job.created) if queued else None

    def _run(self, job: Job) -> None:
        run = RunDir(self.workspace.run_dir(job.name))
        for stage, argv in self._stages(job, run):
            with self.lock:
                job.stage = stage
                self._save(job)
            code = self._child(job, argv)
            if stage in ACTIONS:
                with self.lock:
                    job.actions.pop(0)  # done or failed: it is not run again by itself
                    self._save(job)
            if code != 0:
                self._finish(job, code, stage)
                return
        self._finish(job, 0, None)

    def _stages(self, job: Job, run: RunDir):
        if not run.is_complete:
            argv = ["train", str(self.workspace.config_path(job.name))]
            if job.resume and any(run.checkpoints_dir.glob("checkpoint-*")):
                argv.append("--resume")
            elif run.root.exists():  # a run stopped before its first checkpoint starts over
                argv.append("output.overwrite=true")
            yield "train", argv
        if self.evaluate and not eval_path(run.root).exists():
            yield "evaluate", ["evaluate", str(run.root)]
        for argv in list(job.actions):
            yield argv[0], argv

    def _child(self, job: Job, argv: list[str]) -> int:
        with open(self.workspace.log_path(job.name), "ab") as log:
            log.write(f"$ tunelab {' '.join(argv)}\n".encode())
            log.flush()
            with self.lock:
                if self.closing or self.stop_requested:
                    return -signal.SIGTERM
                # A session of its own: Ctrl+C in the app's terminal reaches the app, which then stops
                # the child once (SIGTERM: it saves a checkpoint), not twice.
                self.process = subprocess.Popen([self.python, "-m", "tunelab", *argv], cwd=self.workspace.root,
                                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                env={**os.environ, **CHILD_ENV}, start_new_session=True)
            code = self.process.wait()
        with self.lock:
            self.process = None
        return code

    def _finish(self, job: Job, code: int, stage: Optional[str], why: Optional[str] = None) -> None:
        with self.lock:
            job.returncode, job.ended, job.stage, job.resume = code, time.time(), None, False
            tail = self.log_tail(job.name, 1)
            last = why or (tail[0] if tail else f"exited with code {code}")
            if code == 0:
                job.status, job.message = "complete", None
            elif stage in ACTIONS and not (self.stop_requested or self.closing):
                job.status, job.message = "complete", f"{stage} failed: {last}"  # the trained run is still there
            elif self.stop_requested or self.closing:
                job.status = "complete" if stage in ACTIONS else "stopped"
                job.message = f"{stage} stopped" if stage in ACTIONS else \
                    "stopped; resume continues from the last checkpoint" if not self.closing else \
                    "the studio closed while this run trained; resume continues from the last checkpoint"
            else:
                job.status, job.message = "failed", last
            self.current = None
            self._save(job)

    # ---- state on disk ----

    def _get(self, name: str) -> Job:
        if name not in self.jobs:
            raise UnknownRun(f"no run called {name} in this workspace")
        return self.jobs[name]

    def _save(self, job: Job) -> None:
        path = self.workspace.state_path(job.name)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(job.record()), encoding="utf-8")
        partial.replace(path)

    def _load(self) -> None:
        for path in sorted(self.workspace.studio_dir.glob("*.json")):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue  # not a state file the studio wrote
            if job.name != path.stem or not NAME.fullmatch(job.name) or job.status not in STATUSES:
                continue
            if job.status == "running":  # the app stopped while it trained
                job.status, job.stage = "stopped", None
                job.message = "the studio closed while this run trained; resume continues from the last checkpoint"
                self._save(job)
            self.jobs[job.name] = job


class NameTaken(TunelabError):
    title = "name taken"


class UnknownRun(TunelabError):
    title = "no such run"


def run_summary(root: Path) -> dict[str, Any]:
    """What the run list shows of a run folder: task, method, model, training and evaluation figures."""
    run = RunDir(root)
    summary: dict[str, Any] = {}
    try:
        cfg = run.read_config()
        summary.update(task=cfg.task, method=cfg.method.name, model=cfg.model.name)
    except (OSError, TunelabError, ValueError):
        pass
    metrics, evaluated = read_json_or_none(run.metrics_path), read_json_or_none(eval_path(run.root))
    if isinstance(metrics, dict):
        summary["metrics"] = {k: metrics.get(k) for k in ("train_seconds", "final_train_loss", "best_eval_metric",
                                                          "trainable_params", "peak_rss_mb")}
    if isinstance(evaluated, dict) and isinstance(evaluated.get("metrics"), dict):
        summary.setdefault("metrics", {})["eval"] = evaluated["metrics"]
    return summary


def read_json_or_none(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or (being written by a child) incomplete."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
