"""The HTTP server: OpenAI clients work against it, bad requests get 4xx, batching changes nothing."""

import asyncio
import json

import httpx
import pytest

from conftest import Server, train_config
from tunelab.config import load_config
from tunelab.inference import classify, generate, load_run
from tunelab.serving import ServeSettings, create_app
from tunelab.training import train


@pytest.fixture(scope="module")
def classifier_run(classifier_dir):
    return load_run(classifier_dir)


@pytest.fixture(scope="module")
def causal_server(causal_run):
    server = Server(create_app(causal_run, ServeSettings(max_tokens_cap=32, api_key="sekret"), "tiny"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def classifier_server(classifier_run):
    server = Server(create_app(classifier_run, ServeSettings(max_inputs=4, max_wait_ms=20), "intents"))
    yield server
    server.stop()


def test_openai_client_completion_chat_stream_and_models(causal_server, causal_run):
    from openai import OpenAI

    client = OpenAI(base_url=causal_server.url + "/v1", api_key="sekret")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    completion = client.completions.create(model="tiny", prompt="Say alpha.", max_tokens=5)
    expected = generate(causal_run, ["Say alpha."], 5)[0]
    assert completion.choices[0].text == expected and completion.usage.completion_tokens <= 5
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Say beta."}],
                                          max_tokens=6)
    assert chat.choices[0].message.content == generate(causal_run, [[{"role": "user", "content": "Say beta."}]], 6)[0]
    assert chat.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Say beta."}],
                                            max_tokens=6, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream]
    assert "".join(pieces).strip() == chat.choices[0].message.content


