"""train/eval/serve precision: auto measures bf16 against fp32 once per process and takes bf16 only when it is
clearly faster; bf16 trains a frozen bf16 base under fp32 adapters and is recorded in metrics.json.

Every test here passes on a CPU whatever its bf16 speed: the choice is tested with injected measurements, and
forced bf16 runs on tiny models (fast enough even where bf16 matmuls are 200x slower than fp32)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import train_config
from tunelab import machine
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.machine import BF16_CLEARLY_FASTER, Device, choose_device, with_precision
from tunelab.training import train


@pytest.fixture
def speeds(monkeypatch):
    """Replace the measurement with given GFLOP/s; returns the list of calls made."""
    calls = []

    def use(fp32: float, bf16: float):
        def measured():
            calls.append(1)
            return {"fp32_gflops": fp32, "bf16_gflops": bf16}
        monkeypatch.setattr(machine, "matmul_speeds", measured)
        return calls
    return use


@pytest.mark.parametrize("fp32, bf16, chosen", [
    (222.0, 950.0, "bf16"),                               # AVX512-BF16: about 4x
    (130.0, 0.6, "fp32"),                                 # no AVX-512: bf16 unusable
    (100.0, 100.0 * BF16_CLEARLY_FASTER * 0.9, "fp32"),   # faster, but not clearly
])
def test_auto_takes_bf16_on_a_cpu_only_where_it_measures_clearly_faster(speeds, fp32, bf16, chosen):
    speeds(fp32, bf16)
    device = with_precision(choose_device("cpu"), "auto")
    assert device.bf16 is (chosen == "bf16")
    assert device.precision == {"setting": "auto", "fp32_gflops": fp32, "bf16_gflops": bf16, "used": chosen}
    assert device.description.endswith(f", {chosen})")


def test_fp32_is_not_measured_and_bf16_is_honoured_even_where_slow(speeds):
    calls = speeds(130.0, 0.6)
    assert with_precision(choose_device("cpu"), "fp32").precision == {"setting": "fp32", "used": "fp32"}
    assert not calls
    forced = with_precision(choose_device("cpu"), "bf16")
    assert forced.bf16 and forced.precision["used"] == "bf16" and forced.precision["bf16_gflops"] == 0.6


def test_cuda_refuses_bf16_where_the_gpu_lacks_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(machine, "describe", lambda kind, bf16: f"GPU ({'bf16' if bf16 else 'fp32'})")
    gpu = Device("cuda", False, "GPU (fp32)")
    assert with_precision(gpu, "auto").precision == {"setting": "auto", "used": "fp32"}
    with pytest.raises(TunelabError, match="train.precision: bf16 was asked for but this GPU does not support it"):
        with_precision(gpu, "bf16")


def test_the_real_measurement_is_positive_and_taken_once_per_process():
    machine.matmul_speeds.cache_clear()
    first = machine.matmul_speeds()
    assert first["fp32_gflops"] > 0 and first["bf16_gflops"] > 0
    assert machine.matmul_speeds() is first


def trained(folder, model, task, precision):
    folder.mkdir()
    return train.run(load_config(train_config(folder, model, task=task, train={
        "max_steps": 3, "logging_steps": 1, "eval_strategy": "no", "threads": 1, "precision": precision})))


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_bf16_trains_a_bf16_frozen_base_under_fp32_adapters_and_keeps_the_loss(tmp_path, tiny_bert, tiny_llama,
                                                                              monkeypatch, task):
    from transformers import TrainerCallback

    model = tiny_bert if task == "classification" else tiny_llama
    seen = {}

    class Dtypes(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            for param in model.parameters():
                seen.setdefault("trained" if param.requires_grad else "frozen", set()).add(param.dtype)
            seen["cast"] = {m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_A")}

    real_callbacks = train.callbacks
    monkeypatch.setattr(train, "callbacks", lambda *a: real_callbacks(*a) + [Dtypes()])
    bf16_run = trained(tmp_path / "bf16", model, task, "bf16")
    monkeypatch.setattr(train, "callbacks", real_callbacks)
    fp32_run = trained(tmp_path / "fp32", model, task, "fp32")

    assert seen == {"frozen": {torch.bfloat16}, "trained": {torch.float32}, "cast": {False}}
    metrics = json.loads((bf16_run / "metrics.json").read_text())
    assert metrics["precision"]["setting"] == "bf16" and metrics["precision"]["used"] == "bf16"
    assert metrics["device"].endswith(", bf16)")
    assert json.loads((fp32_run / "metrics.json").read_text())["precision"] == {"setting": "fp32", "used": "fp32"}
    saved = load_file(bf16_run / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}

    def first_loss(run):
        return next(json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()
                    if "loss" in json.loads(line))

    # Before any update the two runs compute the same loss up to bf16's rounding of the base.
    assert first_loss(bf16_run) == pytest.approx(first_loss(fp32_run), rel=0.02)


def test_adapters_over_a_bf16_base_keep_its_activations_and_get_the_same_gradients(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.training.methods import adapter_inputs_uncast, trainable_in_fp32

    def step(uncast: bool):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
        config = LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
        model = trainable_in_fp32(get_peft_model(base, config))
        if uncast:
            assert adapter_inputs_uncast(model) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
        kept = {}

        def pack(tensor):
            kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        ids = torch.arange(4 * 32).reshape(4, 32) % base.config.vocab_size
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, sum(kept.values())

    cast_loss, cast_grads, cast_kept = step(uncast=False)
    loss, grads, kept = step(uncast=True)
    assert loss == cast_loss
    assert grads.keys() == cast_grads.keys() and all(torch.equal(grads[n], cast_grads[n]) for n in grads)
    assert kept < 0.95 * cast_kept, (kept, cast_kept)


def test_dora_layers_keep_peft_s_cast_for_their_weight_norm(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.training.methods import adapter_inputs_uncast

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", use_dora=True))
    assert adapter_inputs_uncast(model) == 0
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_A"))


def test_evaluation_records_its_precision_and_bf16_agrees_with_fp32(tmp_path, tiny_bert):
    from tunelab.evaluation import evaluate

    run_dir = trained(tmp_path / "run", tiny_bert, "classification", "fp32")
    fp32 = evaluate.run(run_dir, split="train", overrides=["eval.precision=fp32"])
    bf16 = evaluate.run(run_dir, split="train", overrides=["eval.precision=bf16"])
    assert fp32["settings"]["precision"] == {"setting": "fp32", "used": "fp32"}
    assert bf16["settings"]["precision"]["used"] == "bf16"
    for name in ("accuracy", "macro_f1"):
        for side in ("base", "tuned"):
            assert bf16["metrics"][name][side] == pytest.approx(fp32["metrics"][name][side], abs=0.1)
