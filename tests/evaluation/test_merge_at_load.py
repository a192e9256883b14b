"""Loading a run with ``merge=True``: the adapter folded into the weights gives the same outputs,
the base comes back untouched, and quantized bases or full-model runs are left as they are."""

import torch

from conftest import train_config
from tunelab.config import load_config
from tunelab.inference import base_model, generate, load_run, mergeable, quantized_checkpoint
from tunelab.training import train


def test_a_merged_lora_run_generates_what_the_adapter_does_and_keeps_its_base(causal_run):
    merged = load_run(causal_run.run_dir, merge=True)
    assert merged.merged_adapter and not causal_run.merged_adapter
    assert not hasattr(merged.model, "peft_config")  # a plain transformers model: no adapter matmuls left
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    with torch.inference_mode():
        tuned, folded = causal_run.model(input_ids=ids).logits, merged.model(input_ids=ids).logits
    assert torch.allclose(tuned, folded, atol=1e-4)
    prompts = ["Say alpha.", "Say gamma."]
    assert generate(merged, prompts, 8) == generate(causal_run, prompts, 8)
    with base_model(causal_run) as base, torch.inference_mode():
        expected = base(input_ids=ids).logits
    with base_model(merged) as base, torch.inference_mode():
        assert torch.allclose(base(input_ids=ids).logits, expected, atol=1e-5)
    assert not torch.allclose(expected, tuned, atol=1e-3)  # the adapter changed something, so the checks can fail


def test_merging_in_fp32_before_a_bf16_cast(causal_run):
    merged = load_run(causal_run.run_dir, merge=True, precision="bf16")
    assert merged.merged_adapter and merged.precision["used"] == "bf16"
    assert {p.dtype for p in merged.model.parameters()} == {torch.bfloat16}


def test_quantized_bases_named_variants_and_full_runs_are_not_merged(tmp_path, tiny_llama, causal_run):
    run, cfg = causal_run.run, causal_run.cfg
    assert mergeable(run, cfg, None, full_precision_base=False)
    qlora = cfg.model_copy(update={"method": cfg.method.model_copy(update={"name": "qlora"})})
    assert not mergeable(run, qlora, None, full_precision_base=False)  # a 4-bit base keeps its kernels
    assert mergeable(run, qlora, None, full_precision_base=True)
    assert not load_run(causal_run.run_dir, "adapter", merge=True).merged_adapter  # asked for the adapter itself
    assert not quantized_checkpoint(causal_run.model)
    causal_run.model.get_base_model().hf_quantizer = object()  # what transformers sets on a GPTQ or bnb checkpoint
    try:
        assert quantized_checkpoint(causal_run.model)
    finally:
        causal_run.model.get_base_model().hf_quantizer = None
    full = train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "full"},
                                              train={"max_steps": 1})))
    assert not load_run(full, merge=True).merged_adapter
