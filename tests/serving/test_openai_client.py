"""`tunelab serve` as the official openai client sees it: models, stop, n, seed, streaming, usage,
and a clear 400 for every parameter the server does not implement."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import Server
from tunelab.serving import ServeSettings, StopScanner, create_app

KEY = "sekret"
SAY = [{"role": "user", "content": "Say beta."}]


@pytest.fixture(scope="module")
def server(causal_run):
    server = Server(create_app(causal_run, ServeSettings(max_tokens_cap=32, max_inputs=8, api_key=KEY), "tiny"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def sampled(client, **kwargs):
    """A varied text from the tiny model: greedy decoding repeats one token."""
    reply = client.chat.completions.create(model="tiny", messages=SAY, max_tokens=16, temperature=1.0, seed=5, **kwargs)
    return reply.choices[0].message.content


def streamed_chat(client, **kwargs) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(model="tiny", messages=SAY, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_models_and_unknown_models(client, server):
    from openai import NotFoundError

    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    for call in (lambda: client.models.retrieve("gpt-4o"),
                 lambda: client.completions.create(model="gpt-4o", prompt="hi", max_tokens=2),
                 lambda: client.chat.completions.create(model="gpt-4o", messages=SAY, max_tokens=2)):
        with pytest.raises(NotFoundError) as caught:
            call()
        assert caught.value.code == "model_not_found" and caught.value.body["type"] == "invalid_request_error"
    no_model = httpx.post(server.url + "/v1/chat/completions", json={"messages": SAY, "max_tokens": 2},
                          headers={"Authorization": f"Bearer {KEY}"})
    assert no_model.status_code == 200 and no_model.json()["model"] == "tiny"


def stop_inside(text: str) -> str:
    """Two visible characters from the middle of ``text``: a stop string that the model will meet."""
    for i in range(len(text) // 3, len(text) - 1):
        pair = text[i:i + 2]
        if pair.isprintable() and not any(c.isspace() or c == "\ufffd" for c in pair):
            return pair
    raise AssertionError(f"nothing to stop at in {text!r}")


@pytest.mark.parametrize("stream", [False, True])
def test_chat_stop_ends_the_text_before_the_stop_string(client, stream):
    full = sampled(client)
    stop = stop_inside(full)
    expected = full[:full.find(stop)].strip()
    if stream:
        text, chunks = streamed_chat(client, max_tokens=16, temperature=1.0, seed=5, stop=["zzzz", stop])
        text, finish = text.strip(), chunks[-1].choices[0].finish_reason
    else:
        reply = client.chat.completions.create(model="tiny", messages=SAY, max_tokens=16, temperature=1.0, seed=5,
                                               stop=stop)
        text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert reply.usage.completion_tokens < 16  # generation ended there, not just its text
    assert text == expected and stop not in text and finish == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_completion_stop_and_streaming(client, stream):
    base = dict(model="tiny", prompt="Say beta.", max_tokens=16, temperature=1.0, seed=5)
    full = client.completions.create(**base).choices[0].text
    stop = stop_inside(full)
    if stream:
        chunks = list(client.completions.create(**base, stop=stop, stream=True))
        assert all(c.object == "text_completion" and c.id.startswith("cmpl-") for c in chunks)
        text, finish = "".join(c.choices[0].text for c in chunks).strip(), chunks[-1].choices[0].finish_reason
    else:
        choice = client.completions.create(**base, stop=stop).choices[0]
        text, finish = choice.text, choice.finish_reason
    assert text == full[:full.find(stop)].strip() and finish == "stop"


def test_a_stream_holds_back_what_could_be_a_stop_string():
    scanner = StopScanner(["END", "STOP"])
    assert scanner.feed("one E") == "one "       # "E" may start END
    assert scanner.feed("N") == ""               # "EN" still may
    assert scanner.feed("Xtra S") == "ENXtra "  # it was not: let it go, hold "S"
    assert scanner.feed("TO") == ""
    assert scanner.feed("P and more") == "" and scanner.stopped
    assert scanner.feed("after") == "" and scanner.flush() == ""
    unfinished = StopScanner(["END"])
    assert unfinished.feed("tail E") == "tail " and unfinished.flush() == "E"


def test_n_returns_n_choices_within_the_caps(client):
    from openai import BadRequestError

    greedy = client.completions.create(model="tiny", prompt=["Say alpha.", "Say beta."], max_tokens=4, n=3)
    assert [c.index for c in greedy.choices] == list(range(6))
    assert len({c.text for c in greedy.choices[:3]}) == 1 and len({c.text for c in greedy.choices[3:]}) == 1
    chat = client.chat.completions.create(model="tiny", messages=SAY, max_tokens=16, temperature=1.0, seed=5, n=3)
    texts = [c.message.content for c in chat.choices]
    assert len(texts) == 3 and texts[0] == sampled(client) and len(set(texts)) > 1
    assert chat.usage.completion_tokens >= 3
    for kwargs in ({"n": 9}, {"n": 5, "prompt": ["a", "b"]}):
        with pytest.raises(BadRequestError) as caught:
            client.completions.create(**{"model": "tiny", "prompt": "x", "max_tokens": 2, **kwargs})
        assert caught.value.body["param"] == "n"


def test_streamed_n_and_usage_chunk(client):
    text, chunks = streamed_chat(client, max_tokens=6, n=2, stream_options={"include_usage": True})
    assert all(c.id.startswith("chatcmpl-") and c.object == "chat.completion.chunk" for c in chunks)
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in body)
    by_index = {0: "", 1: ""}
    for c in body:
        for choice in c.choices:
            by_index[choice.index] += choice.delta.content or ""
    plain = client.chat.completions.create(model="tiny", messages=SAY, max_tokens=6)
    assert by_index[0].strip() == by_index[1].strip() == plain.choices[0].message.content
    assert plain.id.startswith("chatcmpl-")
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2).id.startswith("cmpl-")


def test_a_seed_repeats_sampling_batched_or_streamed(client):
    with ThreadPoolExecutor(4) as pool:  # concurrent: the server batches what it can
        texts = list(pool.map(lambda _: sampled(client), range(4)))
    streamed, _ = streamed_chat(client, max_tokens=16, temperature=1.0, seed=5)
    assert len(set(texts)) == 1 and streamed.strip() == texts[0]
    others = {client.chat.completions.create(model="tiny", messages=SAY, max_tokens=16, temperature=1.0,
                                             seed=s).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {texts[0]}) > 1


@pytest.mark.parametrize("endpoint, field, value", [
    ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("chat", "tool_choice", "auto"),
    ("chat", "functions", [{"name": "f"}]),
    ("chat", "function_call", "auto"),
    ("chat", "parallel_tool_calls", True),
    ("chat", "response_format", {"type": "json_object"}),
    ("chat", "logprobs", True),
    ("chat", "top_logprobs", 2),
    ("chat", "logit_bias", {"5": 10}),
    ("chat", "presence_penalty", 0.5),
    ("chat", "frequency_penalty", -1),
    ("chat", "audio", {"voice": "alloy", "format": "wav"}),
    ("chat", "modalities", ["text", "audio"]),
    ("chat", "prediction", {"type": "content", "content": "x"}),
    ("chat", "reasoning_effort", "high"),
    ("chat", "repetition_penalty", 1.2),           # not OpenAI's, and not silently ignored either
    ("completions", "suffix", "end"),
    ("completions", "echo", True),
    ("completions", "best_of", 3),
    ("completions", "logprobs", 2),
])
def test_parameters_not_implemented_get_a_400_naming_them(client, endpoint, field, value):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        if endpoint == "chat":
            client.chat.completions.create(model="tiny", messages=SAY, max_tokens=2, extra_body={field: value})
        else:
            client.completions.create(model="tiny", prompt="hi", max_tokens=2, extra_body={field: value})
    assert caught.value.body["param"] == field and field in caught.value.body["message"]


def test_fields_clients_send_harmlessly_are_accepted(client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "developer", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": "Say beta."}]}],
        max_completion_tokens=3, user="someone", metadata={"team": "a"}, store=False, logprobs=False,
        presence_penalty=0, frequency_penalty=0.0, n=1, temperature=0, top_p=1,
        extra_body={"tools": None, "logit_bias": {}, "response_format": {"type": "text"}})
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 3
    completion = client.completions.create(model="tiny", prompt="hi", max_tokens=2, echo=False, best_of=1, suffix=None)
    assert completion.choices[0].text is not None
    text, chunks = streamed_chat(client, max_tokens=2, stream_options={"include_usage": False})
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("body, param", [
    ({"messages": SAY, "temperature": 1e-300}, "temperature"),
    ({"messages": SAY, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": SAY, "stop": ""}, "stop"),
    ({"messages": SAY, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ({"messages": SAY, "max_completion_tokens": 1000}, "max_completion_tokens"),
])
def test_values_out_of_reach_get_a_400_naming_them(server, body, param):
    reply = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


def test_completions_stream_sends_done(server):
    body = {"prompt": ["Say alpha.", "Say beta."], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    finished = {c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]}
    assert finished == {0, 1}
