"""Security defaults: safetensors only, trust_remote_code visible and refused in shared runs without a
flag, API key on every route but /health (and required off loopback), Host checked on loopback, no
CORS, no paths from the browser, no secrets in logs, run folders or errors."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from conftest import Server, train_config, write_config, write_jsonl
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.inference import load_run
from tunelab.serving import ServeSettings, create_app
from tunelab.training import train

SECRET = "sk-test-0123456789abcdef"
HUB_TOKEN = "hf_" + "Q" * 34


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("classifier")
    return train.run(load_config(train_config(folder, tiny_bert, train={"max_steps": 2, "threads": 1})))


@pytest.fixture(scope="module")
def locked_server(classifier_run):
    server = Server(create_app(load_run(classifier_run), ServeSettings(api_key=SECRET), "intents"))
    yield server
    server.stop()


def pickle_folder(tmp_path: Path, tiny_bert: Path, payload=None) -> Path:
    """A copy of tiny_bert whose weights are a pickle (``payload`` instead of the state dict, if given)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(payload if payload is not None else state, folder / "pytorch_model.bin")
    return folder


def test_pickle_weights_need_an_explicit_flag(tmp_path, tiny_bert, run_cli):
    folder = pickle_folder(tmp_path, tiny_bert)
    config = train_config(tmp_path, folder, train={"max_steps": 1, "threads": 1})
    code, _, err = run_cli("train", config)
    assert code == 2 and "has only pickle weights (pytorch_model.bin)" in err and "allow_pickle_weights" in err
    code, out, err = run_cli("train", config, "model.allow_pickle_weights=true")
    assert code == 0, err
    assert (tmp_path / "run" / "COMPLETE").exists()


