"""tunelab export --format gguf: the file transformers reads back is the merged model (f16 and q8_0), the
tokenizer and chat template survive, the Modelfile fits the template, and every failure is one clear line
with nothing left behind."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import train_config
from tunelab.errors import ExportError, ModelLoadError
from tunelab.export import pipeline
from tunelab.export.architectures import interleave_rope_halves
from tunelab.export.dtypes import DTYPES
from tunelab.export.gguf_write import export_gguf
from tunelab.export.modelfile import modelfile_text
from tunelab.export.verify import CHECK_TEXTS, read_gguf

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


@pytest.fixture(scope="module")
def merged(causal_run):
    """The run's adapter folded into its fp32 base, and the run's tokenizer."""
    from tunelab.inference import load_run

    loaded = load_run(causal_run.run_dir, full_precision_base=True)
    return loaded.model.merge_and_unload(), loaded.tokenizer


@pytest.fixture(scope="module")
def exported(causal_run, tmp_path_factory) -> dict[str, Path]:
    """The run exported once per dtype, checked by the command itself."""
    folder = tmp_path_factory.mktemp("export")
    return {dtype: pipeline.run(causal_run.run_dir, dtype=dtype, out=folder / f"tiny-{dtype}.gguf", echo=lambda _: None)
            for dtype in DTYPES}


def logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits  # (1, T, vocab)


@pytest.mark.parametrize("dtype, tolerance", [("f16", 2e-3), ("q8_0", 3e-2)])
def test_transformers_reads_back_the_merged_model(exported, merged, causal_run, dtype, tolerance):
    from transformers import AutoModelForCausalLM

    model, tokenizer = merged
    path = exported[dtype]
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say alpha."}], tokenize=False,
                                           add_generation_prompt=True)
    expected, found = logits(model, tokenizer, prompt), logits(back, tokenizer, prompt)
    assert (expected - found).abs().max().item() < tolerance
    assert torch.equal(expected.argmax(-1), found.argmax(-1))
    # The adapter is in there: the base alone is much further off than the file's rounding.
    with causal_run.model.disable_adapter():
        unadapted = logits(causal_run.model, tokenizer, prompt)
    assert (expected - unadapted).abs().max().item() > 5 * tolerance
    assert getattr(back, "hf_quantizer", None) is not None  # transformers 5 marks GGUF-loaded models


def test_tokenizer_and_chat_template_survive(exported, merged):
    _, tokenizer = merged
    _, back = read_gguf(exported["q8_0"])
    chat = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "hi 123"},
                                          {"role": "assistant", "content": "Hello!"}], tokenize=False)
    for text in [*CHECK_TEXTS, chat, "<|user|>\n<|pad|>"]:
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert back.chat_template == tokenizer.chat_template
    assert (back.eos_token, back.bos_token, back.pad_token) == (tokenizer.eos_token, tokenizer.bos_token,
                                                                tokenizer.pad_token)


def test_metadata_is_what_llama_cpp_reads(exported, merged):
    import gguf

    model, tokenizer = merged
    reader = gguf.GGUFReader(exported["f16"])

    def field(key: str):
        return reader.get_field(key).contents()

    config = model.config
    assert field("general.architecture") == "llama"
    assert field("general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    assert (field("llama.block_count"), field("llama.embedding_length"), field("llama.feed_forward_length"),
            field("llama.attention.head_count"), field("llama.attention.head_count_kv"), field("llama.vocab_size"),
            field("llama.context_length")) == (
        config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.num_attention_heads,
        config.num_key_value_heads, config.vocab_size, config.max_position_embeddings)
    assert field("llama.rope.freq_base") == pytest.approx(config.rope_parameters["rope_theta"])
    assert field("llama.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps)
    assert (field("tokenizer.ggml.model"), field("tokenizer.ggml.pre")) == ("gpt2", "gpt-2")
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    types = field("tokenizer.ggml.token_type")
    assert types[tokenizer.eos_token_id] == gguf.TokenType.CONTROL and types[300] == gguf.TokenType.NORMAL
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd.weight instead
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    q8 = {t.name: t.tensor_type for t in gguf.GGUFReader(exported["q8_0"]).tensors}
    assert q8["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_features_llama_cpp_or_the_check_would_get_wrong_are_refused():
    from transformers import LlamaConfig

    from tunelab.export.architectures import architecture_for

    assert architecture_for(LlamaConfig()).name == "llama"
    for settings, named in [({"attention_bias": True}, "attention_bias true"),
                            ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
                             "rope_type 'linear'")]:
        with pytest.raises(ExportError, match=named):
            architecture_for(LlamaConfig(**settings))


def test_interleaved_rows_make_llama_cpp_rope_equal_transformers_rope():
    """Rotating pairs (2i, 2i+1) of the interleaved rows (llama.cpp) gives the interleaved result of
    rotating (i, i + d/2) of the original rows (transformers' rotate_half), head by head."""
    heads, dim, position = 3, 8, 5
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((heads * dim, 4))
    angles = position * 10000.0 ** (-np.arange(dim // 2) * 2 / dim)  # (d/2,)
    hf = weight.reshape(heads, dim, 4)
    first, second = hf[:, : dim // 2], hf[:, dim // 2:]
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    hf_rotated = np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=1)
    ggml = interleave_rope_halves(weight, heads).reshape(heads, dim // 2, 2, 4)
    even, odd = ggml[:, :, 0], ggml[:, :, 1]
    ggml_rotated = np.stack([even * cos - odd * sin, odd * cos + even * sin], axis=2).reshape(heads * dim, 4)
    assert np.allclose(ggml_rotated, interleave_rope_halves(hf_rotated.reshape(heads * dim, 4), heads))


def test_modelfile_follows_the_chat_template(exported, merged):
    _, tokenizer = merged
    text = (exported["f16"].parent / "Modelfile").read_text()
    assert "FROM ./tiny-q8_0.gguf" in text  # the last export written to the folder
    assert "ollama create " in text and "verified: transformers reads it back" in text
    assert ('TEMPLATE """{{ if .System }}<|system|>\n{{ .System }}\n<|user|>\n{{ .Prompt }}\n<|assistant|>\n'
            '{{ else }}<|user|>\n{{ .Prompt }}\n<|assistant|>\n{{ end }}{{ .Response }}<|endoftext|>"""') in text
    assert text.rstrip().splitlines()[-1] == 'PARAMETER stop "<|endoftext|>"'


def test_modelfile_for_chatml_and_for_no_template(merged):
    _, tokenizer = merged
    chatml = copy.deepcopy(tokenizer)
    chatml.chat_template = CHATML
    text = modelfile_text("model-f16.gguf", chatml, "My Run!")
    assert "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n" in text
    assert 'PARAMETER stop "<|im_start|>"' in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "ollama create my-run -f Modelfile" in text and "SYSTEM" not in text
    # A template that adds its own system prompt to chats without one (as SmolLM2's does) keeps it in Ollama.
    chatml.chat_template = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are Tiny.<|im_end|>"
                            "\\n' }}{% endif %}" + CHATML)
    assert 'SYSTEM """You are Tiny."""' in modelfile_text("model-f16.gguf", chatml, "run")
    chatml.chat_template = None
    assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile_text("model-f16.gguf", chatml, "run")


def test_corrupt_truncated_or_foreign_gguf_is_one_clear_error(exported, tmp_path):
    import gguf

    good = exported["f16"].read_bytes()
    cases = {"garbage.gguf": b"not a gguf file at all" * 10, "header.gguf": good[:200],
             "truncated.gguf": good[: len(good) // 2], "empty.gguf": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelLoadError) as caught:
            read_gguf(tmp_path / name)
        assert len(caught.value.problems) == 1 and "\n" not in caught.value.problems[0], name
        assert name in caught.value.problems[0]
    assert "truncated" in str(pytest.raises(ModelLoadError, read_gguf, tmp_path / "truncated.gguf").value)
    writer = gguf.GGUFWriter(tmp_path / "gpt2.gguf", "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="architecture 'gpt2' is not supported; tunelab reads llama"):
        read_gguf(tmp_path / "gpt2.gguf")


def test_a_failure_leaves_nothing_behind(merged, tmp_path, monkeypatch):
    import gguf

    model, tokenizer = merged
    target = tmp_path / "model-f16.gguf"
    target.write_bytes(b"the previous export")

    def disk_fills_up(writer, **kwargs):
        writer.fout[0].write(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_fills_up)
        with pytest.raises(OSError, match="No space left"):
            export_gguf(model, tokenizer, target, "f16")
    monkeypatch.setitem(DTYPES, "f16", dataclasses.replace(DTYPES["f16"], logit_tolerance=0.0))
    with pytest.raises(ExportError, match="logits differ .* the file was not written"):
        export_gguf(model, tokenizer, target, "f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-f16.gguf"]
    assert target.read_bytes() == b"the previous export"


def test_cli_writes_the_default_file_and_prints_its_path_last(causal_run, run_cli):
    code, out, err = run_cli("export", causal_run.run_dir, "--format", "gguf", "--dtype", "q8_0", "--no-verify")
    assert code == 0, err
    path = causal_run.run_dir / "export" / "model-q8_0.gguf"
    assert out.strip().splitlines()[-1] == str(path) and path.stat().st_size > 0
    assert "not verified (--no-verify)" in out and f"ollama create {causal_run.run_dir.name} -f Modelfile" in out
    assert (path.parent / "Modelfile").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["Modelfile", "model-q8_0.gguf"]
    shutil.rmtree(path.parent)


def test_unsupported_architecture_exits_2_with_one_line(tmp_path, run_cli, capsys):
    from tunelab.config import load_config
    from tunelab.models.tiny import make_tiny_model
    from tunelab.training import train

    gpt2 = make_tiny_model("gpt2", tmp_path / "gpt2", hidden=64, layers=1, heads=4, vocab_size=600)
    (tmp_path / "run").mkdir()
    run_dir = train.run(load_config(train_config(tmp_path / "run", gpt2, task="causal_lm", train={"max_steps": 1})))
    capsys.readouterr()  # training's progress lines
    code, out, err = run_cli("export", run_dir)
    assert code == 2
    heading, *problems = err.strip().splitlines()
    assert heading == "tunelab: cannot export:" and len(problems) == 1
    assert "model type 'gpt2' cannot be exported to GGUF yet; supported: llama" in problems[0]
    assert not (run_dir / "export").exists() or not any((run_dir / "export").iterdir())
    with pytest.raises(SystemExit) as refused:  # argparse names the valid types
        run_cli("export", run_dir, "--dtype", "q4")
    assert refused.value.code == 2


def test_a_full_run_exports_its_model_folder(tiny_llama, tmp_path):
    from tunelab.config import load_config
    from tunelab.training import train

    run_dir = train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "full"},
                                                 train={"max_steps": 1})))
    lines = []
    path = pipeline.run(run_dir, dtype="f16", echo=lines.append)
    assert path == run_dir / "export" / "model-f16.gguf" and path.exists()
    assert lines[1].startswith("verified: transformers reads it back; max |logit diff| ")
