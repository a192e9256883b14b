"""`tunelab app RUN [RUN...]`: a web page to try runs side by side and read their numbers.

    tunelab app runs/demo [runs/other] [--port 7860]

Testing tab: type a text (or a chat message for causal-LM runs) and see the base model, the
fine-tuned model and every quantized copy answer it side by side, each with its latency.
Dashboard tab: the run's numbers and plots (training, evaluation, quantization), the same HTML
as ``tunelab report``. The run picker lists only the runs given on the command line, by index:
the browser never sends a path.

Why FastAPI and a static page rather than Gradio: the same stack as ``tunelab serve``, an 18 MB
install instead of 341 MB, start-up in well under a second instead of 4-6 s, and a page that by
construction loads nothing from outside this machine (inline CSS, JS and SVG; no CDN, no fonts).
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
import threading
from contextlib import ExitStack
from html import escape
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tunelab.config.schema import TASKS
from tunelab.errors import TunelabError
from tunelab.web import BodyLimit, json_500

MAX_NEW_TOKENS = 32
MAX_BODY_BYTES = 65_536  # a request is a run index and at most 4,000 characters
PAGE = Path(__file__).with_name("app_page.html")


class TryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: int = Field(ge=0)
    text: str = Field(min_length=1, max_length=4000)


@dataclass
class RunModels:
    """One run's models, loaded on first use: base, fine-tuned and the quantized copies."""

    path: Path
    name: str
    task: str
    variants: list[str]
    loaded: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, text: str) -> list[dict]:
        with self.lock:  # one request at a time per run: the models share the CPU anyway
            return [self._timed(label, text) for label in ["base", "fine-tuned"] + self.variants]

    def _timed(self, label: str, text: str) -> dict:
        predict = self._predictor(label)
        start = time.perf_counter()
        output = predict(text)
        return {"model": label, "output": output, "latency_ms": round((time.perf_counter() - start) * 1000, 1)}

    def _predictor(self, label: str):
        if label not in self.loaded:
            self.loaded[label] = self._load(label)
        return self.loaded[label]

    def _load(self, label: str):
        from tunelab.inference import classify, generate, load_run

        if label == "base":
            return base_predictor(load_run(self.path))
        loaded = load_run(self.path, None if label == "fine-tuned" else label)
        if self.task == "classification":
            return lambda text: _label_text(classify(loaded, [text])[0])
        return lambda text: generate(loaded, [text], MAX_NEW_TOKENS)[0]


def _label_text(result: dict) -> str:
    return f"{result['label']} ({result['probabilities'][result['label']]:.3f})"


def base_predictor(loaded):
    """The model before fine-tuning: a linear probe on the frozen encoder (classification, as
    ``tunelab evaluate`` compares), or the base model itself (causal LM)."""
    from tunelab.evaluate import read_split
    from tunelab.evaluate_causal import base_model
    from tunelab.inference import generate

    if loaded.labels is None:
        # This run instance serves only as the base, so the adapter stays off (or the base stays
        # loaded, for full fine-tuning) for the life of the app.
        keep_open = ExitStack()
        base = keep_open.enter_context(base_model(loaded))

        def complete(text: str) -> str:
            return generate(loaded, [text], MAX_NEW_TOKENS, model=base)[0]
        complete.keep_open = keep_open
        return complete
    from tunelab.models import resolve_model
    from tunelab.probe import fit_base_probe

    train = read_split(loaded.run_dir, "train")
    label2id = {name: i for i, name in enumerate(loaded.labels)}
    probabilities = fit_base_probe(resolve_model(loaded.cfg.model.name, loaded.cfg.model.allow_pickle_weights), [e["text"] for e in train],
                                   [label2id[e["label"]] for e in train], len(loaded.labels),
                                   loaded.cfg.data.max_length)

    def classify_base(text: str) -> str:
        probs = probabilities([text])[0]
        best = int(probs.argmax())
        return f"{loaded.labels[best]} ({float(probs[best]):.3f})"
    return classify_base


def open_runs(paths: list[str]) -> list[RunModels]:
    """The folders the app may show: finished runs, and bake-off or sweep folders (dashboard only)."""
    from tunelab.inference import open_run
    from tunelab.quantize import INFO_FILE

    runs = []
    for given in paths:
        comparison = next((kind for kind in ("bakeoff", "sweep") if (Path(given) / f"{kind}.json").exists()), None)
        if comparison:
            runs.append(RunModels(Path(given), Path(given).name, comparison, variants=[]))
            continue
        run_dir, cfg = open_run(given)
        quantized = run_dir / "quantized"
        variants = sorted(p.name for p in quantized.iterdir() if (p / INFO_FILE).exists()) if quantized.exists() else []
        runs.append(RunModels(run_dir, run_dir.name, cfg.task, variants))
    return runs


def create_app(runs: list[RunModels]):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    from tunelab.report import SECTIONS, load_source

    app = FastAPI(title="tunelab app", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    json_500(app)

    def pick(index: int) -> RunModels:
        if not 0 <= index < len(runs):
            raise HTTPException(404, f"no run {index}; this app serves runs 0 to {len(runs) - 1}")
        return runs[index]

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/runs")
    def list_runs():
        return [{"index": i, "name": r.name, "task": r.task,
                 "models": ["base", "fine-tuned"] + r.variants if r.task in TASKS else []}
                for i, r in enumerate(runs)]

    @app.post("/api/try")
    def try_it(body: TryRequest):
        run = pick(body.run)
        if not body.text.strip():
            raise HTTPException(400, "type some text first")
        if run.task not in TASKS:
            raise HTTPException(400, f"{run.name} is a {run.task}: it has a dashboard but no model to try")
        return {"run": body.run, "outputs": run.answer(body.text)}

    @app.get("/dashboard/{index}", response_class=HTMLResponse)
    def dashboard(index: int):
        try:
            source = load_source(pick(index).path)
        except TunelabError as err:
            return f"<p>{escape(str(err))}</p>"
        return SECTIONS[source["kind"]](source)

    return app


def run(paths: list[str], host: str, port: int, echo=print) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise TunelabError("tunelab app needs FastAPI and uvicorn; install them with pip install 'tunelab[serve]'") from None
    runs = open_runs(paths)
    echo(f"tunelab app: {len(runs)} run(s) on http://{host}:{port} (models load on first use); Ctrl+C stops")
    uvicorn.run(create_app(runs), host=host, port=port, log_level="warning")
