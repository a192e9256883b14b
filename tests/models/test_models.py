import json

import pytest
import torch

from tunelab.config.schema import ModelSection
from tunelab.errors import ModelLoadError
from tunelab.models.resolve import load_tokenizer, resolve_model


def test_builtin_minilm_is_the_shipped_bert():
    path = resolve_model("builtin:minilm")
    config = json.loads((__import__("pathlib").Path(path) / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    assert load_tokenizer(ModelSection(name="builtin:minilm")).is_fast


@pytest.mark.parametrize("name, expected", [
    ("builtin:gpt5", "unknown built-in model 'builtin:gpt5'; valid: builtin:minilm"),
    ("./missing-folder", "folder ./missing-folder not found"),
])
def test_bad_model_names(name, expected):
    with pytest.raises(ModelLoadError) as caught:
        resolve_model(name)
    assert expected in str(caught.value)


def test_hub_download_failure_is_one_clear_line():
    with pytest.raises(ModelLoadError) as caught:
        load_tokenizer(ModelSection(name="openai-community/gpt2"))
    [line] = caught.value.problems
    assert "could not download 'openai-community/gpt2'" in line and "model.name=/path/to/model" in line


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_make_tiny_model_cli_writes_a_loadable_causal_lm(tmp_path, run_cli, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / arch
    code, stdout, err = run_cli("make-tiny-model", "--arch", arch, "--out", out, "--hidden", "32", "--vocab-size", "500")
    assert code == 0, err
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "Where is my order 12345? Thanks!"
    ids = tokenizer(text, return_tensors="pt")
    assert tokenizer.decode(ids["input_ids"][0]) == text  # byte-level BPE round-trips any text
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2


def test_make_tiny_model_rejects_bad_sizes(tmp_path, run_cli):
    code, _, err = run_cli("make-tiny-model", "--arch", "llama", "--out", tmp_path / "m", "--hidden", "30")
    assert code == 2 and "--heads must divide --hidden" in err
    with pytest.raises(SystemExit):
        run_cli("make-tiny-model", "--arch", "mamba", "--out", tmp_path / "m")


def test_builtin_tiny_llama_is_built_once_and_cached():
    first = resolve_model("builtin:tiny-llama")
    stamp = (__import__("pathlib").Path(first) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("builtin:tiny-llama") == first
    assert (__import__("pathlib").Path(first) / "model.safetensors").stat().st_mtime_ns == stamp
