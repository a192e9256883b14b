"""PackedDropout: torch's dropout statistics from a quarter of the random draws, in LoRA layers on CPUs."""

import pytest
import torch
from torch import nn

from tunelab.models.dropout import PackedDropout, pack_lora_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_it_drops_the_asked_share_and_keeps_the_expected_value(p):
    torch.manual_seed(0)
    out = PackedDropout(p).train()(torch.ones(400_000))
    kept = (out != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.005, kept  # binomial sd at n=400k is below 0.001
    assert abs(out.mean().item() - 1) < 0.01  # kept elements are scaled by 1 / keep probability
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-4)


def test_it_follows_torch_seed_and_differs_between_draws():
    dropout = PackedDropout(0.3).train()
    x = torch.ones(64, 33)  # not a multiple of 4 elements per row: the last draw is partly used
    torch.manual_seed(7)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first) and not torch.equal(first, second)


def test_gradients_flow_through_the_kept_elements_only_and_eval_is_identity():
    dropout = PackedDropout(0.25).train()
    x = torch.randn(8, 50, dtype=torch.bfloat16, requires_grad=True)
    out = dropout(x)
    out.sum().backward()
    kept = out != 0
    assert out.dtype == torch.bfloat16
    assert torch.all(x.grad[~kept] == 0) and torch.allclose(x.grad[kept].float(), torch.tensor(4 / 3), rtol=1e-2)
    assert dropout.eval()(x) is x and PackedDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PackedDropout(1.0)
    with pytest.raises(ValueError, match="dropping everything"):
        PackedDropout(1 - 1e-7)


def test_cpu_lora_training_packs_the_adapter_dropouts(tmp_path, tiny_bert):
    from conftest import train_config
    from tunelab.config import load_config
    from tunelab.machine import Device
    from tunelab.training.methods import METHODS, MethodContext

    cfg = load_config(train_config(tmp_path, tiny_bert, lora={"lora_dropout": 0.1}))
    model = METHODS["lora"].build(MethodContext(cfg, ["a", "b", "c"], Device("cpu", False, "cpu"), total_steps=4))
    dropouts = [m for layer in model.modules() if isinstance(getattr(layer, "lora_dropout", None), nn.ModuleDict)
                for m in layer.lora_dropout.values()]
    assert dropouts and all(isinstance(m, PackedDropout) and m.p == 0.1 for m in dropouts)
    assert pack_lora_dropout(model) == 0  # nothing left to replace
