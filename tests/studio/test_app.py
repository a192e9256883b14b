"""The web app: the API behind the page, its limits, and the page itself in a real headless Chromium."""

import json
import re
import shutil

import httpx
import pytest

from conftest import Server, train_config
from tunelab.config import load_config
from tunelab.evaluation import evaluate
from tunelab.quantization import quantize
from tunelab.studio.app import create_app
from tunelab.studio.tryout import open_runs
from tunelab.training import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("app")
    run_dir = train.run(load_config(train_config(folder, tiny_bert, eval={"bootstrap_samples": 100})))
    evaluate.run(run_dir)
    quantize.run(run_dir, ["dynamic-int8"])
    server = Server(create_app(open_runs([str(run_dir)])))
    yield server, run_dir
    server.stop()


def test_try_answers_with_every_model_and_latency(app_server):
    server, run_dir = app_server
    runs = httpx.get(server.url + "/api/runs").json()["runs"]
    assert [(r["name"], r["status"], r["task"], r["method"], r["models"]) for r in runs] == [
        (run_dir.name, "complete", "classification", "lora", ["base", "fine-tuned", "dynamic-int8"])]
    assert runs[0]["metrics"]["eval"]["accuracy"]["tuned"] is not None
    outputs = httpx.post(server.url + "/api/try", json={"run": run_dir.name, "text": "alpha item 3"},
                         timeout=120).json()["outputs"]
    assert [o["model"] for o in outputs] == ["base", "fine-tuned", "dynamic-int8"]
    for o in outputs:
        label = o["output"].split(" ")[0]
        assert label in ("alpha", "beta", "gamma") and o["latency_ms"] > 0
        assert set(o["probabilities"]) == {"alpha", "beta", "gamma"} and abs(sum(o["probabilities"].values()) - 1) < 1e-4
        assert max(o["probabilities"], key=o["probabilities"].get) == label


def test_bakeoff_folders_get_a_dashboard_but_nothing_to_try(tmp_path, app_server):
    _, run_dir = app_server
    bake = tmp_path / "bake"
    bake.mkdir()
    (bake / "bakeoff.json").write_text(json.dumps({
        "config": "c.yaml", "task": "classification", "split": "test", "seed": 0, "machine": "cpu",
        "rows": [{"method": "lora", "learning_rate": 0.001, "trainable_params": 10, "trainable_percent": 1.0,
                  "peak_rss_mb": 500.0, "train_seconds": 12.5, "train_samples_per_second": 3.0,
                  "artifact_size_mb": 1.0, "eval_loss": 0.1, "metric": "accuracy", "tuned": 0.9,
                  "tuned_ci95": [0.8, 0.95], "base": 0.7, "delta": 0.2, "delta_ci95": [0.1, 0.3]}]}))
    server = Server(create_app(open_runs([str(run_dir), str(bake)])))
    try:
        runs = httpx.get(server.url + "/api/runs").json()["runs"]
        assert (runs[1]["name"], runs[1]["task"], runs[1]["models"]) == ("bake", "bakeoff", [])
        page = httpx.get(server.url + "/dashboard/bake").text
        assert "12.5" in page and "<h2>Bake-off bake</h2>" in page and str(tmp_path) not in page
        assert httpx.post(server.url + "/api/try", json={"run": "bake", "text": "x"}).status_code == 400
    finally:
        server.stop()