def test_api_key_is_required_except_for_health(causal_server):
    assert httpx.get(causal_server.url + "/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.get(causal_server.url + "/v1/models", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("body, param", [
    ('{"prompt": "hi", "max_tokens": 5', None),                          # malformed JSON
    ({"prompt": 5, "max_tokens": 5}, "prompt"),                            # wrong type
    ({"prompt": "   ", "max_tokens": 5}, "prompt"),                        # empty
    ({"prompt": "hi", "max_tokens": 1000}, "max_tokens"),                  # above the cap
    ({"prompt": "hi", "temperature": 3}, "temperature"),                  # out of range
    ({"prompt": "word " * 400, "max_tokens": 30}, "prompt"),               # longer than the context
    ({"max_tokens": 5}, "prompt"),                                         # missing
])
def test_bad_completion_requests_get_400_in_openai_shape(causal_server, body, param):
    headers = {"Authorization": "Bearer sekret", "Content-Type": "application/json"}
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(causal_server.url + "/v1/completions", content=content, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param:
        assert error["param"] == param


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "word " * 400}], "stream": True, "max_tokens": 30}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
])
def test_bad_chat_requests_get_400_before_any_stream(causal_server, body, param):
    response = httpx.post(causal_server.url + "/v1/chat/completions", json=body,
                          headers={"Authorization": "Bearer sekret"})
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_classify_one_and_many_and_bad_inputs(classifier_server, classifier_run):
    one = httpx.post(classifier_server.url + "/v1/classify", json={"input": "alpha item 3"}).json()
    assert one["data"][0]["label"] == classify(classifier_run, ["alpha item 3"])[0]["label"]
    texts = ["alpha item 1", "beta item 2", "gamma item 3"]
    many = httpx.post(classifier_server.url + "/v1/classify", json={"input": texts}).json()["data"]
    assert [r["label"] for r in many] == [r["label"] for r in classify(classifier_run, texts)]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in many)
    for body in ({"input": []}, {"input": ""}, {"input": ["a"] * 5}, {"input": 3}, {"text": "a"}):
        response = httpx.post(classifier_server.url + "/v1/classify", json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == "input", body


def test_each_kind_of_run_points_to_its_own_routes(classifier_server, causal_server):
    from openai import NotFoundError, OpenAI

    for path, body in (("/v1/completions", {"prompt": "x"}), ("/v1/chat/completions", {"messages": []})):
        reply = httpx.post(classifier_server.url + path, json=body)
        assert reply.status_code == 404 and "/v1/classify" in reply.json()["error"]["message"], reply.text
    with pytest.raises(NotFoundError, match="/v1/classify"):
        OpenAI(base_url=classifier_server.url + "/v1", api_key="-", max_retries=0).chat.completions.create(
            model="intents", messages=[{"role": "user", "content": "hi"}])
    reply = httpx.post(causal_server.url + "/v1/classify", json={"input": "x"},
                       headers={"Authorization": "Bearer sekret"})
    assert reply.status_code == 404 and "/v1/chat/completions" in reply.json()["error"]["message"]


def test_concurrent_requests_are_batched_and_match_one_by_one(classifier_server, classifier_run):
    texts = [f"{word} item {i}" for i in range(4) for word in ("alpha", "beta")]
    expected = [r["probabilities"] for r in classify(classifier_run, texts)]

    async def send_all():
        async with httpx.AsyncClient(base_url=classifier_server.url) as client:
            replies = await asyncio.gather(*(client.post("/v1/classify", json={"input": t}) for t in texts))
        return [r.json()["data"][0]["probabilities"] for r in replies]

    batcher = classifier_server.server.config.app.state.worker.classifier
    before = len(batcher.batches)
    got = asyncio.run(send_all())
    for a, b in zip(got, expected):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
    sizes = batcher.batches[before:]
    assert sum(sizes) == len(texts) and max(sizes) > 1, sizes  # 8 requests in fewer forward passes


def test_concurrent_streams_share_a_batch_and_each_ends_at_its_own_length(causal_run):
    """Four streamed chats with different max_tokens run as one batched generate; each stream gets the
    text it would get alone, and a short one ends while the longest is still generating."""
    server = Server(create_app(causal_run, ServeSettings(max_wait_ms=300), "tiny"))
    say = [{"role": "user", "content": "Say alpha."}]
    limits = [2, 4, 8, 24]
    finished = []

    async def stream(client, max_tokens):
        text = ""
        async with client.stream("POST", "/v1/chat/completions",
                                 json={"messages": say, "max_tokens": max_tokens, "stream": True}) as reply:
            async for line in reply.aiter_lines():
                if line.startswith("data: {"):
                    text += "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])
        finished.append(max_tokens)
        return text.strip()

    async def all_streams():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(stream(client, n) for n in limits))

    try:
        batcher = server.server.config.app.state.worker.streams
        texts = asyncio.run(all_streams())
        assert batcher.batches == [4], batcher.batches
        expected = [generate(causal_run, [say], n)[0] for n in limits]
        assert texts == expected
        ids = generate(causal_run, [say], limits[-1], token_ids=True)[0]
        if len(ids) == limits[-1]:  # the longest really generated longer than the others
            assert finished.index(limits[0]) < finished.index(limits[-1]), finished
    finally:
        server.stop()


def test_a_request_running_too_long_is_cut_with_504(causal_run):
    server = Server(create_app(causal_run, ServeSettings(timeout_s=0.001), "tiny"))
    try:
        response = httpx.post(server.url + "/v1/completions", json={"prompt": "Say alpha.", "max_tokens": 16})
        assert response.status_code == 504 and response.json()["error"]["type"] == "timeout_error"
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        server.stop()


def test_serve_cli_binds_loopback_by_default_and_refuses_missing_runs(tmp_path, run_cli):
    from tunelab.cli.commands import build_parser

    args = build_parser().parse_args(["serve", str(tmp_path)])
    assert args.host is None and args.port is None and args.max_batch_size is None  # not given: the run's serve.*
    defaults = ServeSettings()
    assert defaults.host == "127.0.0.1" and defaults.port == 8000 and defaults.max_batch_size == 16
    code, _, err = run_cli("serve", tmp_path / "nope")
    assert code == 2 and "not a tunelab run folder" in err


