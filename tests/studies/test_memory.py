"""The memory study counts what a training step holds: gradients and AdamW state only for trained weights."""

import pytest

from conftest import train_config
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.studies import memory

MIB = 2**20


@pytest.fixture
def config(tmp_path, tiny_llama):
    return load_config(train_config(tmp_path, tiny_llama, task="causal_lm", train={"batch_size": 2, "precision": "fp32"}))


def test_full_fine_tuning_keeps_a_gradient_and_two_moments_per_weight(config):
    full = memory.parts(config, "full")
    per_param = full["trainable_params"] * 4 / MIB  # fp32
    assert full["gradients_mb"] == pytest.approx(per_param, abs=0.15)
    assert full["optimizer_mb"] == pytest.approx(2 * per_param, abs=0.15)  # exp_avg and exp_avg_sq (+ step scalars)
    assert full["activations_mb"] > 0 and full["precision"] == "fp32" and full["batch"] == "2 x 32"


def test_lora_trains_a_few_parameters_over_the_same_activations(config):
    full, lora = memory.parts(config, "full"), memory.parts(config, "lora")
    assert lora["trainable_params"] < full["trainable_params"] / 5
    assert lora["gradients_mb"] < full["gradients_mb"] and lora["optimizer_mb"] < full["optimizer_mb"]
    assert lora["weights_mb"] >= full["weights_mb"]  # the frozen base in fp32 plus the adapters
    assert lora["activations_mb"] == pytest.approx(full["activations_mb"], rel=0.5)


def test_only_causal_models(tmp_path, tiny_bert):
    with pytest.raises(TunelabError, match="causal"):
        memory.parts(load_config(train_config(tmp_path, tiny_bert)), "lora")
