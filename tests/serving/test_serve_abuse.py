"""Both servers attacked for real on loopback: input caps, work kept off the event loop, one bad input
failing only its own request, streams that break, slow clients, and a bounded fuzz of every endpoint."""

import asyncio
import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import Server
from tunelab.inference import load_run
from tunelab.serving import ServeSettings, create_app
from tunelab.studio.app import create_app as create_web_app
from tunelab.studio.jobs import Jobs
from tunelab.studio.tryout import open_runs
from tunelab.studio.workspace import Workspace
from tunelab.serving.batching import MicroBatcher
from tunelab.serving.web import Timeouts

HANG = 30  # seconds: an answer that takes longer than this is a hang (the servers' own limit is 60 s)


@pytest.fixture(scope="module")
def causal_server(causal_run):
    server = Server(create_app(causal_run, ServeSettings(max_tokens_cap=8, max_inputs=4), "tiny"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def classifier_server(classifier_dir):
    server = Server(create_app(load_run(classifier_dir), ServeSettings(max_inputs=4, max_wait_ms=50), "intents"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_server(classifier_dir, tmp_path_factory):
    jobs = Jobs(Workspace(tmp_path_factory.mktemp("workspace")))  # empty: nothing submitted can train
    server = Server(create_web_app(open_runs([str(classifier_dir)]), jobs=jobs))
    yield server
    server.stop()


def chat(content: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def post_raw(url: str, body: dict, **kwargs) -> httpx.Response:
    """POST ``body`` as JSON with every non-ASCII character escaped, so lone surrogates travel as \\udxxx."""
    return httpx.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=HANG,
                      **kwargs)


def test_the_input_cap_covers_prompts_and_choices(causal_server):
    for prompts, n, param in ((5, 1, "prompt"), (10_000, 1, "prompt"), (2, 3, "n"), (1, 9, "n")):
        reply = httpx.post(causal_server.url + "/v1/completions",
                           json={"prompt": ["Say alpha."] * prompts, "n": n, "max_tokens": 2}, timeout=HANG)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, (prompts, n, reply.text)
    ok = httpx.post(causal_server.url + "/v1/completions", json={"prompt": ["Say alpha."] * 4, "max_tokens": 2},
                    timeout=HANG)
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 4


def test_health_answers_while_a_big_request_is_being_prepared(causal_server, monkeypatch):
    import tunelab.serving.worker

    started, release = threading.Event(), threading.Event()
    real = tunelab.serving.worker.render_prompt

    def slow_render(loaded, prompt):
        started.set()
        release.wait(HANG)
        return real(loaded, prompt)

    monkeypatch.setattr(tunelab.serving.worker, "render_prompt", slow_render)
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(httpx.post, causal_server.url + "/v1/completions",
                          json={"prompt": ["Say alpha. " * 50] * 4, "max_tokens": 2}, timeout=HANG * 2)
        try:
            assert started.wait(HANG), "the request never reached the prompt template"
            health = httpx.get(causal_server.url + "/health", timeout=10)
        finally:
            release.set()
        assert health.status_code == 200
        assert big.result().status_code == 200


def test_a_lone_surrogate_fails_only_its_own_request(classifier_server):
    texts = [f"alpha item {i}" for i in range(6)] + ["beta item \ud800"]

    async def send_all():
        async with httpx.AsyncClient(base_url=classifier_server.url, timeout=HANG) as client:
            return await asyncio.gather(*(client.post("/v1/classify", content=json.dumps({"input": t}),
                                                      headers={"Content-Type": "application/json"}) for t in texts))

    replies = asyncio.run(send_all())
    assert [r.status_code for r in replies] == [200] * 6 + [400], [r.text for r in replies]
    error = replies[-1].json()["error"]
    assert error["param"] == "input" and "surrogate" in error["message"]


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "Say \udfff alpha.", "max_tokens": 2}, "prompt"),
    ("/v1/completions", {"prompt": ["fine", "x\ud800"], "max_tokens": 2}, "prompt"),
    ("/v1/completions", {"prompt": "fine", "stop": ["\ud800"], "max_tokens": 2}, "stop"),
    ("/v1/chat/completions", chat("x\ud800"), "messages"),
    ("/v1/chat/completions", chat("x\ud800", stream=True), "messages"),
    ("/v1/chat/completions", chat("fine", model="tiny\udc80"), "model"),
])
def test_text_that_is_not_unicode_gets_a_400_naming_its_field(causal_server, path, body, param):
    reply = post_raw(causal_server.url + path, body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


def test_the_app_refuses_a_lone_surrogate_with_a_400(app_server, classifier_dir):
    reply = post_raw(app_server.url + "/api/try", {"run": classifier_dir.name, "text": "alpha \ud800"})
    assert reply.status_code == 400 and "text" in reply.json()["detail"], reply.text


def test_a_batch_that_raises_is_retried_one_by_one():
    calls = []

    def run_batch(items, key):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("cannot take 'bad'")
        return [item.upper() for item in items]

    async def submit_all():
        batcher = MicroBatcher(run_batch, pool, max_batch_size=8, max_wait_ms=200)
        return await asyncio.gather(*(batcher.submit(x) for x in ["a", "bad", "c"]), return_exceptions=True)

    with ThreadPoolExecutor(1) as pool:
        results = asyncio.run(submit_all())
    assert calls[0] == ["a", "bad", "c"], calls  # one batch first
    assert results[0] == "A" and results[2] == "C" and isinstance(results[1], ValueError), results


async def stream_lines(client: httpx.AsyncClient, body: dict) -> list[str]:
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        return [line async for line in reply.aiter_lines() if line.startswith("data: ")]


def test_a_failing_generation_ends_its_stream_and_starves_no_other(causal_run, monkeypatch):
    real = causal_run.model.generate

    def breaks_on_boom(*args, **kwargs):  # any batch holding a "boom" row breaks, whatever the rows' order
        if any("boom" in causal_run.tokenizer.decode(row) for row in kwargs["input_ids"]):
            raise RuntimeError("the generation broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(causal_run.model, "generate", breaks_on_boom)
    server = Server(create_app(causal_run, ServeSettings(max_tokens_cap=8), "tiny"))  # its timeout: 60 s

    async def streams():
        async with httpx.AsyncClient(base_url=server.url, timeout=HANG) as client:
            return await asyncio.gather(*(stream_lines(client, chat("boom", stream=True)) for _ in range(6)),
                                        stream_lines(client, chat("Say alpha.", stream=True)))

    try:
        *broken, good = asyncio.run(streams())
        for lines in broken:
            assert lines[-1] == "data: [DONE]", lines
            error = json.loads(lines[-2][6:])["error"]
            assert error["type"] == "server_error" and "RuntimeError" not in error["message"]
        assert good[-1] == "data: [DONE]" and "error" not in json.loads(good[-2][6:])
        after = httpx.post(server.url + "/v1/chat/completions", json=chat("Say beta."), timeout=HANG)
        assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] is not None
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded(classifier_dir):
    short = Timeouts(head_s=1, body_s=1, keep_alive_s=1)
    server = Server(create_app(load_run(classifier_dir), ServeSettings(timeouts=short), "intents"), short)
    yield server
    server.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it keeps it open."""
    sock.settimeout(HANG)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except socket.timeout:
        raise AssertionError(f"the server kept a stalled connection open for {HANG} s") from None
    except ConnectionResetError:
        pass
    return data


def test_a_stalled_request_head_is_cut(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        assert read_until_closed(sock) == b""
    assert httpx.get(guarded.url + "/health").status_code == 200


def test_a_head_sent_a_byte_at_a_time_is_cut(guarded):
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 500
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.settimeout(0.1)
        deadline, closed = time.time() + HANG, False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(1) == b""
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed or time.time() > deadline:
                break
        assert closed, "a request head trickling in forever kept its connection"


def test_a_stalled_body_gets_408_and_is_closed(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"input\": \"sl")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive" in answer and b"application/json" in answer


def test_an_idle_kept_alive_connection_is_closed(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


# --- a bounded fuzz of every endpoint: never a 5xx, always JSON, the servers stay healthy -----------

def junk(rng: random.Random, depth: int = 0):
    """A random JSON value: unicode (lone surrogates too), huge and negative numbers, nulls, nesting."""
    kinds = ["null", "bool", "int", "float", "text", "text"] + (["list", "object"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 7, 64, 10 ** 6, -(10 ** 9), 2 ** 63, 2 ** 64, -(2 ** 64), 10 ** 40])
    if kind == "float":
        return rng.choice([0.0, 1e-300, -1e-300, 0.5, 1.5, 2.0, 3.0, -0.5, 1e308, -1e308, float("nan"),
                           float("inf"), float("-inf")])
    if kind == "text":
        return rng.choice(["", " ", "hi", "Say alpha.", "\ud800", "x\udfff", "\x00", "é😀", "a" * 5000,
                           "<script>alert(1)</script>", "../../etc/passwd", "tiny", "intents", "none", "auto",
                           "\u202e", "\n\n"])
    if kind == "list":
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["type", "text", "role", "content", "x", "include_usage", "\ud800"]): junk(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


# Values near the edge of what each field takes, so that many fuzzed requests get past validation.
PLAUSIBLE = {
    "model": ["tiny", "intents", "gpt-4o", None], "max_tokens": [1, 4, 8, 9, 0, -1], "max_completion_tokens": [2, 99],
    "temperature": [0, 0.01, 0.7, 2, 2.01, 1e-300, 0.009], "top_p": [1e-9, 0.5, 1, 0, 1.01], "n": [1, 2, 3, 8, 9],
    "stop": ["a", ["a", " "], [], [""], ["\ud800"], ["a", "b", "c", "d", "e"], None],
    "seed": [0, 1, -1, 2 ** 63, 2 ** 64, 10 ** 40, None], "stream": [True, False, None],
    "stream_options": [{"include_usage": True}, {}, None, {"include_usage": "yes"}],
    "messages": [[{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
                 [{"role": "developer", "content": [{"type": "text", "text": "hi"}]}],
                 [{"role": "user", "content": [{"type": "image_url"}]}], [{"role": "tool", "content": "x"}],
                 [{"role": "user", "content": "Say alpha. " * 300}]],
    "prompt": [["a", "b", "c", "d"], ["a"] * 5, "x", " ", [], ["é😀", "\x00"]],
    "input": [["a"] * 4, ["a"] * 5, "", ["alpha", " "], "gamma"], "run": [0, 1, -1, "0"],
    "text": ["beta item 2", " ", "x" * 4001], "tools": [[], None, [{"type": "function"}]], "logprobs": [False, True, 0, 3],
    "echo": [False, True], "best_of": [1, 2], "suffix": ["", "x", None], "user": ["u"], "presence_penalty": [0, 0.1],
    "logit_bias": [{}, {"1": 5}], "response_format": [{"type": "text"}, {"type": "json_object"}],
    "\ud800": [1], "extra": [None, 1],
}


def fuzzed_body(rng: random.Random, valid: dict):
    if rng.random() < 0.1:
        return junk(rng)                                 # any JSON value at all
    body = dict(valid)
    for _ in range(rng.randint(1, 2)):
        name = rng.choice(list(PLAUSIBLE))
        if rng.random() < 0.15 and body:
            body.pop(rng.choice(list(body)))
        else:
            body[name] = rng.choice(PLAUSIBLE[name]) if rng.random() < 0.6 else junk(rng)
    return body


def fuzz(url: str, routes: list, rng: random.Random, count: int) -> list[tuple]:
    problems = []
    for _ in range(count):
        method, path, valid = rng.choice(routes)
        if rng.random() < 0.05:
            content = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))   # not JSON
        else:
            content = json.dumps(fuzzed_body(rng, valid) if valid is not None else junk(rng)).encode()
        with httpx.stream(method, url + path, content=content, headers={"Content-Type": "application/json"},
                          timeout=HANG) as reply:
            text = reply.read().decode("utf-8", "replace")
        problem = answer_problem(reply, text)
        if problem:
            problems.append((method, path, content[:300], reply.status_code, problem, text[:300]))
    return problems


def answer_problem(reply: httpx.Response, text: str) -> str | None:
    kind = reply.headers.get("content-type", "")
    if reply.status_code >= 500:
        return "5xx"
    if kind.startswith("text/event-stream"):
        return None if text.rstrip().endswith("data: [DONE]") else "a stream without [DONE]"
    if kind.startswith("text/html"):
        return None if reply.status_code == 200 else "an HTML error"
    try:
        body = json.loads(text)
    except ValueError:
        return "not JSON"
    if reply.status_code >= 400 and not (isinstance(body, dict) and ("error" in body or "detail" in body)):
        return "an error without a message"
    return None


@pytest.mark.parametrize("seed", [0])
def test_fuzzing_every_endpoint_never_gets_a_5xx(causal_server, classifier_server, app_server, classifier_dir, seed):
    rng = random.Random(seed)
    causal_routes = [("POST", "/v1/completions", {"prompt": "Say alpha.", "max_tokens": 4}),
                     ("POST", "/v1/chat/completions", chat("Say beta.")),
                     ("POST", "/v1/chat/completions", chat("Say beta.", stream=True)),
                     ("POST", "/v1/completions", {"prompt": ["a", "b"], "max_tokens": 2, "stream": True, "n": 2}),
                     ("GET", "/v1/models", None), ("GET", "/v1/models/tiny", None), ("GET", "/health", None),
                     ("POST", "/v1/classify", {"input": "x"})]
    classifier_routes = [("POST", "/v1/classify", {"input": ["alpha item 1", "beta item 2"]}),
                         ("POST", "/v1/classify", {"input": "gamma item 3"}),
                         ("POST", "/v1/chat/completions", chat("x")), ("GET", "/v1/models/intents", None)]
    name = classifier_dir.name
    app_routes = [("POST", "/api/try", {"run": name, "text": "alpha item 3"}), ("GET", "/api/runs", None),
                  ("GET", f"/dashboard/{name}", None), ("GET", "/", None), ("POST", f"/dashboard/{name}", None),
                  ("GET", f"/api/runs/{name}", None), ("POST", f"/api/runs/{name}/stop", None),
                  ("POST", "/api/runs", {"name": "fuzzed", "config": {"task": "classification",
                                                                      "data": {"train": "uploads/none.jsonl"}}}),
                  ("POST", "/api/uploads?name=a.jsonl", {"text": "x", "label": "y"})]
    problems = (fuzz(causal_server.url, causal_routes, rng, 200) + fuzz(classifier_server.url, classifier_routes, rng, 100)
                + fuzz(app_server.url, app_routes, rng, 60))
    assert problems == [], problems[:5]
    for server in (causal_server, classifier_server):
        assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.post(causal_server.url + "/v1/completions", json={"prompt": "Say alpha.", "max_tokens": 2}).status_code == 200
    assert httpx.post(classifier_server.url + "/v1/classify", json={"input": "alpha"}).status_code == 200
    assert httpx.get(app_server.url + "/api/runs").status_code == 200
