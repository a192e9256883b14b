"""`tunelab serve RUN`: the run's model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

    tunelab serve runs/my-run [--variant merged|int8|nf4|gptq|dynamic-int8] [--port 8000] [--api-key KEY]

Causal-LM runs: ``/v1/completions``, ``/v1/chat/completions`` (``stream: true`` sends server-sent
events), ``/v1/models``. Classification runs: ``/v1/classify`` with ``{"input": "text"}`` or
``{"input": ["text", ...]}`` (the ``input`` field of OpenAI's embeddings and moderation APIs).
``/health`` for both. Concurrent requests are micro-batched (``batching.py``). Bad requests get a
4xx in OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, never a 500.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
import asyncio
import hmac
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from tunelab.batching import MicroBatcher
from tunelab.inference import LoadedRun, classify, generate, render_prompt
from tunelab.web import BodyLimit, error_body, json_500


@dataclass
class ServeSettings:
    max_batch_size: int = 16         # requests sharing one forward pass
    max_wait_ms: float = 5.0         # how long the first request of a batch waits for company
    max_tokens_cap: int = 256        # the largest max_tokens a request may ask for
    max_inputs: int = 64             # texts per /v1/classify call
    timeout_s: float = 60.0          # a request still running after this is cut (504)
    api_key: Optional[str] = None    # when set, every route but /health needs "Authorization: Bearer KEY"
    max_body_bytes: int = 1_048_576  # larger request bodies are refused (413) before being read


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields tunelab does not use (user, n, ...)
    model: Optional[str] = None


class Sampling(Request):
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = False


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class ClassifyRequest(Request):
    input: Union[str, list[str]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def create_app(loaded: LoadedRun, settings: ServeSettings, model_id: str):
    """The FastAPI app serving ``loaded``."""
    from fastapi import Depends, FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title=f"tunelab: {model_id}", docs_url=None, redoc_url=None, openapi_url=None)
    executor = ThreadPoolExecutor(max_workers=1)  # one model, one thread: torch already uses every core
    worker = app.state.worker = Worker(loaded, settings, executor)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    json_500(app)

    @app.exception_handler(ApiError)
    async def _api_error(_, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError):
        first = err.errors()[0]
        where = [str(p) for p in first["loc"] if p != "body"]
        param = where[0] if where and first["type"] != "json_invalid" else None
        message = f"{'.'.join(where) or 'body'}: {first['msg']}"
        return JSONResponse(ApiError(400, message, param).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(err.status_code, str(err.detail), kind=kind).body(), status_code=err.status_code)

    def authorized(request: HttpRequest) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", kind="authentication_error",
                           code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "task": loaded.cfg.task}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "tunelab"}]}

    if loaded.labels is not None:
        @app.post("/v1/classify", dependencies=[Depends(authorized)])
        async def classify_route(body: ClassifyRequest):
            texts = worker.check_texts(body.input)
            results = await worker.timed(asyncio.gather(*(worker.classifier.submit(t) for t in texts)))
            return {"object": "list", "model": model_id,
                    "data": [{"index": i, **r} for i, r in enumerate(results)]}
        return app

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if body.stream:
            raise ApiError(400, "stream: streaming is available on /v1/chat/completions", "stream")
        results = await worker.timed(asyncio.gather(*(worker.complete(p, body) for p in prompts)))
        return completion_body(model_id, "text_completion", [{"index": i, "text": text, "finish_reason": finish,
                                                              "logprobs": None}
                                                             for i, (text, finish, _, _) in enumerate(results)],
                               results)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(body: ChatRequest):
        messages = [m.model_dump() for m in body.messages]
        if body.stream:
            text, _ = worker.check_prompt(messages, body)  # a bad request fails here, before the stream starts
            return StreamingResponse(worker.stream_chat(text, body, model_id), media_type="text/event-stream")
        text, finish, prompt_tokens, completion_tokens = await worker.timed(worker.complete(messages, body))
        return completion_body(model_id, "chat.completion",
                               [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish}], [(text, finish, prompt_tokens, completion_tokens)])

    return app


def completion_body(model_id: str, kind: str, choices: list, results: list) -> dict:
    prompt_tokens = sum(r[2] for r in results)
    completion_tokens = sum(r[3] for r in results)
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()), "model": model_id,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


class Worker:
    """Validation against the model, and the batched calls into it."""

    def __init__(self, loaded: LoadedRun, settings: ServeSettings, executor: ThreadPoolExecutor):
        from tunelab.evaluate_causal import context_window

        self.loaded, self.settings, self.executor = loaded, settings, executor
        self.classifier = MicroBatcher(lambda texts, _: classify(loaded, texts), executor,
                                       settings.max_batch_size, settings.max_wait_ms)
        self.generator = MicroBatcher(self._generate, executor, settings.max_batch_size, settings.max_wait_ms)
        self.context = context_window(loaded.model)
        self.abandoned_streams = 0  # streams whose client disconnected before the end

    async def timed(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took longer than the server's {self.settings.timeout_s:g} s limit",
                           kind="timeout_error") from None

    def check_texts(self, given: str | list[str]) -> list[str]:
        texts = [given] if isinstance(given, str) else given
        if not texts:
            raise ApiError(400, "input: give a text or a non-empty list of texts", "input")
        if len(texts) > self.settings.max_inputs:
            raise ApiError(400, f"input: {len(texts)} texts; at most {self.settings.max_inputs} per call", "input")
        if any(not t.strip() for t in texts):
            raise ApiError(400, "input: texts must not be empty", "input")
        return texts

    def check_prompt(self, prompt, body: Sampling) -> tuple[str, int]:
        """The rendered prompt and its token count; refuses what the model or the server cannot take."""
        if body.max_tokens > self.settings.max_tokens_cap:
            raise ApiError(400, f"max_tokens: {body.max_tokens} is above this server's cap of "
                                f"{self.settings.max_tokens_cap}", "max_tokens")
        if isinstance(prompt, str) and not prompt.strip():
            raise ApiError(400, "prompt: must not be empty", "prompt")
        text = render_prompt(self.loaded, prompt)
        length = len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        if length + body.max_tokens > self.context:
            raise ApiError(400, f"the prompt has {length} tokens; with max_tokens {body.max_tokens} that exceeds the "
                                f"model's context of {self.context} tokens", "messages" if isinstance(prompt, list)
                           else "prompt", code="context_length_exceeded")
        return text, length

    async def complete(self, prompt, body: Sampling):
        """(text, finish_reason, prompt tokens, completion tokens) for one prompt, batched with others."""
        _, length = self.check_prompt(prompt, body)
        key = (body.temperature, body.top_p)
        ids = await self.generator.submit((prompt, body.max_tokens), key)
        text = self.loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return text, "length" if len(ids) >= body.max_tokens else "stop", length, len(ids)

    def _generate(self, items: list, key) -> list[list[int]]:
        temperature, top_p = key
        longest = max(max_tokens for _, max_tokens in items)
        outputs = generate(self.loaded, [prompt for prompt, _ in items], longest, batch_size=len(items),
                           temperature=temperature, top_p=top_p, token_ids=True)
        return [ids[:max_tokens] for ids, (_, max_tokens) in zip(outputs, items)]

    async def stream_chat(self, text: str, body: ChatRequest, model_id: str):
        """Server-sent events: one chunk per piece of text as the model produces it, then [DONE]."""
        from transformers import TextIteratorStreamer

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=self.settings.timeout_s)
        batch = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        sampling = ({"do_sample": True, "temperature": body.temperature, "top_p": body.top_p}
                    if body.temperature > 0 else {"do_sample": False})
        client_gone = threading.Event()

        def run():
            import torch
            from transformers import StoppingCriteriaList

            with torch.inference_mode():
                model.generate(**batch, max_new_tokens=body.max_tokens, streamer=streamer,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                               stopping_criteria=StoppingCriteriaList([StopWhen(client_gone)]), **sampling)

        done = asyncio.get_running_loop().run_in_executor(self.executor, run)
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def event(delta: dict, finish: str | None = None) -> str:
            chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        finished = False
        try:
            yield event({"role": "assistant", "content": ""})
            while True:
                piece = await asyncio.to_thread(next, streamer, None)
                if piece is None:
                    break
                if piece:
                    yield event({"content": piece})
            await done
            finished = True
            yield event({}, "stop")
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away: stop generating for nobody, free the model
                client_gone.set()
                self.abandoned_streams += 1


class StopWhen:
    """A transformers stopping criterion: stop every sequence once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def run(run_dir: str, variant: str | None, host: str, port: int, settings: ServeSettings,
        echo=print) -> None:
    """Load the run and serve it until interrupted."""
    from tunelab.errors import TunelabError
    from tunelab.inference import load_run
    from tunelab.modeling import set_threads

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise TunelabError("tunelab serve needs FastAPI and uvicorn; install them with pip install 'tunelab[serve]'") from None

    loaded = load_run(run_dir, variant)
    threads = set_threads(loaded.cfg)
    model_id = loaded.run_dir.name + (f"-{variant}" if variant else "")
    app = create_app(loaded, settings, model_id)
    where = "" if host in ("127.0.0.1", "localhost", "::1") else " (reachable from other machines)"
    echo(f"serving {model_id} ({loaded.cfg.task}, {threads} threads) on http://{host}:{port}{where}; Ctrl+C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning")
