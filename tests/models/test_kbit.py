"""bitsandbytes 4-bit bases on any CPU: layers the kernel cannot take stay fp32; training never takes the
inference repack.

On CPUs with AVX-512 BF16, bitsandbytes repacks 4-bit weights at the first inference forward. Here the
path is forced on whatever CPU runs the tests: ``has_avx512bf16`` answers True when layers are built,
so the repack (plain torch) runs as it would there. The kernel after it exists only on such CPUs, so
these tests check that nothing crashes and what stays in full precision, not the outputs' values.
"""

import json

import pytest
import torch
import torch.nn as nn

from conftest import train_config
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.machine import Device
from tunelab.models.kbit import HEAD_MODULES, fits_4bit_kernel, kept_full_precision
from tunelab.models.quantizers import QUANTIZERS, Job

pytest.importorskip("bitsandbytes")
CPU = Device("cpu", False, "cpu")
IDS = torch.tensor([[1, 5, 9, 30, 2]])


@pytest.fixture
def avx512_bf16(monkeypatch):
    """Layers built from now on take the AVX-512 BF16 CPU path."""
    monkeypatch.setattr("bitsandbytes.nn.modules.has_avx512bf16", lambda: True)


@pytest.fixture(scope="module")
def mixed_llama(tmp_path_factory, tiny_llama):
    """A Llama whose MLP has gate/up 64 -> 96 (fits) and down 96 -> 64 (input not a multiple of 64)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("mixed-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def nf4_job(tmp_path, model):
    cfg = load_config(train_config(tmp_path, model, task="causal_lm"))
    return Job(cfg, model, model, None, CPU, lambda: [])


def test_the_kernel_rule():
    assert fits_4bit_kernel(64, 32) and fits_4bit_kernel(576, 192) and fits_4bit_kernel(384, 1536)
    assert not fits_4bit_kernel(32, 32)    # input narrower than one 64-weight block
    assert not fits_4bit_kernel(96, 64)    # input not a whole number of blocks
    assert not fits_4bit_kernel(64, 48)    # output not a multiple of the 32-row tile


def test_the_forced_path_crashes_on_narrow_layers_without_the_rule(tmp_path, mixed_llama, avx512_bf16):
    """What tunelab protects against, reproduced: transformers' own 4-bit load, heads skipped only."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32,
                                llm_int8_skip_modules=list(HEAD_MODULES))
    model = AutoModelForCausalLM.from_pretrained(mixed_llama, quantization_config=config, device_map={"": "cpu"},
                                                 dtype=torch.float32).eval()
    with pytest.raises(RuntimeError, match="is invalid for input of size"), torch.no_grad():
        model(IDS)


def test_narrow_layers_stay_fp32_and_the_copy_loads_and_runs(tmp_path, mixed_llama, avx512_bf16):
    from bitsandbytes.nn import Linear4bit

    quantizer = QUANTIZERS["nf4"]
    job = nf4_job(tmp_path, mixed_llama)
    model = quantizer.quantize(job).eval()
    kept = kept_full_precision(model)
    assert kept == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    mlp = model.model.layers[0].mlp
    assert type(mlp.down_proj) is nn.Linear and mlp.down_proj.weight.dtype == torch.float32
    assert isinstance(mlp.gate_proj, Linear4bit) and isinstance(model.model.layers[0].self_attn.q_proj, Linear4bit)
    with torch.no_grad():
        model(IDS)  # the repack runs on every 4-bit layer: no crash
    assert mlp.gate_proj.weight.quant_state.packing_format_for_cpu

    quantizer.save(model, tmp_path / "nf4")
    saved = json.loads((tmp_path / "nf4" / "config.json").read_text())["quantization_config"]
    assert set(kept) <= set(saved["llm_int8_skip_modules"])
    reloaded = quantizer.load(job.cfg, None, CPU, tmp_path / "nf4").eval()
    assert type(reloaded.model.layers[1].mlp.down_proj) is nn.Linear
    with torch.no_grad():
        reloaded(IDS)


def test_a_model_with_no_wide_enough_layer_is_refused(tmp_path):
    from tunelab.models.tiny import make_tiny_model

    narrow = make_tiny_model("llama", tmp_path / "narrow", hidden=32, layers=1, heads=4, vocab_size=400)
    with pytest.raises(TunelabError, match="no layer of .* fits bitsandbytes' 4-bit kernel"):
        QUANTIZERS["nf4"].quantize(nf4_job(tmp_path, narrow))


def test_quantize_records_the_kept_layers(tmp_path, mixed_llama, run_cli):
    from tunelab.training import train

    cfg = load_config(train_config(tmp_path, mixed_llama, task="causal_lm", method={"name": "full"},
                                   train={"max_steps": 1}))
    run_dir = train.run(cfg)
    code, out, err = run_cli("quantize", run_dir, "--method", "nf4")
    assert code == 0, err
    info = json.loads((run_dir / "quantized" / "nf4" / "quantized.json").read_text())
    assert info["full_precision_layers"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert "2 layer(s) too narrow for the 4-bit kernel stay in full precision" in out


def test_a_qlora_model_in_training_never_takes_the_inference_repack(tmp_path, tiny_llama, avx512_bf16):
    """An evaluation during training would repack the base, and the repacked kernel has no backward."""
    from bitsandbytes.nn import Linear4bit

    from tunelab.training.methods import MethodContext, build_model

    cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "qlora"}))
    model = build_model(MethodContext(cfg, None, CPU, total_steps=4))
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers and not any(layer.support_avx512bf16_for_cpu for layer in layers)
    model.eval()
    with torch.no_grad():
        model(input_ids=IDS)  # what an evaluation step does
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in layers)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    # lora_B starts at zero, so the first layer's adapters get a gradient only through the 4-bit bases above them.
    first = [p.grad for name, p in model.named_parameters() if "layers.0.self_attn.q_proj.lora_B" in name]
    assert first and first[0] is not None and first[0].abs().sum() > 0