class RunsCode:
    """A pickle payload that would create a file when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_even_allowed_pickles_load_with_weights_only(tmp_path, tiny_bert, run_cli):
    marker = tmp_path / "code-ran"
    folder = pickle_folder(tmp_path, tiny_bert, payload={"weight": RunsCode(marker)})
    config = train_config(tmp_path, folder, train={"max_steps": 1, "threads": 1})
    code, _, err = run_cli("train", config, "model.allow_pickle_weights=true")
    assert code == 2 and "torch.load(weights_only=True) refused them" in err and "Traceback" not in err
    assert not marker.exists()


def test_no_torch_load_without_weights_only_in_tunelab():
    source = Path(__file__).parent.parent / "src" / "tunelab"
    for path in source.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for chunk in text.split("torch.load(")[1:]:
            call = chunk.split(")")[0]
            assert "weights_only=True" in call, f"{path}: torch.load without weights_only=True"


def test_trust_remote_code_is_off_and_shown_in_the_resolved_config(tmp_path, run_cli):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t {i}", "label": "ab"[i % 2]} for i in range(20)])
    config = write_config(tmp_path)
    code, out, _ = run_cli("config", "show", config)
    assert code == 0 and "trust_remote_code: false" in out and "allow_pickle_weights: false" in out
    code, out, _ = run_cli("config", "show", config, "model.trust_remote_code=true")
    assert "trust_remote_code: true" in out


def test_the_run_folder_config_records_trust_remote_code(classifier_run):
    assert "trust_remote_code: false" in (classifier_run / "config.yaml").read_text()


def test_every_route_but_health_needs_the_api_key(locked_server, classifier_run):
    from fastapi.routing import APIRoute

    app = create_app(load_run(classifier_run), ServeSettings(api_key=SECRET), "intents")
    routes = [(route.path, sorted(route.methods)[0]) for route in app.routes if isinstance(route, APIRoute)]
    assert ("/health", "GET") in routes and len(routes) >= 3
    for path, method in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}):
            reply = httpx.request(method, locked_server.url + path, headers=headers, json={"input": "x"})
            expected = 200 if path == "/health" else 401
            assert reply.status_code == expected, (path, headers, reply.text)
            assert SECRET not in reply.text
    good = httpx.post(locked_server.url + "/v1/classify", json={"input": "alpha item"},
                      headers={"Authorization": f"Bearer {SECRET}"})
    assert good.status_code == 200


def test_the_key_is_compared_in_constant_time(locked_server, monkeypatch):
    import hmac

    import tunelab.serving.server

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(tunelab.serving.server.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    httpx.get(locked_server.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert calls


def test_cors_is_closed(locked_server):
    origin = {"Origin": "https://evil.example"}
    preflight = httpx.options(locked_server.url + "/v1/classify",
                              headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    reply = httpx.get(locked_server.url + "/health", headers=origin)
    assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


TRAVERSALS = ["/dashboard/../../etc/passwd", "/dashboard/..%2F..%2Fetc%2Fpasswd", "/dashboard/-1", "/dashboard/7",
              "/dashboard/%2e%2e", "/../config.yaml", "/static/../config.yaml", "/runs/0/config.yaml",
              "/api/runs/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/dashboard/0/../../../etc/passwd"]


def test_the_app_serves_only_its_runs(classifier_run):
    from tunelab.studio.app import create_app as create_web_app
    from tunelab.studio.tryout import open_runs

    server = Server(create_web_app(open_runs([str(classifier_run)])))
    try:
        assert httpx.get(server.url + f"/dashboard/{classifier_run.name}").status_code == 200
        for path in TRAVERSALS:
            reply = httpx.get(server.url + path)
            assert 400 <= reply.status_code < 500, (path, reply.status_code)
            assert "root:" not in reply.text and "trust_remote_code" not in reply.text, path
        for run in ("../", str(classifier_run), -1, 1, "0/../1", 1.5, None, f"../{classifier_run.name}"):
            reply = httpx.post(server.url + "/api/try", json={"run": run, "text": "hello"})
            assert reply.status_code in (404, 422), (run, reply.text)
    finally:
        server.stop()


@pytest.mark.slow
def test_secrets_stay_out_of_logs_run_folders_and_errors(tmp_path, tiny_bert, classifier_run):
    import subprocess
    import sys

    from conftest import free_port, wait_healthy

    env = {**os.environ, "HF_TOKEN": HUB_TOKEN, "TUNELAB_API_KEY": SECRET, "HF_HUB_OFFLINE": "1"}
    config = train_config(tmp_path, tiny_bert, train={"max_steps": 2, "threads": 1})
    done = subprocess.run([sys.executable, "-m", "tunelab", "train", str(config)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    for path in written:
        data = path.read_bytes()
        assert HUB_TOKEN.encode() not in data and SECRET.encode() not in data, path
    # A model name holding the token (a URL pasted with it) is never echoed back.
    bad = subprocess.run([sys.executable, "-m", "tunelab", "prepare", str(config),
                          f"model.name=https://user:{HUB_TOKEN}@huggingface.co/x"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and HUB_TOKEN not in bad.stdout + bad.stderr, bad.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", str(classifier_run), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port, server)
        httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer " + HUB_TOKEN})
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert SECRET not in out + err and HUB_TOKEN not in out + err


def remote_code_run(tmp_path: Path, classifier_run: Path, tiny_bert: Path) -> tuple[Path, Path]:
    """A copy of a run, as someone might share it, whose config asks to trust remote code and whose
    model/ folder maps the model class to a module that creates ``marker`` when imported."""
    import json
    import shutil

    import yaml

    run, marker = tmp_path / "shared-run", tmp_path / "remote-code-ran"
    shutil.copytree(classifier_run, run)
    model = run / "model"
    shutil.copytree(tiny_bert, model)
    (model / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
                                   "from transformers import BertConfig as EvilConfig\n"
                                   "from transformers import BertForSequenceClassification as EvilModel\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    tree = yaml.safe_load((run / "config.yaml").read_text())
    tree["model"]["trust_remote_code"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(tree))
    return run, marker


def one_problem(err: str) -> bool:
    """The CLI's error shape with one problem: a heading, then one indented line."""
    lines = err.strip().splitlines()
    return len(lines) == 2 and lines[0].startswith("tunelab:") and lines[1].startswith("  ")


LOADS_A_RUN = {"serve": [], "app": [], "predict": ["alpha item 1"], "evaluate": [], "merge": [],
               "quantize": ["--method", "dynamic-int8"]}


@pytest.mark.parametrize("command", list(LOADS_A_RUN))
def test_a_run_asking_for_remote_code_needs_the_flag(tmp_path, tiny_bert, classifier_run, run_cli, monkeypatch,
                                                     command):
    monkeypatch.delenv("TUNELAB_API_KEY", raising=False)
    run, marker = remote_code_run(tmp_path, classifier_run, tiny_bert)
    code, _, err = run_cli(command, run, *LOADS_A_RUN[command])
    assert code == 2 and "--trust-remote-code" in err and "trust_remote_code: true" in err, err
    assert one_problem(err) and "Traceback" not in err
    assert not marker.exists()
    with pytest.raises(TunelabError):
        load_run(run)  # the library refuses by default too
    assert not marker.exists()


@pytest.mark.slow
def test_with_the_flag_the_remote_code_does_run(tmp_path, tiny_bert, classifier_run):
    """The other half of the test above: the shared run really would run its code."""
    import subprocess
    import sys

    run, marker = remote_code_run(tmp_path, classifier_run, tiny_bert)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", f"from tunelab.inference import load_run; "
                                          f"load_run({str(run)!r}, trust_remote_code=True)"],
                   env=env, capture_output=True, text=True, timeout=300)
    assert marker.exists()