@pytest.mark.slow
def test_classify_with_the_real_minilm(tmp_path):
    run_dir = train.run(load_config(train_config(tmp_path, "builtin:minilm", train={"max_steps": 3})))
    loaded = load_run(run_dir)
    server = Server(create_app(loaded, ServeSettings(), "minilm"))
    try:
        texts = ["alpha item 1", "beta item 2", "gamma item 3"]
        one = httpx.post(server.url + "/v1/classify", json={"input": texts[0]}).json()["data"]
        many = httpx.post(server.url + "/v1/classify", json={"input": texts}).json()["data"]
        expected = classify(loaded, texts)
        assert one[0]["label"] == expected[0]["label"]
        assert [r["label"] for r in many] == [r["label"] for r in expected] and len(many[0]["probabilities"]) == 3
    finally:
        server.stop()


def test_oversized_bodies_get_413_in_json_declared_or_chunked(classifier_run):
    server = Server(create_app(classifier_run, ServeSettings(max_body_bytes=10_000), "intents"))
    try:
        big = json.dumps({"input": "x" * 50_000}).encode()
        declared = httpx.post(server.url + "/v1/classify", content=big, headers={"Content-Type": "application/json"})
        chunked = httpx.post(server.url + "/v1/classify", content=iter([big[:6000], big[6000:]]),
                             headers={"Content-Type": "application/json"})
        for reply in (declared, chunked):
            assert reply.status_code == 413 and "10,000 bytes" in reply.json()["error"]["message"], reply.text
        assert httpx.post(server.url + "/v1/classify", json={"input": "fine"}).status_code == 200
    finally:
        server.stop()


