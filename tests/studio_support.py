"""For the studio's tests: a stand-in for ``python -m tunelab`` that the studio's queue starts in a blink, and
a workspace with data (a plugin of tests/conftest.py).

The stand-in is called as ``FAKE -m tunelab train CONFIG [...]`` or ``FAKE -m tunelab evaluate RUN``, in the
workspace. It appends its arguments to ``calls.jsonl`` and acts as ``behaviour.json`` says for the run:
``{"<name>": "ok" | "fail" | "hang"}`` (default ok). ``ok`` writes a little progress, a train log and an
adapter and marks the run complete (train), writes eval.json and predictions.jsonl (evaluate), a folder per method (quantize) or a
GGUF file (export); ``fail`` prints an error and exits 2; ``hang`` trains
until SIGTERM, then says it saved a checkpoint and exits 143 as tunelab train does.
"""

import json
import stat
import sys
from pathlib import Path

import pytest

from conftest import intent_rows, write_jsonl
from tunelab.studio.jobs import Jobs
from tunelab.studio.workspace import Workspace

FAKE = '''#!{python}
import json, signal, sys, time
from pathlib import Path

stage, target = sys.argv[3], Path(sys.argv[4])
name = target.stem if stage == "train" else target.name
with open("calls.jsonl", "a") as f:
    f.write(json.dumps({{"name": name, "argv": sys.argv[3:], "start": time.time()}}) + "\\n")
behaviour = json.loads(Path("behaviour.json").read_text()).get(name, "ok") if Path("behaviour.json").exists() else "ok"
run = Path("runs") / name
if behaviour == "fail":
    print("tunelab: invalid data\\n  uploads/train.jsonl:3: field 'label' is missing", flush=True)
    sys.exit(2)
if stage == "train":
    run.mkdir(parents=True, exist_ok=True)
    (run / "progress.json").write_text(json.dumps({{"phase": "training", "step": 1, "total_steps": 4}}))
    with open(run / "train_log.jsonl", "a") as f:
        f.write(json.dumps({{"step": 1, "loss": 1.5}}) + "\\n" + json.dumps({{"step": 2, "eval_loss": 1.2}}) + "\\n")
    print("step 1/4  loss 1.5", flush=True)
    if behaviour == "hang":
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop:
            time.sleep(0.02)
        (run / "checkpoints" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
        print("saved a checkpoint at step 1; continue with --resume", flush=True)
        sys.exit(143)
    time.sleep(0.2)
    (run / "adapter").mkdir(exist_ok=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"adapter")
    (run / "COMPLETE").write_text("")
elif stage == "evaluate":
    (run / "eval.json").write_text(json.dumps({{"metrics": {{"accuracy": {{"base": 0.5, "tuned": 0.9}}}},
        "per_class": {{"base": {{"alpha": {{"precision": 0.5, "recall": 0.5, "support": 2}}}},
                      "tuned": {{"alpha": {{"precision": 1.0, "recall": 1.0, "support": 2}}}}}}}}))
    with open(run / "predictions.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({{"input": f"text {{i}}", "reference": "alpha", "base_output": "beta",
                                "tuned_output": "alpha"}}) + "\\n")
elif stage == "quantize":
    for method in sys.argv[6].split(","):
        (run / "quantized" / method).mkdir(parents=True, exist_ok=True)
        (run / "quantized" / method / "model.safetensors").write_bytes(b"weights")
else:
    (run / "export").mkdir(exist_ok=True)
    (run / "export" / f"model-{{sys.argv[-1]}}.gguf").write_bytes(b"GGUF")
with open("calls.jsonl", "a") as f:
    f.write(json.dumps({{"name": name, "end": time.time()}}) + "\\n")
'''


@pytest.fixture
def fake_tunelab(tmp_path) -> Path:
    path = tmp_path / "fake-tunelab"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").create()
    write_jsonl(ws.uploads_dir / "train.jsonl", intent_rows())
    return ws


@pytest.fixture
def jobs(workspace, fake_tunelab):
    queue = Jobs(workspace, python=str(fake_tunelab))
    yield queue
    queue.close()


def config(**sections) -> dict:
    """A valid classification config on the workspace's uploaded data."""
    tree = {"task": "classification", "data": {"train": "uploads/train.jsonl"}}
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value}
    return tree


def behave(workspace: Workspace, **by_name: str) -> None:
    (workspace.root / "behaviour.json").write_text(json.dumps(by_name))


def calls(workspace: Workspace) -> list[dict]:
    path = workspace.root / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