@pytest.mark.parametrize("command", ["serve", "app"])
def test_a_network_address_needs_an_api_key(tmp_path, run_cli, monkeypatch, command):
    monkeypatch.delenv("TUNELAB_API_KEY", raising=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "my-laptop"):
        code, _, err = run_cli(command, tmp_path, "--host", host)
        assert code == 2 and "API key" in err and f"--host {host}" in err and one_problem(err), err
    monkeypatch.setenv("TUNELAB_API_KEY", SECRET)  # with a key (from the environment) it goes on, to the run
    code, _, err = run_cli(command, tmp_path / "nope", "--host", "0.0.0.0")
    assert code == 2 and "not a tunelab run folder" in err and SECRET not in err


@pytest.fixture(scope="module")
def open_app(classifier_run, tmp_path_factory):
    from tunelab.studio.app import create_app as create_web_app
    from tunelab.studio.jobs import Jobs
    from tunelab.studio.tryout import open_runs
    from tunelab.studio.workspace import Workspace

    jobs = Jobs(Workspace(tmp_path_factory.mktemp("workspace")))
    server = Server(create_web_app(open_runs([str(classifier_run)]), api_key=SECRET, jobs=jobs))
    yield server
    server.stop()


def test_the_app_with_a_key_needs_it_everywhere(open_app, classifier_run):
    from fastapi.routing import APIRoute

    routes = [r for r in open_app.server.config.app.routes if isinstance(r, APIRoute)]
    assert {r.path for r in routes} >= {"/", "/api/runs", "/api/try", "/dashboard/{name}", "/api/runs/{name}",
                                        "/api/runs/{name}/stop", "/api/uploads", "/favicon.ico"}
    for route in routes:
        method = sorted(route.methods)[0]
        path = route.path.replace("{name}", classifier_run.name) + ("?name=x.jsonl" if "uploads" in route.path else "")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"tunelab_app={SECRET}"}):
            reply = httpx.request(method, open_app.url + path, headers=headers,
                                  json={"run": classifier_run.name, "text": "x"})
            assert reply.status_code == 401 and SECRET not in reply.text, (path, headers, reply.text)
    bearer = httpx.get(open_app.url + "/api/runs", headers={"Authorization": f"Bearer {SECRET}"})
    assert bearer.status_code == 200


def test_the_apps_page_trades_the_key_for_a_cookie_once(open_app, classifier_run):
    assert httpx.get(open_app.url + "/?key=wrong").status_code == 401
    with httpx.Client(base_url=open_app.url) as browser:
        opened = browser.get(f"/?key={SECRET}")
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and SECRET.lower() not in cookie
        page = browser.get("/")
        assert page.status_code == 200 and "<title>tunelab studio</title>" in page.text
        assert browser.get("/api/runs").status_code == 200
        assert browser.get(f"/dashboard/{classifier_run.name}").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example",
                                  "10.0.0.1"])
def test_servers_on_loopback_refuse_other_host_names(classifier_run, host):
    from tunelab.studio.app import create_app as create_web_app
    from tunelab.studio.tryout import open_runs

    servers = [Server(create_app(load_run(classifier_run), ServeSettings(), "intents")),
               Server(create_web_app(open_runs([str(classifier_run)])))]
    try:
        for server, path in zip(servers, ("/health", "/api/runs")):
            reply = httpx.get(server.url + path, headers={"Host": host})
            assert reply.status_code == 421 and "answers only localhost" in reply.json()["error"]["message"], reply.text
            for name in ("localhost", f"localhost:{server.port}", "127.0.0.1", f"[::1]:{server.port}"):
                assert httpx.get(server.url + path, headers={"Host": name}).status_code == 200, name
    finally:
        for server in servers:
            server.stop()


def test_an_allowed_host_name_is_answered_and_others_still_refused(classifier_run):
    from tunelab.studio.app import create_app as create_web_app
    from tunelab.studio.tryout import open_runs

    servers = [Server(create_app(load_run(classifier_run), ServeSettings(allowed_hosts=("tunnel.local",)), "intents")),
               Server(create_web_app(open_runs([str(classifier_run)]), allowed_hosts=("tunnel.local",)))]
    try:
        for server, path in zip(servers, ("/health", "/api/runs")):
            assert httpx.get(server.url + path, headers={"Host": "tunnel.local:8443"}).status_code == 200
            assert httpx.get(server.url + path, headers={"Host": "evil.example"}).status_code == 421
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("command", ["serve", "app"])
def test_a_blank_api_key_is_no_key(tmp_path, run_cli, monkeypatch, command):
    """`TUNELAB_API_KEY=` must not open a server to the network behind the key "" (which anyone can send)."""
    for blank in ("", "  "):
        monkeypatch.setenv("TUNELAB_API_KEY", blank)
        code, _, err = run_cli(command, tmp_path, "--host", "0.0.0.0")
        assert code == 2 and "API key" in err and one_problem(err), err
