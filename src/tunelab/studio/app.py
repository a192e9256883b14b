"""`tunelab app RUN [RUN...]`: a web page to try runs side by side and read their numbers.

    tunelab app runs/demo [runs/other] [--port 7860]
    TUNELAB_API_KEY=... tunelab app runs/demo --host 0.0.0.0   # then open http://HOST:7860/?key=KEY once

Testing tab: type a text (or a chat message for causal-LM runs) and see the base model, the
fine-tuned model and every quantized copy answer it side by side, each with its latency.
Dashboard tab: the run's numbers and plots (training, evaluation, quantization), the same HTML
as ``tunelab report``. The run picker lists only the runs given on the command line, by index:
the browser never sends a path.

With an API key (``--api-key`` or ``$TUNELAB_API_KEY``; required to bind anything but a loopback
address), every route needs it: opening ``/?key=KEY`` once sets an HttpOnly, SameSite=Strict cookie
holding a token derived from the key and redirects to ``/``, so the key leaves the address bar and
the page's own requests carry the cookie. Scripts may send ``Authorization: Bearer KEY`` instead.

Why FastAPI and a static page rather than Gradio: the same stack as ``tunelab serve``, an 18 MB
install instead of 341 MB, start-up in well under a second instead of 4-6 s, and a page that by
construction loads nothing from outside this machine (inline CSS, JS and SVG; no CDN, no fonts).
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
import asyncio
import hashlib
import hmac
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from tunelab.config.schema import TASKS
from tunelab.errors import TunelabError
from tunelab.models.provenance import check_fresh
from tunelab.rundir import RunDir, open_run, refuse_remote_code, study_kind, variant_info_path
from tunelab.serving.web import (
    UNICODE_ERRORS,
    Timeouts,
    guard,
    is_loopback,
    json_500,
    printable,
    refuse_open_without_key,
    usable_key,
    uvicorn_server,
    valid_unicode,
)

MAX_NEW_TOKENS = 32
MAX_BODY_BYTES = 65_536  # a request is a run index and at most 4,000 characters
MAX_PENDING_TRIES = 8
PAGE = Path(__file__).with_name("app_page.html")
COOKIE = "tunelab_app"


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
    trust_remote_code: bool = False  # the user passed --trust-remote-code for a run whose config asks for it
    loaded: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, text: str) -> list[dict]:
        with self.lock:  # one request at a time per run: the models share the CPU anyway
            return [self._timed(label, text) for label in ["base", "fine-tuned"] + self.variants]

    def _timed(self, label: str, text: str) -> dict:
        try:
            predict = self._predictor(label)
        except TunelabError as err:  # a copy that cannot load says why in its own row; the others still answer
            return {"model": label, "output": f"cannot load: {printable(str(err))}", "latency_ms": None}
        start = time.perf_counter()
        output = predict(text)
        return {"model": label, "output": output, "latency_ms": round((time.perf_counter() - start) * 1000, 1)}

    def _predictor(self, label: str):
        if label not in self.loaded:
            self.loaded[label] = self._load(label)
        return self.loaded[label]

    def _load(self, label: str):
        from tunelab.inference import classify, generate, load_run

        trust = self.trust_remote_code
        if label == "base":
            return base_predictor(load_run(self.path, trust_remote_code=trust))
        loaded = load_run(self.path, None if label == "fine-tuned" else label, trust_remote_code=trust)
        if self.task == "classification":
            return lambda text: _label_text(classify(loaded, [text])[0])
        return lambda text: generate(loaded, [text], MAX_NEW_TOKENS)[0]


def _label_text(result: dict) -> str:
    return f"{result['label']} ({result['probabilities'][result['label']]:.3f})"


def base_predictor(loaded):
    """The model before fine-tuning: a linear probe on the frozen encoder (classification, as
    ``tunelab evaluate`` compares), or the base model itself (causal LM)."""
    from tunelab.inference import base_model, generate

    if loaded.labels is None:
        # This run instance serves only as the base, so the adapter stays off (or the base stays
        # loaded, for full fine-tuning) for the life of the app.
        keep_open = ExitStack()
        base = keep_open.enter_context(base_model(loaded))

        def complete(text: str) -> str:
            return generate(loaded, [text], MAX_NEW_TOKENS, model=base)[0]
        complete.keep_open = keep_open
        return complete
    from tunelab.evaluation.probe import fit_base_probe
    from tunelab.models.resolve import resolve_model

    train = loaded.run.read_split("train")
    label2id = {name: i for i, name in enumerate(loaded.labels)}
    probabilities = fit_base_probe(resolve_model(loaded.cfg.model.name, loaded.cfg.model.allow_pickle_weights), [e["text"] for e in train],
                                   [label2id[e["label"]] for e in train], len(loaded.labels),
                                   loaded.cfg.data.max_length)

    def classify_base(text: str) -> str:
        probs = probabilities([text])[0]
        best = int(probs.argmax())
        return f"{loaded.labels[best]} ({float(probs[best]):.3f})"
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


def cookie_token(api_key: str) -> str:
    """What the browser keeps instead of the key itself."""
    return hmac.new(api_key.encode(), b"tunelab app cookie", hashlib.sha256).hexdigest()


def key_check(api_key: Optional[str]):
    """A FastAPI dependency: the request carries the key (bearer header) or the cookie set by ``/?key=``."""
    from fastapi import HTTPException
    from fastapi import Request as HttpRequest

    def authorized(request: HttpRequest) -> None:
        if api_key is None:
            return
        bearer = request.headers.get("authorization", "").encode()
        cookie = request.cookies.get(COOKIE, "").encode()
        if not (hmac.compare_digest(bearer, f"Bearer {api_key}".encode())
                | hmac.compare_digest(cookie, cookie_token(api_key).encode())):
            raise HTTPException(401, "this app needs its key: open /?key=KEY once in the browser "
                                     "(or send Authorization: Bearer KEY)")
    return authorized


def create_app(runs: list[RunModels], api_key: Optional[str] = None, check_host: bool = True,
               timeouts: Optional[Timeouts] = None, allowed_hosts: tuple[str, ...] = ()):
    """The app for ``runs``. ``check_host``: bound to a loopback address, so answer only requests for
    localhost, 127.0.0.1 or [::1] (a DNS-rebinding page sends its own name)."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi import Request as HttpRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

    from tunelab.studies.report import SECTIONS, load_source

    api_key = usable_key(api_key)
    app = FastAPI(title="tunelab app", docs_url=None, redoc_url=None, openapi_url=None)
    guard(app, MAX_BODY_BYTES, timeouts or Timeouts(), check_host, allowed_hosts)
    json_500(app)
    authorized = key_check(api_key)
    auth = [Depends(authorized)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError):
        """One line naming the field (never the input back); text that is not Unicode is a 400."""
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        status = 400 if first["type"] in UNICODE_ERRORS else 422
        return JSONResponse({"detail": printable(f"{where}: {first['msg']}")}, status_code=status)

    def pick(index: int) -> RunModels:
        if not 0 <= index < len(runs):
            raise HTTPException(404, f"no run {index}; this app serves runs 0 to {len(runs) - 1}")
        return runs[index]

    @app.get("/", response_class=HTMLResponse)
    def page(request: HttpRequest, key: Optional[str] = None):
        if api_key is not None and key is not None:
            if not hmac.compare_digest(key.encode("utf-8", "replace"), api_key.encode()):
                raise HTTPException(401, "wrong key")
            response = RedirectResponse("/", status_code=303)  # the key leaves the address bar and the history
            response.set_cookie(COOKIE, cookie_token(api_key), httponly=True, samesite="strict")
            return response
        authorized(request)
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/runs", dependencies=auth)
    def list_runs():
        return [{"index": i, "name": r.name, "task": r.task,
                 "models": ["base", "fine-tuned"] + r.variants if r.task in TASKS else []}
                for i, r in enumerate(runs)]

    pending = [0]  # tries waiting or running: models answer one at a time, so a queue is all more would add
    tries = ThreadPoolExecutor(max_workers=MAX_PENDING_TRIES, thread_name_prefix="tunelab-try")

    @app.post("/api/try", dependencies=auth)
    async def try_it(body: TryRequest):
        run = pick(body.run)
        if not body.text.strip():
            raise HTTPException(400, "type some text first")
        if not valid_unicode(body.text):
            raise HTTPException(400, "text: holds a lone surrogate, which is not valid Unicode")
        if run.task not in TASKS:
            raise HTTPException(400, f"{run.name} is a {run.task}: it has a dashboard but no model to try")
        if pending[0] >= MAX_PENDING_TRIES:
            raise HTTPException(429, f"{pending[0]} tries are already waiting for the models; try again shortly")
        pending[0] += 1
        try:  # in a thread of its own, so the page and the dashboard stay responsive meanwhile
            outputs = await asyncio.get_running_loop().run_in_executor(tries, run.answer, body.text)
            return {"run": body.run, "outputs": outputs}
        finally:
            pending[0] -= 1

    @app.get("/dashboard/{index}", response_class=HTMLResponse, dependencies=auth)
    def dashboard(index: int):
        try:
            source = load_source(pick(index).path)
        except TunelabError as err:
            return f"<p>{escape(str(err))}</p>"
        return SECTIONS[source["kind"]](source)

    return app


def run(paths: list[str], host: str, port: int, echo=print, api_key: Optional[str] = None,
        trust_remote_code: bool = False, allowed_hosts: tuple[str, ...] = ()) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise TunelabError("tunelab app needs FastAPI and uvicorn; install them with pip install 'tunelab[serve]'") from None
    api_key = usable_key(api_key)
    refuse_open_without_key(host, api_key, "app")
    runs = open_runs(paths, trust_remote_code)
    timeouts = Timeouts()
    app = create_app(runs, api_key, check_host=is_loopback(host), timeouts=timeouts, allowed_hosts=allowed_hosts)
    key = " (open /?key=KEY once: the key is in $TUNELAB_API_KEY or --api-key)" if api_key else ""
    echo(f"tunelab app: {len(runs)} run(s) on http://{host}:{port}{key} (models load on first use); Ctrl+C stops")
    uvicorn_server(app, host, port, timeouts).run()
