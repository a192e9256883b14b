"""The studio's page in a real headless Chromium: the whole flow on a tiny model, as a user clicks it.

Upload a data file -> check the data (the report) -> configure a run (the YAML follows the form) -> start
it -> watch the progress and the loss curve -> the before/after table, per class and examples -> compare ->
try it; a chat run streams base and tuned answers; a lost connection is said and recovered from. Screenshots of
each step go to the test's folder, and to ``$TUNELAB_SCREENSHOTS`` when set (how docs/images/ is made).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import Server, intent_rows
from studio_support import behave, config
from tunelab.studio.app import create_app
from tunelab.studio.jobs import Jobs
from tunelab.studio.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def snap(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"studio-{name}.png"), full_page=True)
    if os.environ.get("TUNELAB_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["TUNELAB_SCREENSHOTS"]) / f"studio-{name}.png"), full_page=True)


def try_it(page, run: str, text: str) -> None:
    """On the Try it tab, send ``text`` to every model of ``run`` and wait until all have answered."""
    page.click("#tab-try")
    page.select_option("#run", run)
    page.fill("#text", text)
    page.click("#go")
    page.wait_for_function("() => document.querySelector('#try-status').textContent === 'done'", timeout=300_000)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_the_whole_flow_in_the_browser(tmp_path, tiny_bert):
    from playwright.sync_api import sync_playwright

    ws = Workspace(tmp_path / "ws").create()
    shutil.copytree(tiny_bert, ws.root / "models" / "tiny-bert")
    data = tmp_path / "my-intents.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in intent_rows(30)))
    jobs = Jobs(ws)
    server = Server(create_app([], jobs=jobs))
    outside, console_errors = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(180_000)  # a busy CPU (CI beside other jobs) is slow, not wrong
            page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(server.url)
            page.wait_for_selector("#data:not(.hidden)")  # no runs yet: the page opens on step 1
            page.wait_for_function("() => document.querySelector('#data-source').value === "
                                   "'builtin:support_intents/train.jsonl'")  # the classification preset's data

            # 1. data: upload, point at the tiny model, check
            page.set_input_files("#file", str(data))
            page.click("#upload")
            page.wait_for_function("() => document.querySelector('#data-status').textContent.startsWith('saved')")
            assert page.input_value("#data-source") == "uploads/my-intents.jsonl"
            page.fill("#data-model-other", "models/tiny-bert")
            page.click("#check-data")
            page.wait_for_selector("#data-report table")
            report = page.text_content("#data-report")
            assert "Label balance (3 labels)" in report and "billing" in report
            snap(page, tmp_path, "1-data")

            # 2. configure: the YAML follows the form
            page.click("#tab-configure")
            page.fill("#run-name", "tiny-intents")
            for section in ("data", "eval"):  # method and train are open; the others fold away
                page.click(f"#form summary:text-is('{section}')")
            for key, value in {"data.max_length": "32", "train.epochs": "4", "train.batch_size": "8",
                               "train.learning_rate": "0.003", "train.logging_steps": "2", "train.report_to": "none",
                               "eval.bootstrap_samples": "200"}.items():
                page.locator(f'#form [data-key="{key}"]').fill(value)
            page.select_option('#form [data-key="method.name"]', "full")  # a tiny random model learns this way
            yaml_text = page.text_content("#yaml")
            assert "epochs: 4" in yaml_text and 'train: "uploads/my-intents.jsonl"' in yaml_text
            assert 'name: "models/tiny-bert"' in yaml_text and 'name: "full"' in yaml_text
            snap(page, tmp_path, "2-configure")
            page.click("#start")

            # 3. train: progress, curves from the first point, then the before/after table
            page.wait_for_selector("#run-detail:not(.hidden)")
            page.wait_for_function("() => document.querySelector('#detail-name').textContent.endsWith('complete')",
                                   timeout=600_000)
            assert page.locator("#loss-chart circle").count() >= 2
            assert page.locator("#eval-chart circle").count() >= 2
            assert page.locator('#loss-chart text[text-anchor="end"]').count() >= 3  # y tick labels
            assert page.locator('#loss-chart text[text-anchor="middle"]').count() >= 4  # x tick labels and the axis name
            metrics = page.text_content("#detail-metrics")
            assert "accuracy" in metrics and "[" in metrics
            assert page.locator("#per-class-table tbody tr").count() == 3  # billing, shipping, account
            assert page.locator("#examples-table tbody tr").count() == 3
            snap(page, tmp_path, "3-run")

            # 4. compare
            # the run list polls on its own clock: the table fills in once it has seen the run complete
            page.click("#tab-compare")
            page.wait_for_function("() => document.querySelector('#compare-table tbody').textContent.includes('tiny-intents')")

            # 5. try it: the probe on the frozen model and the tuned model answer the same text
            try_it(page, "tiny-intents", "my card was charged twice")
            for model in ("base", "fine-tuned"):  # a label, and probability bars for the likeliest labels
                assert page.locator(f'tr[data-model="{model}"] .output .probs').count() == 3
                assert page.text_content(f'tr[data-model="{model}"] .output').split(" ")[0] in ("billing", "shipping",
                                                                                                "account")
            snap(page, tmp_path, "5-try")
            for tab in ("data", "configure", "runs", "compare", "try", "ship"):
                page.click(f"#tab-{tab}")
                assert page.evaluate("document.documentElement.scrollWidth") <= 1280, tab
            page.click("#tab-dashboard")
            page.wait_for_selector("#dashboard table")
            browser.close()
    finally:
        server.stop()
        jobs.close()
    assert outside == [], outside
    assert console_errors == [], console_errors
    assert (tmp_path / "studio-3-run.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_chat_with_a_causal_run_streams_base_and_tuned_answers(tmp_path, tiny_llama):
    import httpx
    from playwright.sync_api import sync_playwright

    ws = Workspace(tmp_path / "ws").create()
    shutil.copytree(tiny_llama, ws.root / "models" / "tiny-llama")
    rows = [{"instruction": f"Say {w}.", "input": str(i), "output": f"{w} {w}."} for w in ("alpha", "beta") for i in range(8)]
    (ws.uploads_dir / "say.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    jobs = Jobs(ws)
    server = Server(create_app([], jobs=jobs))
    try:
        tree = {"task": "causal_lm", "model": {"name": "models/tiny-llama"},
                "data": {"train": "uploads/say.jsonl", "max_length": 32},
                "train": {"max_steps": 4, "batch_size": 8, "learning_rate": 3e-2, "report_to": ["none"]},
                "eval": {"bootstrap_samples": 100, "max_new_tokens": 8}}
        assert httpx.post(server.url + "/api/runs", json={"name": "say", "config": tree}).status_code == 201
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(180_000)  # a busy CPU (CI beside other jobs) is slow, not wrong
            page.goto(server.url)
            page.click('tr[data-run="say"]')
            page.wait_for_function("() => document.querySelector('#detail-name').textContent.endsWith('complete')",
                                   timeout=600_000)
            assert "rougeL" in page.text_content("#detail-metrics")
            try_it(page, "say", "Say alpha.")
            for model in ("base", "fine-tuned"):  # both answered (a random tiny base may answer nothing visible)
                assert int(page.text_content(f'tr[data-model="{model}"] .latency')) > 0
            shown = page.text_content('tr[data-model="fine-tuned"] .output')
            sent = httpx.post(server.url + "/api/chat", json={"run": "say", "model": "fine-tuned", "text": "Say alpha."},
                              timeout=120).text
            assert shown and shown == sent  # greedy: the page shows every streamed piece, in order
            snap(page, tmp_path, "5-chat")
            browser.close()
    finally:
        server.stop()
        jobs.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_a_lost_connection_says_so_and_the_page_picks_up_again(jobs, workspace):
    """The studio stops answering while a run is shown: the page says the figures are stale and retries; once
    the studio answers again, the message goes and the run's state is current."""
    import httpx
    from playwright.sync_api import sync_playwright

    behave(workspace, long="hang")
    server = Server(create_app([], jobs=jobs))
    try:
        assert httpx.post(server.url + "/api/runs", json={"name": "long", "config": config()}).status_code == 201
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(server.url)
            page.click('tr[data-run="long"]')
            page.wait_for_function("() => document.querySelector('#detail-name').textContent === 'long: running'")
            page.wait_for_selector("#loss-chart circle")
            assert page.locator("#loss-chart circle").count() == 2  # one training and one validation point, each drawn
            page.route("**/api/runs**", lambda route: route.abort())  # the network goes away
            page.wait_for_function("() => document.querySelector('#status').textContent.includes('Retrying')")
            httpx.post(server.url + "/api/runs/long/stop")
            page.unroute("**/api/runs**")
            page.wait_for_function("() => document.querySelector('#detail-name').textContent === 'long: stopped'")
            assert page.text_content("#status") == ""
            browser.close()
    finally:
        server.stop()
