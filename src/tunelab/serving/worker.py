"""The model side of `tunelab serve`: a request checked into a Plan, its prompts rendered and counted,
and its generations batched with other requests' (or streamed one by one)."""

import asyncio
import copy
import dataclasses
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from tunelab.inference import LoadedRun, StopTexts, classify, generate, left_padded, render_prompt, sampling_arguments
from tunelab.models.loading import context_window
from tunelab.serving.api import (
    DEFAULT_MAX_TOKENS,
    MAX_STOPS,
    SEED_RANGE,
    ApiError,
    Sampling,
    ServeSettings,
    unsupported,
)
from tunelab.serving.batching import MicroBatcher
from tunelab.serving.streams import PostingStreamer, RowStreamer, StopScanner, StreamedRows, StreamFailed, first_stop
from tunelab.serving.web import error_body, log_bug, printable


@dataclass(frozen=True)
class Plan:
    """What a completion request asks for, checked."""

    max_tokens: int
    temperature: float
    top_p: float
    n: int
    stop: tuple
    seed: Optional[int]
    stream: bool
    include_usage: bool

    def jobs(self, prompts: int) -> list["Job"]:
        """One generation per prompt when greedy (its n choices are the same), else one per choice;
        choice ``c`` of a seeded request samples with seed + c, so n=1 repeats choice 0 of n=2."""
        n = self.n
        if self.temperature == 0:
            return [Job(p, tuple(range(p * n, p * n + n)), None) for p in range(prompts)]
        return [Job(p, (p * n + c,), None if self.seed is None else (self.seed + c) % SEED_RANGE)
                for p in range(prompts) for c in range(n)]


@dataclass(frozen=True)
class Job:
    prompt: int       # index of the prompt
    choices: tuple    # indexes of the choices it answers
    seed: Optional[int]


@dataclass(frozen=True)
class Outcome:
    text: str
    finish_reason: str
    tokens: int


class BatchTooLong(Exception):
    """A batch whose padded prompts and new tokens exceed the context: the batcher runs its items one by one."""


@dataclass(frozen=True)
class Streamed:
    """One streamed generation waiting for its batch: the model thread feeds ``streamer`` and ``post``s its end."""

    text: str
    max_tokens: int
    streamer: PostingStreamer
    stop_now: threading.Event
    post: object


def check_stop(stop) -> tuple:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop: {len(stops)} stop strings; at most {MAX_STOPS}", "stop")
    if any(s == "" for s in stops):
        raise ApiError(400, "stop: stop strings must not be empty", "stop")
    return tuple(stops)


def batch_key(plan: Plan, job: Job) -> tuple:
    """Generations that may share a forward pass: same settings; a seeded one runs alone, so that its
    text does not depend on which other requests arrived with it."""
    seeded = None if job.seed is None else (job.seed, object())
    return plan.temperature, plan.top_p, plan.stop, seeded


