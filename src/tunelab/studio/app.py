"""`tunelab app`: the studio, one page to create, train, watch, evaluate, compare and try runs.

    tunelab app [--workspace tunelab-workspace] [--port 7860]        # runs started from the browser
    tunelab app runs/demo [runs/other]                                 # plus finished runs to show
    TUNELAB_API_KEY=... tunelab app --host 0.0.0.0   # then open http://HOST:7860/?key=KEY once

Runs started from the page live in the workspace (``studio/workspace.py``) and train one at a time in
a child process running ``tunelab train`` and ``tunelab evaluate`` (``studio/jobs.py``). The page and
scripts use the same JSON API:

- ``GET /api/runs``: ``{"runs": [{"name", "status", "task", "method", "model", "metrics", "models"}]}``
- ``POST /api/runs`` with ``{"name", "config"}`` (a tunelab config as JSON): queues a run (201); an invalid
  name, config or data is a 400 with the CLI's one-line messages, a name in use a 409
- ``GET /api/runs/{name}``: status, progress (step, total steps, ETA), metrics, loss and evaluation
  curves, the last log lines; ``POST /api/runs/{name}/stop`` and ``/resume``; ``GET /api/runs/{name}/config``
  the YAML it trains with
- ``GET /api/uploads``, ``POST /api/uploads?name=FILE`` (the file as the body, size-limited)
- ``POST /api/try`` with ``{"run": name, "text"}``: base, fine-tuned and each quantized copy answer
- ``GET /dashboard/{name}``: the run's report sections (``tunelab report``)

The browser never sends a path it may read or write outside the workspace: run names are names, and
every path in a submitted config must resolve inside the workspace. With an API key (``--api-key`` or
``$TUNELAB_API_KEY``; required to bind anything but a loopback address), every route needs it: opening
``/?key=KEY`` once sets an HttpOnly, SameSite=Strict cookie holding a token derived from the key and
redirects to ``/``. Scripts may send ``Authorization: Bearer KEY`` instead.

Why FastAPI and a static page rather than Gradio: the same stack as ``tunelab serve``, an 18 MB
install instead of 341 MB, start-up in well under a second instead of 4-6 s, and a page that by
construction loads nothing from outside this machine (inline CSS, JS and SVG; no CDN, no fonts).
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
import asyncio
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from html import escape
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from tunelab.config.schema import QUANTIZE_METHODS
from tunelab.errors import TunelabError
from tunelab.serving.web import (
    UNICODE_ERRORS,
    Timeouts,
    guard,
    is_loopback,
    json_500,
    log_bug,
    printable,
    refuse_open_without_key,
    usable_key,
    uvicorn_server,
    valid_unicode,
)
from tunelab.studio import artifacts
from tunelab.studio.catalog import Catalog, builtins, data_report, run_detail
from tunelab.studio.jobs import Jobs, NameTaken, UnknownRun
from tunelab.studio.tryout import RunModels, open_runs
from tunelab.studio.workspace import Workspace, check_name

MAX_BODY_BYTES = 1_048_576  # a request is a run name and at most 4,000 characters, or a config
MAX_UPLOAD_BYTES = 50 * 1_048_576
MAX_PENDING_TRIES = 8
PAGE = Path(__file__).with_name("page.html")
COOKIE = "tunelab_app"
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
        'fill="#3367d6"/><path d="M3 11l3-4 3 2 4-6" stroke="#fff" stroke-width="2" fill="none"/></svg>')


class TryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=4000)


class ChatRequest(TryRequest):
    model: str = Field(min_length=1, max_length=100)


class NewRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)  # an empty or odd name is a 400 from check_name, with what a name may be
    config: dict[str, Any]


class Quantize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    methods: list[Literal[QUANTIZE_METHODS]] = Field(min_length=1)
    compare: bool = False


class Export(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: Literal["f16", "q8_0"] = "q8_0"


class DataCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any]


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


def refusal(err: TunelabError, workspace: Optional[Workspace] = None):
    """A TunelabError as an HTTP answer: 404 for an unknown run or artifact, 409 for a name in use, 400
    otherwise, the detail holding the CLI's lines (``title: problem; problem``) and ``problems`` each line.
    Paths inside the workspace are shown relative to it, as the user gave them."""
    from fastapi.responses import JSONResponse

    status = 404 if isinstance(err, UnknownRun) else 409 if isinstance(err, NameTaken) else 400
    problems = [printable(p) for p in err.problems]
    if workspace is not None:
        problems = [p.replace(f"{workspace.root}{os.sep}", "") for p in problems]
    return JSONResponse({"detail": f"{err.title}: " + "; ".join(problems), "problems": problems}, status_code=status)


def same_origin_only(app) -> None:
    """Refuse requests that change something (any method but GET and HEAD) sent by a page of another site:
    a browser names the page's origin, which must be this app's own host. Scripts send no Origin."""
    from urllib.parse import urlsplit

    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def check_origin(request, call_next):
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin is not None \
                and urlsplit(origin).netloc != request.headers.get("host", ""):
            return JSONResponse({"detail": "refused: a request from another site's page (Origin "
                                           f"{printable(origin)[:100]}) may not change anything here"}, status_code=403)
        return await call_next(request)


def create_app(runs: list[RunModels], api_key: Optional[str] = None, check_host: bool = True,
               timeouts: Optional[Timeouts] = None, allowed_hosts: tuple[str, ...] = (), jobs: Optional[Jobs] = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, trust_remote_code: bool = False):
    """The app for ``runs`` (finished folders to show) and, with ``jobs``, a workspace to create runs in.
    ``check_host``: bound to a loopback address, so answer only requests for localhost, 127.0.0.1 or [::1]
    (a DNS-rebinding page sends its own name)."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi import Request as HttpRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import (
        FileResponse,
        HTMLResponse,
        JSONResponse,
        PlainTextResponse,
        RedirectResponse,
        Response,
        StreamingResponse,
    )

    from tunelab.studies.report import SECTIONS, load_source

    @asynccontextmanager
    async def lifespan(_):
        yield
        if jobs is not None:
            await asyncio.get_running_loop().run_in_executor(None, jobs.close)

    api_key = usable_key(api_key)
    catalog = Catalog(runs, jobs.start() if jobs is not None else None, trust_remote_code)
    app = FastAPI(title="tunelab studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    guard(app, MAX_BODY_BYTES, timeouts or Timeouts(), check_host, allowed_hosts,
          larger_bodies={"/api/uploads": max_upload_bytes})
    same_origin_only(app)
    json_500(app)
    authorized = key_check(api_key)
    auth = [Depends(authorized)]
    app.add_exception_handler(TunelabError, lambda _, err: refusal(err, jobs.workspace if jobs else None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError):
        """One line naming the field (never the input back); text that is not Unicode is a 400."""
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            return JSONResponse({"detail": "body: not valid JSON"}, status_code=400)
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        status = 400 if first["type"] in UNICODE_ERRORS else 422
        return JSONResponse({"detail": printable(f"{where}: {first['msg']}")}, status_code=status)

    def workspace() -> Jobs:
        if jobs is None:
            raise HTTPException(404, "this app was started without a workspace")
        return jobs

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

    @app.get("/favicon.ico", dependencies=auth)
    def icon():
        return Response(ICON, media_type="image/svg+xml")

    @app.get("/api/schema", dependencies=auth)
    def schema():
        from tunelab.config import schema_fields

        return {"sections": schema_fields()}

    @app.get("/api/builtins", dependencies=auth)
    def builtin_sources():
        return builtins()

    @app.get("/api/presets", dependencies=auth)
    def presets():
        """Starting points for the form: the settings of ``tunelab demo`` for each task."""
        from tunelab.studies.demo import DEMOS

        return {"presets": {task: demo.config for task, demo in DEMOS.items()}}

    @app.post("/api/data/report", dependencies=auth)
    async def check_data(body: DataCheck):
        return await asyncio.get_running_loop().run_in_executor(None, data_report, workspace(), body.config)

    @app.get("/api/runs", dependencies=auth)
    def list_runs():
        return {"runs": [catalog.entry(name) for name in catalog.names()]}

    @app.post("/api/runs", dependencies=auth, status_code=201)
    async def create_run(body: NewRun):
        queue = workspace()
        name = check_name(body.name, "name")
        job = await asyncio.get_running_loop().run_in_executor(None, queue.submit, name, body.config)
        return {"name": job.name, "status": job.status}

    @app.get("/api/runs/{name}", dependencies=auth)
    def show_run(name: str):
        return run_detail(catalog, name)

    @app.post("/api/runs/{name}/stop", dependencies=auth)
    def stop_run(name: str):
        return {"name": name, "status": workspace().stop(name).status}

    @app.post("/api/runs/{name}/resume", dependencies=auth)
    def resume_run(name: str):
        return {"name": name, "status": workspace().resume(name).status}

    @app.get("/api/runs/{name}/config", dependencies=auth)
    def run_config(name: str):
        queue = workspace()
        queue.get(name)
        try:
            text = queue.workspace.config_path(name).read_text(encoding="utf-8")
        except OSError:
            raise UnknownRun(f"{name}'s config is no longer in the workspace") from None
        return PlainTextResponse(text,
                                 media_type="application/yaml",
                                 headers={"Content-Disposition": f'attachment; filename="{name}.yaml"'})

    @app.post("/api/runs/{name}/quantize", dependencies=auth)
    def quantize_run(name: str, body: Quantize):
        argv = ["quantize", str(workspace().workspace.run_dir(name)), "--method", ",".join(body.methods)]
        return {"name": name, "status": workspace().add_action(name, argv + ["--compare"] * body.compare).status}

    @app.post("/api/runs/{name}/export", dependencies=auth)
    def export_run(name: str, body: Export):
        argv = ["export", str(workspace().workspace.run_dir(name)), "--format", "gguf", "--dtype", body.dtype]
        return {"name": name, "status": workspace().add_action(name, argv).status}

    @app.get("/api/runs/{name}/artifacts", dependencies=auth)
    def list_artifacts(name: str):
        return {"artifacts": artifacts.listing(catalog.folder(name))}

    @app.get("/api/runs/{name}/download", dependencies=auth)
    def download(name: str, artifact: str):
        path = artifacts.artifact(catalog.folder(name), artifact)
        if path.is_file():
            return FileResponse(path, filename=f"{name}-{path.name}")
        return StreamingResponse(artifacts.zipped(path), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{name}-{path.name}.zip"'})

    @app.get("/api/uploads", dependencies=auth)
    def list_uploads():
        return {"uploads": workspace().workspace.uploads()}

    @app.post("/api/uploads", dependencies=auth, status_code=201)
    async def upload(request: HttpRequest, name: str):
        replaced = (workspace().workspace.uploads_dir / check_name(name, "file name")).exists()
        target = jobs.workspace.write_upload(name, await request.body())
        return {"name": target.name, "path": str(target.relative_to(jobs.workspace.root)),
                "bytes": target.stat().st_size, "replaced": replaced}

    pending = [0]  # tries waiting or running: models answer one at a time, so a queue is all more would add
    tries = ThreadPoolExecutor(max_workers=MAX_PENDING_TRIES, thread_name_prefix="tunelab-try")

    @app.post("/api/try", dependencies=auth)
    async def try_it(body: TryRequest):
        if not body.text.strip():
            raise HTTPException(400, "type some text first")
        if not valid_unicode(body.text):
            raise HTTPException(400, "text: holds a lone surrogate, which is not valid Unicode")
        run = catalog.models(body.run)
        if not run.models:
            raise HTTPException(400, f"{run.name} is a {run.task}: it has a dashboard but no model to try")
        if pending[0] >= MAX_PENDING_TRIES:
            raise HTTPException(429, f"{pending[0]} tries are already waiting for the models; try again shortly")
        pending[0] += 1
        try:  # in a thread of its own, so the page and the dashboard stay responsive meanwhile
            outputs = await asyncio.get_running_loop().run_in_executor(tries, run.answer, body.text)
            return {"run": body.run, "outputs": outputs}
        finally:
            pending[0] -= 1

    @app.post("/api/chat", dependencies=auth)
    def chat(body: ChatRequest):
        """One model's answer streamed as plain text (causal runs: as it is generated)."""
        if not body.text.strip() or not valid_unicode(body.text):
            raise HTTPException(400, "text: type a message (valid Unicode) first")
        run = catalog.models(body.run)
        if body.model not in run.models:
            raise HTTPException(400, f"{run.name} has no model {printable(body.model)}; it has "
                                     f"{', '.join(run.models) or 'nothing to try'}")
        pieces = run.stream(body.model, body.text)

        def safely():
            try:
                yield from pieces
            except Exception as err:  # noqa: BLE001 - the status line has gone; the text says what happened
                log_bug("studio chat", err)
                yield f"\n[error: {printable(str(err)) or type(err).__name__}]"
        return StreamingResponse(safely(), media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @app.get("/dashboard/{name}", response_class=HTMLResponse, dependencies=auth)
    def dashboard(name: str):
        folder = catalog.folder(name)
        try:
            source = {**load_source(folder), "path": name}  # headed by the run's name, not where it lies on disk
        except UnknownRun:
            raise
        except TunelabError as err:
            return f"<p>{escape(str(err).replace(str(folder), name))}</p>"
        return SECTIONS[source["kind"]](source)

    return app


def run(paths: list[str], host: str, port: int, echo=print, api_key: Optional[str] = None,
        trust_remote_code: bool = False, allowed_hosts: tuple[str, ...] = (),
        workspace: str = "tunelab-workspace") -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise TunelabError("tunelab app needs FastAPI and uvicorn; install them with pip install 'tunelab[serve]'") from None
    api_key = usable_key(api_key)
    refuse_open_without_key(host, api_key, "app")
    runs = open_runs(paths, trust_remote_code)
    jobs = Jobs(Workspace(workspace))
    timeouts = Timeouts()
    app = create_app(runs, api_key, check_host=is_loopback(host), timeouts=timeouts, allowed_hosts=allowed_hosts,
                     jobs=jobs, trust_remote_code=trust_remote_code)
    key = " (open /?key=KEY once: the key is in $TUNELAB_API_KEY or --api-key)" if api_key else ""
    echo(f"tunelab app: workspace {jobs.workspace.root}, {len(runs)} more run(s), on http://{host}:{port}{key} "
         "(models load on first use); Ctrl+C stops")
    uvicorn_server(app, host, port, timeouts).run()