def test_only_the_runs_given_can_be_reached(app_server):
    server, run_dir = app_server
    for path in ("/dashboard/1", "/dashboard/-1", "/dashboard/..%2F..%2Fetc%2Fpasswd", "/dashboard/../../etc/passwd",
                 "/dashboard/%2Fetc%2Fpasswd", "/api/runs/..%2F..%2Fetc%2Fpasswd"):
        assert httpx.get(server.url + path).status_code in (404, 422), path
    assert httpx.post(server.url + "/api/try", json={"run": "other", "text": "x"}).status_code == 404
    assert httpx.post(server.url + "/api/try", json={"run": "/etc/passwd", "text": "x"}).status_code == 404
    assert httpx.post(server.url + "/api/try", json={"run": 0, "text": "x"}).status_code == 422
    assert httpx.post(server.url + "/api/try", json={"run": run_dir.name, "text": "   "}).status_code == 400


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_the_page_in_headless_chromium(app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    server, run_dir = app_server
    accuracy = json.loads((run_dir / "eval.json").read_text())["metrics"]["accuracy"]["tuned"]
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.set_default_timeout(180_000)  # a busy CPU is slow, not wrong
        page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
        page.goto(server.url)
        page.wait_for_selector("#run option", state="attached")
        page.click("#tab-try")
        page.fill("#text", "beta item 7")
        page.click("#go")
        page.wait_for_function("() => document.querySelector('#try-status').textContent === 'done'", timeout=120_000)
        tuned = page.text_content('tr[data-model="fine-tuned"] .output')
        base = page.text_content('tr[data-model="base"] .output')
        assert tuned.split(" ")[0] in ("alpha", "beta", "gamma") and base.split(" ")[0] in ("alpha", "beta", "gamma")
        assert page.text_content('tr[data-model="dynamic-int8"] .latency')
        page.click("#tab-dashboard")
        page.wait_for_selector("#dashboard table")
        assert f"{accuracy:.4g}" in page.text_content("#dashboard")
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000
    assert outside == [], outside


def test_causal_runs_answer_with_the_base_and_the_tuned_model(tmp_path, tiny_llama, monkeypatch):
    import tunelab.inference
    from tunelab.inference import generate, load_run

    run_dir = train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "full"},
                                                 train={"max_steps": 2})))
    runs = open_runs([str(run_dir)])
    first = runs[0].answer("Say alpha.")
    loads = []
    real = tunelab.inference.load_base_model
    monkeypatch.setattr(tunelab.inference, "load_base_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    second = runs[0].answer("Say alpha.")
    assert loads == [], "the models must stay loaded between requests"
    assert [o["model"] for o in first] == ["base", "fine-tuned"]
    assert [o["output"] for o in first] == [o["output"] for o in second]
    assert first[1]["output"] == generate(load_run(run_dir), ["Say alpha."], 32)[0]


def test_the_page_shows_what_the_server_sends_as_text_not_html():
    """Run names, model outputs and errors go in with textContent; only the dashboard, which
    tunelab.studies.report renders, goes in as HTML, and only from a 200."""
    from tunelab.studio.app import PAGE

    script = PAGE.read_text(encoding="utf-8").split("<script>")[1].split("</script>")[0]
    html_sinks = re.findall(r"(innerHTML|outerHTML|insertAdjacentHTML|document\.write)", script)
    assert html_sinks == ["innerHTML"], html_sinks
    dashboard = script.split("async function loadDashboard()")[1].split("\n}")[0]
    assert "innerHTML" in dashboard and dashboard.index("if (!reply.ok)") < dashboard.index("innerHTML")
    assert "querySelector(`" not in script  # model names are compared, never pasted into a selector


def test_waiting_tries_are_bounded_and_the_page_stays_responsive(app_server, monkeypatch):
    import asyncio
    import threading

    from tunelab.studio import app as web_app

    server, run_dir = app_server
    release, entered = threading.Event(), []

    def answer(self, text):
        entered.append(text)
        release.wait(60)
        return []

    monkeypatch.setattr(web_app.RunModels, "answer", answer)

    async def flood():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            waiting = [asyncio.create_task(client.post("/api/try", json={"run": run_dir.name, "text": f"x {i}"}))
                       for i in range(web_app.MAX_PENDING_TRIES)]
            while len(entered) < web_app.MAX_PENDING_TRIES:  # every one of them is with the models now
                await asyncio.sleep(0.05)
            extra = [await client.post("/api/try", json={"run": run_dir.name, "text": "one more"}) for _ in range(3)]
            page = await client.get("/api/runs")
            release.set()
            return page, [r.status_code for r in extra], [r.status_code for r in await asyncio.gather(*waiting)]

    page, extra, waited = asyncio.run(asyncio.wait_for(flood(), 120))
    assert page.status_code == 200 and extra == [429] * 3 and waited == [200] * web_app.MAX_PENDING_TRIES


def test_chat_streams_each_models_answer_as_generated(tmp_path, tiny_llama, app_server):
    from tunelab.inference import generate, load_run
    from tunelab.studio import tryout

    run_dir = train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", train={"max_steps": 2})))
    _, classifier_dir = app_server
    server = Server(create_app(open_runs([str(run_dir), str(classifier_dir)])))
    try:
        with httpx.stream("POST", server.url + "/api/chat", timeout=120,
                          json={"run": run_dir.name, "model": "fine-tuned", "text": "Say alpha."}) as reply:
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
            pieces = list(reply.iter_text())
        expected = generate(load_run(run_dir), ["Say alpha."], tryout.CHAT_NEW_TOKENS)[0]
        assert "".join(pieces).strip() == expected and expected
        names = [r["name"] for r in httpx.get(server.url + "/api/runs").json()["runs"]]
        assert names[0] == run_dir.name and len(set(names)) == 2  # folders of the same name get a suffix
        label = httpx.post(server.url + "/api/chat", json={"run": names[1], "model": "fine-tuned",
                                                            "text": "alpha item 3"}, timeout=120).text
        assert label.split(" ")[0] in ("alpha", "beta", "gamma")
        for body in ({"run": run_dir.name, "model": "nope", "text": "x"}, {"run": run_dir.name, "model": "base", "text": " "}):
            assert httpx.post(server.url + "/api/chat", json=body).status_code == 400
        assert httpx.post(server.url + "/api/chat", json={"run": "nope", "model": "base", "text": "x"}).status_code == 404
    finally:
        server.stop()