def usage(prepared: list[tuple[str, int]], outcomes: list[Outcome]) -> dict:
    prompt_tokens = sum(length for _, length in prepared)
    completion_tokens = sum(o.tokens for o in outcomes)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Worker:
    """Validation against the model, and the batched calls into it."""

    def __init__(self, loaded: LoadedRun, settings: ServeSettings, model_id: str):
        self.loaded, self.settings, self.model_id = loaded, settings, model_id
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-model")  # torch uses every core
        self.prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-prep")  # templates, token counts
        self.classifier = MicroBatcher(lambda texts, _: classify(loaded, texts), self.executor,
                                       settings.max_batch_size, settings.max_wait_ms)
        self.generator = MicroBatcher(self._generate, self.executor, settings.max_batch_size, settings.max_wait_ms)
        self.streams = MicroBatcher(self._generate_streams, self.executor, settings.max_batch_size,
                                    settings.max_wait_ms)
        if loaded.labels is None:
            self.context = context_window(loaded.model)
            # The prep thread gets its own tokenizer: a fast tokenizer used by two threads at once can fail.
            self.prep_run = dataclasses.replace(loaded, tokenizer=copy.deepcopy(loaded.tokenizer))
        self.abandoned_streams = 0  # streams whose client disconnected before the end
        self.stream_tasks: set = set()  # streamed generations waiting for or in their batch

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": 0, "owned_by": "tunelab"}

    def check_model(self, given: Optional[str]) -> None:
        if given is not None and given != self.model_id:
            raise ApiError(404, f"model {given!r} is not served here; this server serves {self.model_id!r}", "model",
                           code="model_not_found")

    async def timed(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took longer than the server's {self.settings.timeout_s:g} s limit",
                           kind="timeout_error") from None

    def check_texts(self, given: str | list[str]) -> list[str]:
        texts = [given] if isinstance(given, str) else given
        self.check_count(len(texts), "input", "texts")
        if any(not t.strip() for t in texts):
            raise ApiError(400, "input: texts must not be empty", "input")
        return texts

    def check_count(self, count: int, param: str, noun: str) -> None:
        """At least one input, at most ``max_inputs``; else a 400 naming ``param``."""
        if not count:
            raise ApiError(400, f"{param}: give a text or a non-empty list of texts", param)
        if count > self.settings.max_inputs:
            raise ApiError(400, f"{param}: {count} {noun}; at most {self.settings.max_inputs} per call", param)

    def plan(self, body: Sampling, inputs: int, param: str, max_tokens: Optional[int], tokens_param: str) -> Plan:
        """The request's settings, or a 4xx naming the first field this server cannot honour."""
        self.check_model(body.model)
        extra = unsupported(body.model_extra or {})
        if extra is not None:
            raise ApiError(400, f"{printable(extra)}: not supported by tunelab serve (the README lists what is)",
                           printable(extra), code="unsupported_parameter")
        n, cap = body.n or 1, self.settings.max_inputs
        self.check_count(inputs, param, "prompts")
        if n > self.settings.max_choices or n * inputs > cap:
            raise ApiError(400, f"n: {n} choices for {inputs} prompt(s); at most {self.settings.max_choices} "
                                f"choices and {cap} prompts x choices per call", "n")
        max_tokens = min(DEFAULT_MAX_TOKENS, self.settings.max_tokens_cap) if max_tokens is None else max_tokens
        if max_tokens > self.settings.max_tokens_cap:
            raise ApiError(400, f"{tokens_param}: {max_tokens} is above this server's cap of "
                                f"{self.settings.max_tokens_cap}", tokens_param)
        stop = check_stop(body.stop)
        if body.stream_options is not None and not body.stream:
            raise ApiError(400, "stream_options: only allowed when stream is true", "stream_options")
        return Plan(max_tokens, body.temperature or 0.0, 1.0 if body.top_p is None else body.top_p, n, stop,
                    body.seed, bool(body.stream), bool(body.stream_options and body.stream_options.include_usage))

    async def prepare(self, prompts: list, plan: Plan, param: str) -> list[tuple[str, int]]:
        """Each prompt rendered for the model, with its token count, in the prep thread (the event loop
        stays free for /health and the other requests)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.prep, lambda: [self._render(p, plan, param) for p in prompts])

    def _render(self, prompt, plan: Plan, param: str) -> tuple[str, int]:
        try:
            text = render_prompt(self.prep_run, prompt)
        except Exception as err:  # a chat template may refuse a conversation (roles out of order, ...)
            first = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise ApiError(400, f"{param}: the model's chat template cannot render this ({first})", param) from None
        length = len(self.prep_run.tokenizer(text, add_special_tokens=False)["input_ids"])
        if length + plan.max_tokens > self.context:
            raise ApiError(400, f"the prompt has {length} tokens; with max_tokens {plan.max_tokens} that exceeds the "
                                f"model's context of {self.context} tokens", param, code="context_length_exceeded")
        return text, length

    def reply(self, prefix: str, kind: str, choices: list, prepared: list, outcomes: list[Outcome]) -> dict:
        return {"id": f"{prefix}{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
                "model": self.model_id, "choices": choices, "usage": usage(prepared, outcomes)}

    async def complete(self, prepared: list[tuple[str, int]], plan: Plan) -> list[Outcome]:
        """The outcome of every choice (index order), each generation batched with other requests'."""
        jobs = plan.jobs(len(prepared))
        results = await asyncio.gather(*(self.generator.submit((prepared[job.prompt][0], plan.max_tokens),
                                                               batch_key(plan, job)) for job in jobs))
        by_choice = {index: outcome for job, outcome in zip(jobs, results) for index in job.choices}
        return [by_choice[i] for i in range(len(by_choice))]

    def _fits(self, rows: int, longest: int, new_tokens: int) -> None:
        """Raise ``BatchTooLong`` when ``rows`` prompts left-padded to ``longest`` tokens cannot generate
        ``new_tokens`` within the model's context (each prompt alone was checked when it came in)."""
        if rows > 1 and longest + new_tokens > self.context:
            raise BatchTooLong(f"{longest} + {new_tokens} tokens exceed the context of {self.context}")

    def _generate(self, items: list, key) -> list[Outcome]:
        temperature, top_p, stop, seeded = key
        longest = max(max_tokens for _, max_tokens in items)
        prompts = self.loaded.tokenizer([text for text, _ in items], add_special_tokens=False)["input_ids"]
        self._fits(len(items), max(len(ids) for ids in prompts), longest)
        outputs = generate(self.loaded, [text for text, _ in items], longest, batch_size=len(items),
                           temperature=temperature, top_p=top_p, seed=seeded[0] if seeded else None,
                           token_ids=True, stop=list(stop), rendered=True)
        return [self._outcome(ids[:max_tokens], max_tokens, stop) for ids, (_, max_tokens) in zip(outputs, items)]

    def _outcome(self, ids: list[int], max_tokens: int, stop) -> Outcome:
        text = self.loaded.tokenizer.decode(ids, skip_special_tokens=True)
        cut = first_stop(text, stop)
        if cut is not None:
            return Outcome(text[:cut].strip(), "stop", len(ids))
        return Outcome(text.strip(), "length" if len(ids) >= max_tokens else "stop", len(ids))

    async def stream(self, prepared: list[tuple[str, int]], plan: Plan, events):
        """Server-sent events: chunks as the model produces text, then [DONE]. A generation that fails
        ends the stream with an error event (and [DONE]) at once."""
        chunk_id, created = f"{events.prefix}{uuid.uuid4().hex[:24]}", int(time.time())
        stop_now = threading.Event()
        outcomes: dict[int, Outcome] = {}

        def event(choices: list, **extra) -> str:
            chunk = {"id": chunk_id, "object": events.object, "created": created, "model": self.model_id,
                     "choices": choices, **({"usage": None} if plan.include_usage else {}), **extra}
            return f"data: {json.dumps(chunk)}\n\n"

        finished = False
        try:
            openings = [events.opening(i) for i in range(len(prepared) * plan.n)]
            if any(openings):
                yield event([o for o in openings if o])
            for job in plan.jobs(len(prepared)):
                async for piece in self._pieces(prepared[job.prompt][0], plan, job, stop_now):
                    if isinstance(piece, Outcome):
                        outcomes.update({i: piece for i in job.choices})
                        yield event([events.closing(i, piece.finish_reason) for i in job.choices])
                    else:
                        yield event([events.piece(i, piece) for i in job.choices])
            if plan.include_usage:
                yield event([], usage=usage(prepared, [outcomes[i] for i in sorted(outcomes)]))
            finished = True
            yield "data: [DONE]\n\n"
        except Exception as err:  # a stream that breaks still ends, with an error event and [DONE]
            if not isinstance(err, StreamFailed):
                log_bug("a stream", err)
                err = StreamFailed("internal error; the server log has the details")
            finished = True
            stop_now.set()
            yield f"data: {json.dumps(error_body(err.message, err.kind))}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away: stop generating for nobody, free the model
                stop_now.set()
                self.abandoned_streams += 1

    async def _pieces(self, text: str, plan: Plan, job: Job, stop_now: threading.Event):
        """The text of one generation as it comes (stop strings cut out), then its Outcome. The generation
        is batched with other requests' streams; the model thread posts to a queue on the event loop: no
        thread waits on the consumer's behalf."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the server is shutting down
                pass

        streamer = PostingStreamer(self.loaded.tokenizer, post)
        self.stream_tasks.add(task := asyncio.ensure_future(
            self.streams.submit(Streamed(text, plan.max_tokens, streamer, stop_now, post), batch_key(plan, job))))
        task.add_done_callback(lambda done: self._settled(done, post))
        scanner = StopScanner(plan.stop)
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), self.settings.timeout_s)
            except asyncio.TimeoutError:
                stop_now.set()
                raise StreamFailed(f"no output within the server's {self.settings.timeout_s:g} s limit",
                                   "timeout_error") from None
            if kind == "error":
                log_bug("a streamed generation", value)
                raise StreamFailed("the generation failed; the server log has the details")
            if kind == "text":
                out = scanner.feed(value)
            else:
                out = scanner.flush()
            if out:
                yield out
            if kind == "end":
                finish = "stop" if scanner.stopped or streamer.tokens < plan.max_tokens else "length"
                yield Outcome("", finish, streamer.tokens)
                return

    def _settled(self, task: asyncio.Future, post) -> None:
        """A streamed generation's batch is over; one that failed before streaming anything reports it here."""
        self.stream_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            post(("error", task.exception()))

    def _generate_streams(self, items: list[Streamed], key) -> list[None]:
        """Runs in the model thread: one batched generate for streams with the same settings; each row
        streams its tokens and ends as soon as it is done. Streams whose client has left by now end at
        once, without taking a row."""
        gone = [item.stop_now.is_set() for item in items]
        for item, left in zip(items, gone):
            if left:
                item.post(("end", None))
        live = [item for item, left in zip(items, gone) if not left]
        if live:
            self._stream_batch(live, key)
        return [None] * len(items)

    def _stream_batch(self, items: list[Streamed], key) -> None:
        import torch
        from transformers import StoppingCriteriaList

        temperature, top_p, stop, seeded = key
        tokenizer = self.loaded.tokenizer

        def finish(row: int) -> None:
            items[row].streamer.end()
            items[row].post(("end", None))

        rows = RowStreamer([item.streamer for item in items], finish)
        try:
            batch = left_padded(tokenizer, [item.text for item in items])
            length, new_tokens = batch["input_ids"].shape[1], max(item.max_tokens for item in items)
            self._fits(len(items), length, new_tokens)
            criterion = StreamedRows([item.stop_now for item in items], [item.max_tokens for item in items], length,
                                     tokenizer.eos_token_id, rows,
                                     StopTexts(tokenizer, list(stop), length) if stop else None)
            if seeded:
                torch.manual_seed(seeded[0])
            with torch.inference_mode():
                self.loaded.model.generate(**batch, max_new_tokens=new_tokens,
                                           streamer=rows, pad_token_id=tokenizer.pad_token_id,
                                           eos_token_id=tokenizer.eos_token_id,
                                           stopping_criteria=StoppingCriteriaList([criterion]),
                                           **sampling_arguments(temperature, top_p))
            rows.end_all()
        except Exception as err:
            if not any(rows.sent):
                raise  # nothing streamed yet: the batcher runs each stream again alone, so only the bad one fails
            for row, item in enumerate(items):  # rows already streamed cannot be rerun: each still going fails
                if row not in rows.ended:
                    rows.ended.add(row)
                    item.post(("error", err))
