"""The FastAPI app of `tunelab serve`: error handlers, the API key check, the routes of each kind of
run, and `run`, which loads a run and serves it with uvicorn."""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
import asyncio
import hmac

from tunelab.errors import TunelabError
from tunelab.inference import LoadedRun, load_run
from tunelab.machine import set_threads
from tunelab.serving.api import (
    ApiError,
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    Message,
    ServeSettings,
    validation_message,
)
from tunelab.serving.streams import ChatEvents, CompletionEvents
from tunelab.serving.web import guard, is_loopback, json_500, refuse_open_without_key, usable_key, uvicorn_server
from tunelab.serving.worker import Worker


def create_app(loaded: LoadedRun, settings: ServeSettings, model_id: str):
    """The FastAPI app serving ``loaded``."""
    from fastapi import Depends, FastAPI

    app = FastAPI(title=f"tunelab: {model_id}", docs_url=None, redoc_url=None, openapi_url=None)
    worker = app.state.worker = Worker(loaded, settings, model_id)
    guard(app, settings.max_body_bytes, settings.timeouts, settings.check_host, settings.allowed_hosts)
    json_500(app)
    error_handlers(app)
    auth = [Depends(authorizer(settings))]
    common_routes(app, worker, auth, loaded.cfg.task)
    ROUTES[loaded.cfg.task](app, worker, auth)
    return app


def error_handlers(app) -> None:
    """Our errors, pydantic's and Starlette's, all answered in OpenAI's error shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError):
        param, message = validation_message(err.errors())
        return JSONResponse(ApiError(400, message, param).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(err.status_code, str(err.detail), kind=kind).body(), status_code=err.status_code,
                            headers=err.headers)


def authorizer(settings: ServeSettings):
    """The dependency that checks the API key (constant-time), when the settings have one."""
    from fastapi import Request as HttpRequest

    key = usable_key(settings.api_key)

    def authorized(request: HttpRequest) -> None:
        if key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", kind="authentication_error",
                           code="invalid_api_key")

    return authorized


def common_routes(app, worker: Worker, auth: list, task: str) -> None:
    """/health (open to all) and /v1/models, for every kind of run."""
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": worker.model_id, "task": task}

    @app.get("/v1/models", dependencies=auth)
    async def models():
        return {"object": "list", "data": [worker.model_card()]}

    @app.get("/v1/models/{name}", dependencies=auth)
    async def model(name: str):
        worker.check_model(name)
        return worker.model_card()


def classification_routes(app, worker: Worker, auth: list) -> None:
    @app.post("/v1/classify", dependencies=auth)
    async def classify_route(body: ClassifyRequest):
        worker.check_model(body.model)
        texts = worker.check_texts(body.input)
        results = await worker.timed(asyncio.gather(*(worker.classifier.submit(t) for t in texts)))
        return {"object": "list", "model": worker.model_id, "data": [{"index": i, **r} for i, r in enumerate(results)]}

    elsewhere(app, ["/v1/completions", "/v1/chat/completions"], auth,
              f"{worker.model_id} is a classification model: it does not generate text; POST "
              "{\"input\": \"a text\"} to /v1/classify instead")


def generation_routes(app, worker: Worker, auth: list) -> None:
    from fastapi.responses import StreamingResponse

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        plan = worker.plan(body, len(prompts), "prompt", body.max_tokens, "max_tokens")
        if any(not p.strip() for p in prompts):
            raise ApiError(400, "prompt: must not be empty", "prompt")
        prepared = await worker.timed(worker.prepare(prompts, plan, "prompt"))
        if plan.stream:
            return StreamingResponse(worker.stream(prepared, plan, CompletionEvents), media_type="text/event-stream")
        outcomes = await worker.timed(worker.complete(prepared, plan))
        choices = [{"index": i, "text": o.text, "logprobs": None, "finish_reason": o.finish_reason}
                   for i, o in enumerate(outcomes)]
        return worker.reply("cmpl-", "text_completion", choices, prepared, outcomes)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(body: ChatRequest):
        limit, name = ((body.max_completion_tokens, "max_completion_tokens") if body.max_completion_tokens is not None
                       else (body.max_tokens, "max_tokens"))
        plan = worker.plan(body, 1, "messages", limit, name)
        messages = [chat_message(m, i) for i, m in enumerate(body.messages)]
        prepared = await worker.timed(worker.prepare([messages], plan, "messages"))  # fails here, before any stream
        if plan.stream:
            return StreamingResponse(worker.stream(prepared, plan, ChatEvents), media_type="text/event-stream")
        outcomes = await worker.timed(worker.complete(prepared, plan))
        choices = [{"index": i, "message": {"role": "assistant", "content": o.text}, "logprobs": None,
                    "finish_reason": o.finish_reason} for i, o in enumerate(outcomes)]
        return worker.reply("chatcmpl-", "chat.completion", choices, prepared, outcomes)

    elsewhere(app, ["/v1/classify"], auth, f"{worker.model_id} is a causal language model: it does not classify; "
                                           "use /v1/completions or /v1/chat/completions")


ROUTES = {"classification": classification_routes, "causal_lm": generation_routes}  # by the run's task


def elsewhere(app, paths: list[str], auth: list, message: str) -> None:
    """Routes of the other kind of run: a 404 that says which route to use instead."""
    async def other_task():
        raise ApiError(404, message, code="unsupported_endpoint", kind="invalid_request_error")

    for path in paths:
        app.add_api_route(path, other_task, methods=["POST"], dependencies=auth)


def chat_message(message: Message, index: int) -> dict:
    """A message as the chat template takes it: developer turns are system turns, text parts joined."""
    role = "system" if message.role == "developer" else message.role
    if isinstance(message.content, str):
        return {"role": role, "content": message.content}
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"messages.{index}.content: only text parts are supported, not {part.type!r}",
                           "messages")
    return {"role": role, "content": "".join(part.text for part in message.content)}


def run(run_dir: str, variant: str | None, settings: ServeSettings, echo=print, trust_remote_code: bool = False) -> None:
    """Load the run and serve it on ``settings.host:settings.port`` until interrupted."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise TunelabError("tunelab serve needs FastAPI and uvicorn; install them with pip install 'tunelab[serve]'") from None

    refuse_open_without_key(settings.host, settings.api_key, "serve")
    threads = set_threads(settings.threads)  # before the precision is measured with them
    loaded = load_run(run_dir, variant, trust_remote_code=trust_remote_code, precision=settings.precision,
                      setting="serve.precision", merge=True)
    seed_once(settings.seed)
    model_id = loaded.run_dir.name + (f"-{variant}" if variant else "")
    host, port = settings.host, settings.port
    settings = settings.model_copy(update={"check_host": is_loopback(host)})
    app = create_app(loaded, settings, model_id)
    where = "" if is_loopback(host) else " (reachable from other machines)"
    echo(f"serving {model_id} ({loaded.cfg.task}, {threads} threads, {loaded.precision['used']}) on http://{host}:{port}{where}; Ctrl+C stops")
    uvicorn_server(app, host, port, settings.timeouts).run()


def seed_once(seed: int | None) -> None:
    """Seed torch at start (``serve.seed``), so unseeded sampling repeats from one start to the next."""
    if seed is not None:
        import torch

        torch.manual_seed(seed)
