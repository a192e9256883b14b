"""What the studio shows of its runs: the catalog of runs (given on the command line, and the workspace's),
each run's list entry and detail (progress, curves, log tail), the built-ins and the data report."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Optional

from tunelab.errors import TunelabError
from tunelab.rundir import RunDir, eval_path, predictions_path
from tunelab.serving.web import printable
from tunelab.studio.jobs import Jobs, UnknownRun, read_json_or_none, run_summary
from tunelab.studio.tryout import RunModels, open_runs
from tunelab.studio.workspace import NAME

MAX_CURVE_POINTS = 2000
EXAMPLES_SHOWN = 3  # test examples the run panel shows, base and tuned output side by side


def builtins() -> dict[str, Any]:
    """The models and datasets tunelab ships or builds, for the page's pickers."""
    from tunelab.data.builtin import BUILTIN_DATA_DIR
    from tunelab.models.resolve import BUILTIN_MODELS

    return {"models": [{"name": f"builtin:{name}", "about": spec.about} for name, spec in BUILTIN_MODELS.items()],
            "datasets": sorted(f"builtin:{p.parent.name}/{p.name}" for p in BUILTIN_DATA_DIR.glob("*/*.jsonl"))}


def data_report(jobs: Jobs, tree: dict[str, Any]) -> dict[str, Any]:
    """What ``tunelab prepare`` would report on a submitted config's data (counts, label balance, token
    lengths, the masked training example), without writing anything."""
    from tunelab.data import prepare
    from tunelab.data.report import summary_text

    _, cfg = jobs.checked("data-check", tree)
    report = prepare.analyse(cfg).report
    return {"report": report, "summary": summary_text(report)}


class Catalog:
    """The runs the app shows: finished runs given on the command line (by folder name), and the
    workspace's runs, those started from the page and finished ones found in its ``runs/`` folder."""

    def __init__(self, given: list[RunModels], jobs: Optional[Jobs], trust_remote_code: bool = False):
        self.given: dict[str, RunModels] = {}
        for run in given:
            name, n = run.name, 2
            while name in self.given:
                name, n = f"{run.name}-{n}", n + 1
            self.given[name] = run
        self.jobs, self.trust_remote_code = jobs, trust_remote_code
        self.opened: dict[str, tuple[RunModels, Optional[float]]] = {}  # workspace runs, and when their job ended

    def names(self) -> list[str]:
        names = list(self.given)
        if self.jobs is not None:
            names += [n for n in self.jobs.names() if n not in self.given]
            found = self.jobs.workspace.runs_dir
            names += sorted(p.name for p in found.iterdir() if p.name not in names and RunDir(p).is_complete
                            and not p.name.startswith(".")) if found.exists() else []
        return names

    def status(self, name: str) -> str:
        if name in self.given:
            return "complete"
        if self.jobs is not None and name in self.jobs.names():
            return self.jobs.get(name).status
        if self.jobs is not None and NAME.fullmatch(name) and RunDir(self.jobs.workspace.runs_dir / name).is_complete:
            return "complete"
        raise UnknownRun(f"no run called {printable(name)}")

    def folder(self, name: str) -> Path:
        self.status(name)
        return self.given[name].path if name in self.given else self.jobs.workspace.run_dir(name)

    def models(self, name: str) -> RunModels:
        """The run's models for trying it; a workspace run once it is complete."""
        if name in self.given:
            return self.given[name]
        status = self.status(name)
        if status != "complete":
            raise TunelabError(f"{name} is {status}: it can be tried once it is complete")
        ended = self.jobs.get(name).ended if name in self.jobs.names() else None
        if name not in self.opened or self.opened[name][1] != ended:  # new copies since: open it again
            self.opened[name] = (open_runs([str(self.folder(name))], self.trust_remote_code)[0], ended)
        return self.opened[name][0]

    def entry(self, name: str) -> dict[str, Any]:
        status = self.status(name)
        queued = self.jobs is not None and name in self.jobs.names()
        entry = {"name": name, "status": status, "stage": self.jobs.get(name).stage if queued else None,
                 "task": None, "method": None, "model": None, "metrics": None, "models": [],
                 "source": "given" if name in self.given else "workspace"}
        if name in self.given and self.given[name].task not in ("classification", "causal_lm"):
            entry["task"] = self.given[name].task  # a bake-off or sweep folder
        else:
            entry.update(run_summary(self.folder(name)))
        if entry["task"] is None and self.jobs is not None and name in self.jobs.names():
            try:
                cfg = self.jobs.submitted(name)  # not prepared yet: what it was submitted with
                entry.update(task=cfg.task, method=cfg.method.name, model=cfg.model.name)
            except (OSError, TunelabError):
                pass
        if status == "complete":
            try:
                entry["models"] = self.models(name).models
            except TunelabError:
                pass
        return entry


def run_detail(catalog: Catalog, name: str) -> dict[str, Any]:
    """What ``GET /api/runs/{name}`` answers: the list entry plus progress, curves and the log's tail."""
    detail = catalog.entry(name)
    run = RunDir(catalog.folder(name))
    job = catalog.jobs.get(name) if catalog.jobs is not None and name in catalog.jobs.names() else None
    detail["progress"] = read_json_or_none(run.progress_path) or {
        "phase": "waiting" if detail["status"] == "queued" else "starting", "step": 0, "total_steps": None}
    if job is not None:
        detail["progress"]["stage"] = job.stage
        detail.update(message=job.message, started=job.started, ended=job.ended)
    detail["curves"] = curves(run.train_log_path)
    detail["log_tail"] = catalog.jobs.log_tail(name) if job is not None else []
    detail.update(evaluation_details(run.root))
    return detail


def evaluation_details(root: Path) -> dict[str, Any]:
    """From the run's evaluation: ``per_class`` (classification: precision, recall and support per label,
    base and tuned; None otherwise) and ``examples``, the first test examples with base and tuned output."""
    evaluated = read_json_or_none(eval_path(root))
    examples = []
    try:
        with open(predictions_path(root), encoding="utf-8") as f:
            examples = [json.loads(line) for line in itertools.islice(f, EXAMPLES_SHOWN)]
    except (OSError, ValueError):
        pass  # not evaluated yet, or being written
    return {"per_class": evaluated.get("per_class") if isinstance(evaluated, dict) else None, "examples": examples}


def curves(log_path: Path) -> dict[str, list[list[float]]]:
    """``{"loss": [[step, value], ...], "eval_loss": ..., "eval_<metric>": ...}`` from train_log.jsonl
    (the Trainer's closing summary left out)."""
    found: dict[str, list[list[float]]] = {}
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line the child is still writing
        if "total_flos" in entry:
            continue
        for key, value in entry.items():
            if (key == "loss" or key.startswith("eval_")) and isinstance(value, (int, float)) \
                    and not key.endswith(("_runtime", "_per_second")):
                found.setdefault(key, []).append([entry.get("step", 0), value])
    return {key: points[-MAX_CURVE_POINTS:] for key, points in found.items()}
