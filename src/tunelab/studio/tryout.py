"""What the studio's "try it" panel runs: one run's models (base, fine-tuned, quantized copies), loaded on
first use and answering one text at a time."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tunelab.config.schema import TASKS
from tunelab.errors import TunelabError
from tunelab.models.provenance import check_fresh
from tunelab.rundir import RunDir, open_run, refuse_remote_code, study_kind, variant_info_path
from tunelab.serving.web import printable

MAX_NEW_TOKENS = 32
CHAT_NEW_TOKENS = 64


@dataclass
class RunModels:
    """One run's models, loaded on first use: base, fine-tuned and the quantized copies."""

    path: Path
    name: str
    task: str
    variants: list[str]
    trust_remote_code: bool = False  # the user passed --trust-remote-code for a run whose config asks for it
    loaded: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def models(self) -> list[str]:
        """What answers a try: nothing for a bake-off or sweep folder (it has only a dashboard)."""
        return ["base", "fine-tuned", *self.variants] if self.task in TASKS else []

    def answer(self, text: str) -> list[dict]:
        with self.lock:  # one request at a time per run: the models share the CPU anyway
            return [self._timed(label, text) for label in self.models]

    def stream(self, label: str, text: str) -> Iterator[str]:
        """One model's answer (causal runs) piece by piece as it is generated; one piece for the others.
        A copy that cannot load says why, in one piece."""
        if label not in self.models:
            raise TunelabError(f"{self.name} has no model {printable(label)}; it has {', '.join(self.models)}")
        with self.lock:
            try:
                predict = self._predictor(label)
            except TunelabError as err:
                yield f"cannot load: {printable(str(err))}"
                return
            if hasattr(predict, "stream"):
                yield from predict.stream(text)
            else:
                answer = predict(text)
                yield _label_text(answer) if isinstance(answer, dict) else answer

    def _timed(self, label: str, text: str) -> dict:
        try:
            predict = self._predictor(label)
        except TunelabError as err:  # a copy that cannot load says why in its own row; the others still answer
            return {"model": label, "output": f"cannot load: {printable(str(err))}", "latency_ms": None}
        start = time.perf_counter()
        answer = predict(text)
        latency = round((time.perf_counter() - start) * 1000, 1)
        if isinstance(answer, dict):  # a classifier: the label, and every label's probability for the bars
            return {"model": label, "output": _label_text(answer), "probabilities": answer["probabilities"],
                    "latency_ms": latency}
        return {"model": label, "output": answer, "latency_ms": latency}

    def _predictor(self, label: str):
        if label not in self.loaded:
            self.loaded[label] = self._load(label)
        return self.loaded[label]

    def _load(self, label: str):
        from tunelab.inference import classify, load_run

        trust = self.trust_remote_code
        if label == "base":
            return base_predictor(load_run(self.path, trust_remote_code=trust))
        loaded = load_run(self.path, None if label == "fine-tuned" else label, trust_remote_code=trust)
        if self.task == "classification":
            return lambda text: classify(loaded, [text])[0]
        return completer(loaded)


def completer(loaded, model=None):
    """A causal model's answer to a text: whole (``complete(text)``), or streamed (``complete.stream(text)``)."""
    from tunelab.inference import generate, stream_text

    def complete(text: str) -> str:
        return generate(loaded, [text], MAX_NEW_TOKENS, model=model)[0]
    complete.stream = lambda text: stream_text(loaded, text, CHAT_NEW_TOKENS, model=model)
    return complete


def _label_text(result: dict) -> str:
    return f"{result['label']} ({result['probabilities'][result['label']]:.3f})"


def base_predictor(loaded):
    """The model before fine-tuning: a linear probe on the frozen encoder (classification, as
    ``tunelab evaluate`` compares), or the base model itself (causal LM)."""
    from tunelab.inference import base_model

    if loaded.labels is None:
        # This run instance serves only as the base, so the adapter stays off (or the base stays
        # loaded, for full fine-tuning) for the life of the app.
        keep_open = ExitStack()
        complete = completer(loaded, keep_open.enter_context(base_model(loaded)))
        complete.keep_open = keep_open
        return complete
    from tunelab.evaluation.probe import fit_base_probe
    from tunelab.models.resolve import resolve_model

    train = loaded.run.read_split("train")
    label2id = {name: i for i, name in enumerate(loaded.labels)}
    probabilities = fit_base_probe(resolve_model(loaded.cfg.model.name, loaded.cfg.model.allow_pickle_weights), [e["text"] for e in train],
                                   [label2id[e["label"]] for e in train], len(loaded.labels),
                                   loaded.cfg.data.max_length)

    def classify_base(text: str) -> dict:
        ranked = sorted(zip(loaded.labels, probabilities([text])[0].tolist()), key=lambda pair: -pair[1])
        return {"label": ranked[0][0], "probabilities": {name: round(p, 6) for name, p in ranked}}
    return classify_base


def open_runs(paths: list[str], trust_remote_code: bool = False, echo=print) -> list[RunModels]:
    """The folders the app may show: finished runs, and bake-off or sweep folders (dashboard only).
    A run whose config asks to run its model's own code is refused now, not on first use, unless
    ``trust_remote_code``."""
    runs = []
    for given in paths:
        comparison = study_kind(Path(given))
        if comparison in ("bakeoff", "sweep"):
            runs.append(RunModels(Path(given), Path(given).name, comparison, variants=[]))
            continue
        run, cfg = open_run(given)
        refuse_remote_code(run.root, cfg, trust_remote_code)
        runs.append(RunModels(run.root, run.name, cfg.task, usable_variants(run, echo), trust_remote_code))
    return runs


def usable_variants(run: RunDir, echo=print) -> list[str]:
    """The run's quantized copies that are complete and made from its current weights (the others are
    named, with the command that remakes them, and left out)."""
    quantized = run.quantized_dir
    found = sorted(p for p in quantized.iterdir() if variant_info_path(p).exists()) if quantized.exists() else []
    usable = []
    for folder in found:
        try:
            check_fresh(run.root, folder)
            usable.append(folder.name)
        except TunelabError as err:
            echo(f"tunelab app: leaving out {err}")
    return usable
