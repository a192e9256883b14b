"""The studio's JSON API: create, list, watch, stop and resume runs, upload data, download the config; bad
input is a 4xx with the CLI's one-line messages and writes nothing. The training child is a stand-in
(``studio_support``) except in the end-to-end test."""

import shutil
import time

import httpx
import pytest
import yaml

from conftest import Server
from studio_support import behave, config
from tunelab.studio.app import create_app
from tunelab.studio.jobs import Jobs


@pytest.fixture
def studio(jobs):
    server = Server(create_app([], jobs=jobs, max_upload_bytes=4096))
    yield server
    server.stop()


def wait_status(url, name, statuses, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        detail = httpx.get(f"{url}/api/runs/{name}").json()
        if detail["status"] in statuses:
            return detail
        time.sleep(0.05)
    raise AssertionError(f"{name}: {detail}")


def test_a_run_goes_from_queued_to_complete_with_progress_curves_and_log(studio, workspace):
    reply = httpx.post(studio.url + "/api/runs", json={"name": "first", "config": config()})
    assert reply.status_code == 201 and reply.json() == {"name": "first", "status": "queued"}
    detail = wait_status(studio.url, "first", ("complete",))
    assert detail["progress"]["total_steps"] == 4 and detail["progress"]["stage"] is None
    assert detail["curves"] == {"loss": [[1, 1.5]], "eval_loss": [[2, 1.2]]}
    assert detail["log_tail"][0].startswith("$ tunelab train") and "step 1/4  loss 1.5" in detail["log_tail"]
    assert detail["metrics"]["eval"] == {"accuracy": {"base": 0.5, "tuned": 0.9}}
    assert detail["per_class"]["tuned"] == {"alpha": {"precision": 1.0, "recall": 1.0, "support": 2}}
    assert [e["input"] for e in detail["examples"]] == ["text 0", "text 1", "text 2"]
    runs = httpx.get(studio.url + "/api/runs").json()["runs"]
    assert [(r["name"], r["status"], r["task"], r["method"]) for r in runs] == [("first", "complete", "classification", "lora")]


def test_the_config_downloads_as_the_yaml_it_trains_with(studio, workspace):
    httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": config(train={"epochs": 2})})
    reply = httpx.get(studio.url + "/api/runs/r1/config")
    assert reply.status_code == 200 and 'filename="r1.yaml"' in reply.headers["content-disposition"]
    tree = yaml.safe_load(reply.text)
    assert tree["train"] == {"epochs": 2} and tree["output"]["dir"] == str(workspace.runs_dir / "r1")


def test_stop_and_resume_over_http(studio, workspace):
    behave(workspace, long="hang")
    httpx.post(studio.url + "/api/runs", json={"name": "long", "config": config()})
    wait_status(studio.url, "long", ("running",))
    while not (workspace.runs_dir / "long" / "progress.json").exists():
        time.sleep(0.02)
    assert httpx.post(studio.url + "/api/runs/long/stop").json()["name"] == "long"
    stopped = wait_status(studio.url, "long", ("stopped",))
    assert "resume" in stopped["message"]
    assert httpx.post(studio.url + "/api/runs/long/resume").json()["status"] == "queued"
    assert httpx.post(studio.url + "/api/runs/long/resume").status_code == 400


@pytest.mark.parametrize("body, status, says", [
    ({"name": "../x", "config": config()}, 400, "not a usable name"),
    ({"name": "r1", "config": config(data={"train": "/etc/passwd"})}, 400, "data.train: '/etc/passwd' is outside"),
    ({"name": "r1", "config": config(train={"epochs": -1})}, 400, "invalid config submitted for r1: train.epochs: -1 is invalid"),
    ({"name": "", "config": config()}, 400, "not a usable name"),
    ({"name": "r1", "config": config(data={"train": "uploads/nope.jsonl"})}, 400, " uploads/nope.jsonl"),
    ({"name": "r1", "config": config(data={"train": "uploads/nope.jsonl"})}, 400, "invalid data: "),
    ({"name": "r1", "config": {"task": "classification"}}, 400, "data: "),
    ({"name": "r1", "config": "task: classification"}, 422, "config"),
    ({"name": "r1"}, 422, "config"),
])
def test_bad_submissions_are_refused_and_write_nothing(studio, workspace, body, status, says):
    reply = httpx.post(studio.url + "/api/runs", json=body)
    assert reply.status_code == status and says in reply.json()["detail"], reply.text
    assert "\n" not in reply.json()["detail"]
    assert sorted(p.name for p in workspace.studio_dir.iterdir()) == [] and list(workspace.runs_dir.iterdir()) == []


def test_a_name_in_use_is_a_409_and_an_unknown_run_a_404(studio):
    assert httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": config()}).status_code == 201
    assert httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": config()}).status_code == 409
    for path in ("/api/runs/nope", "/api/runs/nope/config", "/dashboard/nope"):
        assert httpx.get(studio.url + path).status_code == 404, path
    assert httpx.post(studio.url + "/api/runs/nope/stop").status_code == 404


def test_uploads_are_size_limited_named_and_listed(studio, workspace):
    rows = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
    reply = httpx.post(studio.url + "/api/uploads", params={"name": "mine.jsonl"}, content=rows)
    assert reply.status_code == 201 and reply.json() == {"name": "mine.jsonl", "path": "uploads/mine.jsonl",
                                                         "bytes": len(rows), "replaced": False}
    again = httpx.post(studio.url + "/api/uploads", params={"name": "mine.jsonl"}, content=rows)
    assert again.json()["replaced"] is True
    empty = httpx.post(studio.url + "/api/uploads", params={"name": "empty.jsonl"}, content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert (workspace.uploads_dir / "mine.jsonl").read_bytes() == rows
    assert httpx.post(studio.url + "/api/uploads", params={"name": "big.jsonl"}, content=b"x" * 5000).status_code == 413
    assert httpx.post(studio.url + "/api/uploads", params={"name": "../x.jsonl"}, content=rows).status_code == 400
    assert httpx.post(studio.url + "/api/uploads", params={"name": "x.sh"}, content=rows).status_code == 400
    names = [u["name"] for u in httpx.get(studio.url + "/api/uploads").json()["uploads"]]
    assert names == ["mine.jsonl", "train.jsonl"]


def test_the_favicon_is_there(studio):
    reply = httpx.get(studio.url + "/favicon.ico")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("image/svg+xml")


def test_without_a_workspace_the_run_routes_say_so(tmp_path):
    server = Server(create_app([]))
    try:
        assert httpx.get(server.url + "/api/runs").json() == {"runs": []}
        reply = httpx.post(server.url + "/api/runs", json={"name": "r1", "config": config()})
        assert reply.status_code == 404 and "without a workspace" in reply.json()["detail"]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_real_run_trains_evaluates_and_answers_from_the_workspace(tmp_path, tiny_bert):
    """End to end with the real child: tunelab train and tunelab evaluate on a tiny BERT in the workspace."""
    from conftest import intent_rows, write_jsonl
    from tunelab.studio.workspace import Workspace

    ws = Workspace(tmp_path / "ws").create()
    shutil.copytree(tiny_bert, ws.root / "models" / "tiny-bert")
    write_jsonl(ws.uploads_dir / "train.jsonl", intent_rows(12))
    jobs = Jobs(ws)
    server = Server(create_app([], jobs=jobs))
    try:
        tree = {"task": "classification", "model": {"name": "models/tiny-bert"},
                "data": {"train": "uploads/train.jsonl", "max_length": 32},
                "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-2, "report_to": ["none"], "logging_steps": 1},
                "eval": {"bootstrap_samples": 100}}
        assert httpx.post(server.url + "/api/runs", json={"name": "tiny", "config": tree}).status_code == 201
        detail = wait_status(server.url, "tiny", ("complete", "failed"), timeout=600)
        assert detail["status"] == "complete", detail["log_tail"]
        assert detail["progress"]["phase"] == "trained" and detail["progress"]["step"] == detail["progress"]["total_steps"]
        assert len(detail["curves"]["loss"]) >= 2 and "eval_accuracy" in detail["curves"]
        assert set(detail["metrics"]["eval"]["accuracy"]) >= {"base", "tuned", "delta"}
        assert detail["task"] == "classification" and detail["models"] == ["base", "fine-tuned"]
        outputs = httpx.post(server.url + "/api/try", json={"run": "tiny", "text": "my card was charged twice"},
                             timeout=300).json()["outputs"]
        assert [o["model"] for o in outputs] == ["base", "fine-tuned"]
    finally:
        server.stop()
        jobs.close()


def test_the_schema_and_the_builtins_feed_the_form(studio):
    sections = {s["section"]: s for s in httpx.get(studio.url + "/api/schema").json()["sections"]}
    method = {f["key"]: f for f in sections["method"]["fields"]}["name"]
    assert method["choices"][:3] == ["full", "freeze", "lora"] and method["default"] == "lora" and method["help"]
    epochs = {f["key"]: f for f in sections["train"]["fields"]}["epochs"]
    assert epochs["type"] == "float" and not epochs["required"]
    found = httpx.get(studio.url + "/api/builtins").json()
    assert "builtin:minilm" in [m["name"] for m in found["models"]]
    assert "builtin:support_intents/train.jsonl" in found["datasets"]


def test_the_data_report_comes_before_any_training(studio, workspace, tiny_bert):
    shutil.copytree(tiny_bert, workspace.root / "models" / "tiny-bert")
    tree = config(model={"name": "models/tiny-bert"}, data={"max_length": 32})
    reply = httpx.post(studio.url + "/api/data/report", json={"config": tree}, timeout=120)
    assert reply.status_code == 200, reply.text
    report = reply.json()["report"]
    assert report["labels"] == ["account", "billing", "shipping"] and report["splits"]["train"]["rows"] > 0
    assert any(span["in_loss"] for span in report["sample"]) and "prepared classification" in reply.json()["summary"]
    assert list(workspace.runs_dir.iterdir()) == [] and sorted(p.name for p in workspace.studio_dir.iterdir()) == []


def test_row_errors_in_the_data_report_come_one_per_line(studio, workspace):
    (workspace.uploads_dir / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\nnot json\n')
    reply = httpx.post(studio.url + "/api/data/report", json={"config": config(data={"train": "uploads/bad.jsonl"})})
    assert reply.status_code == 400
    problems = reply.json()["problems"]
    assert len(problems) >= 2 and any("line 2" in p for p in problems) and any("line 3" in p for p in problems), problems


def test_a_finished_run_is_quantized_exported_and_downloaded(studio, workspace):
    import io
    import zipfile

    httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": config()})
    wait_status(studio.url, "r1", ("complete",))
    reply = httpx.post(studio.url + "/api/runs/r1/quantize", json={"methods": ["dynamic-int8", "nf4"], "compare": True})
    assert reply.status_code == 200 and reply.json()["status"] == "queued"
    wait_status(studio.url, "r1", ("complete",))
    assert httpx.post(studio.url + "/api/runs/r1/export", json={"dtype": "q8_0"}).json()["status"] == "queued"
    wait_status(studio.url, "r1", ("complete",))
    from studio_support import calls

    run = str(workspace.runs_dir / "r1")
    assert [c["argv"] for c in calls(workspace) if "start" in c][2:] == [
        ["quantize", run, "--method", "dynamic-int8,nf4", "--compare"], ["export", run, "--format", "gguf", "--dtype", "q8_0"]]
    found = {a["name"]: a for a in httpx.get(studio.url + "/api/runs/r1/artifacts").json()["artifacts"]}
    assert set(found) == {"adapter", "quantized/dynamic-int8", "quantized/nf4", "export/model-q8_0.gguf"}
    assert found["export/model-q8_0.gguf"] == {"name": "export/model-q8_0.gguf", "kind": "file", "bytes": 4}
    folder = httpx.get(studio.url + "/api/runs/r1/download", params={"artifact": "quantized/nf4"})
    assert folder.status_code == 200 and 'filename="r1-nf4.zip"' in folder.headers["content-disposition"]
    assert zipfile.ZipFile(io.BytesIO(folder.content)).read("model.safetensors") == b"weights"
    assert httpx.get(studio.url + "/api/runs/r1/download", params={"artifact": "export/model-q8_0.gguf"}).content == b"GGUF"
    for bad in ("../../etc/passwd", "quantized/../../../etc/passwd", "/etc/passwd", "config.yaml", ""):
        assert httpx.get(studio.url + "/api/runs/r1/download", params={"artifact": bad}).status_code == 404, bad



def test_ship_requests_are_checked(studio, workspace):
    behave(workspace, long="hang")
    httpx.post(studio.url + "/api/runs", json={"name": "long", "config": config()})
    wait_status(studio.url, "long", ("running",))
    assert httpx.post(studio.url + "/api/runs/long/quantize", json={"methods": ["dynamic-int8"]}).status_code == 400
    assert httpx.post(studio.url + "/api/runs/long/quantize", json={"methods": ["int3"]}).status_code == 422
    assert httpx.post(studio.url + "/api/runs/long/quantize", json={"methods": []}).status_code == 422
    assert httpx.post(studio.url + "/api/runs/long/export", json={"dtype": "q2_k"}).status_code == 422
    assert httpx.post(studio.url + "/api/runs/nope/export", json={}).status_code == 404
    httpx.post(studio.url + "/api/runs/long/stop")


def test_pages_of_other_sites_cannot_change_anything(studio):
    evil = {"Origin": "http://evil.example"}
    assert httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": config()}, headers=evil).status_code == 403
    assert httpx.post(studio.url + "/api/uploads", params={"name": "x.jsonl"}, content=b"{}", headers=evil).status_code == 403
    assert httpx.post(studio.url + "/api/runs/r1/stop", headers={"Origin": "null"}).status_code == 403
    assert httpx.get(studio.url + "/api/runs", headers=evil).status_code == 200  # reading is the browser's business
    own = {"Origin": studio.url}
    assert httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": config()}, headers=own).status_code == 201


@pytest.mark.parametrize("tree, says", [
    (config(train={"distributed_config": "uploads/train.jsonl"}), "train.distributed_config"),
    (config(train={"report_to": ["wandb"]}), "train.report_to: wandb"),
    (config(data={"train": "builtin:/etc/passwd"}), "not a built-in"),
    (config(data={"train": "hf:/etc"}), "not a built-in"),
    (config(data={"train": "hf:docs"}), "not a built-in"),
    (config(model={"name": "x" * 300}), "model.name: 'xxxx"),
    (config(model={"name": "./models/missing"}), "neither a folder in the workspace nor a hub id"),
])
def test_settings_that_reach_outside_the_workspace_are_refused(studio, tree, says):
    reply = httpx.post(studio.url + "/api/runs", json={"name": "r1", "config": tree})
    assert reply.status_code == 400 and says in reply.json()["detail"], reply.text


def test_malformed_json_is_a_400_saying_so(studio):
    reply = httpx.post(studio.url + "/api/runs", content=b'{"name": "r1", "config": {', headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["detail"] == "body: not valid JSON"


def test_the_presets_are_the_demos_settings(studio):
    from tunelab.studies.demo import DEMOS

    presets = httpx.get(studio.url + "/api/presets").json()["presets"]
    assert presets["classification"] == DEMOS["classification"].config and set(presets) == {"classification", "causal_lm"}