def test_slow_clients_do_not_stall_the_others(classifier_server):
    import socket

    port = classifier_server.port
    stalled = []
    for partial in (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Le",                      # headers cut
                    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 500\r\n\r\n{\"input\": \"sl"):                               # body cut
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(partial)
            stalled.append(sock)
    try:  # a stalled connection holding the server would make these time out
        for i in range(10):
            reply = httpx.post(classifier_server.url + "/v1/classify", json={"input": f"alpha item {i}"}, timeout=30)
            assert reply.status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def test_a_client_leaving_mid_stream_stops_its_generation(causal_run, monkeypatch):
    import time

    import tunelab.serving.worker

    checks = []

    class Recorded(tunelab.serving.worker.StreamedRows):
        def __call__(self, input_ids, scores, **kwargs):
            checks.append(self.events[0].is_set())
            return super().__call__(input_ids, scores, **kwargs)

    monkeypatch.setattr(tunelab.serving.worker, "StreamedRows", Recorded)
    server = Server(create_app(causal_run, ServeSettings(max_tokens_cap=200), "tiny"))
    worker = server.server.config.app.state.worker
    try:
        body = {"messages": [{"role": "user", "content": "Say alpha."}], "stream": True, "max_tokens": 200}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as reply:
            first = next(reply.iter_lines())
            assert first.startswith("data: ")
        deadline = time.time() + 10
        while worker.abandoned_streams == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert worker.abandoned_streams == 1
        while worker.stream_tasks and time.time() < deadline:  # until its batch is over
            time.sleep(0.05)
        assert not worker.stream_tasks
        # Either its batch started before it left (and its row stopped at the next step), or it never took a row.
        assert (not checks or checks[-1]) and len(checks) < 200, f"generated {len(checks)} tokens for a client that left"
        reply = httpx.post(server.url + "/v1/completions", json={"prompt": "Say beta.", "max_tokens": 4}, timeout=10)
        assert reply.status_code == 200
    finally:
        server.stop()


def test_a_bug_still_answers_json_500_and_logs_its_traceback(capsys):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tunelab.serving.web import json_500

    app = FastAPI()
    json_500(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    reply = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"
    assert "a bug" not in reply.text
    assert "RuntimeError: a bug" in capsys.readouterr().err


def test_a_stream_goes_on_when_decoding_more_tokens_rewrites_the_text_sent():
    """Tokenizers that tidy spaces turn "do n" into "don't" once the next token comes; the stream must not stop."""
    import torch

    from tunelab.serving.streams import PostingStreamer

    class Tidying:
        eos_token_id = 0
        pieces = {1: "do", 2: " n", 3: "'t", 4: " stop"}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(self.pieces[i] for i in ids).replace(" n'", "n'")

    posted = []
    streamer = PostingStreamer(Tidying(), posted.append)
    streamer.put(torch.tensor([[9, 9]]))  # the prompt
    for token in (1, 2, 3, 4):
        streamer.put(torch.tensor([token]))
    streamer.end()
    text = "".join(piece for _, piece in posted)
    assert text.endswith(" stop") and len(posted) == 4, posted


@pytest.mark.parametrize("criteria_first", [True, False])
def test_a_batched_stream_keeps_its_last_token_whichever_order_generate_calls_in(criteria_first):
    """transformers 5 runs the stopping criteria before it hands the step's tokens to the streamer;
    older versions after. Either way row 0 (done after 2 tokens) streams exactly those 2, and ends
    then; row 1 goes on to 4."""
    import threading

    import torch

    from tunelab.serving.streams import PostingStreamer, RowStreamer, StreamedRows

    class Letters:
        eos_token_id = 99

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(ord("a") + i) for i in ids if i != self.eos_token_id)

    posted, ended = {0: [], 1: []}, []
    streamers = [PostingStreamer(Letters(), lambda item, row=row: posted[row].append(item[1])) for row in (0, 1)]
    rows = RowStreamer(streamers, ended.append)
    criterion = StreamedRows([threading.Event(), threading.Event()], [2, 4], prompt_length=1, eos=99, rows=rows)
    ids = torch.tensor([[7], [7]])
    rows.put(ids)  # the prompts
    for step in range(4):
        token = torch.tensor([step, step + 10])
        ids = torch.cat([ids, token[:, None]], dim=1)
        if criteria_first:
            criterion(ids, None)
            rows.put(token)
        else:
            rows.put(token)
            criterion(ids, None)
        if step == 1:
            assert 0 in ended and 1 not in ended  # the short row ends while the long one goes on
    rows.end_all()
    assert "".join(posted[0]) == "ab" and "".join(posted[1]) == "klmn" and sorted(ended) == [0, 1]


def test_streams_that_fit_alone_but_not_padded_together_run_one_by_one(causal_run):
    """A long prompt asking for few tokens and a short one asking for many each fit the context (512 for
    the tiny model), but not left-padded into one batch: the batch is refused before anything streams,
    and each runs alone."""
    from tunelab.serving.worker import BatchTooLong

    server = Server(create_app(causal_run, ServeSettings(max_tokens_cap=400, max_wait_ms=300), "tiny"))
    worker = server.server.config.app.state.worker
    refused, real_fits = [], worker._fits

    def fits(rows, longest, new_tokens):
        try:
            real_fits(rows, longest, new_tokens)
        except BatchTooLong:
            refused.append(rows)
            raise

    worker._fits = fits
    bodies = [{"messages": [{"role": "user", "content": "alpha beta " * 40}], "max_tokens": 4, "stream": True},
              {"messages": [{"role": "user", "content": "Say alpha."}], "max_tokens": 380, "stream": True}]

    async def both():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for body in bodies))

    try:
        replies = asyncio.run(both())
        for reply in replies:
            lines = [line for line in reply.text.splitlines() if line.startswith("data: ")]
            assert reply.status_code == 200 and lines[-1] == "data: [DONE]" and '"error"' not in reply.text, reply.text
        assert refused == [2] and worker.streams.batches == [2]
    finally:
        server.stop()
