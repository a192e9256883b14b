"""The method registry: one entry per configurable method, carrying the facts other stages read."""

from peft import PeftType

from tunelab.config.schema import METHOD_NAMES
from tunelab.training.methods import METHODS


def test_every_configurable_method_has_exactly_one_entry():
    assert tuple(METHODS) == METHOD_NAMES


def test_entries_carry_the_adapter_type_and_the_base_precision():
    assert {name for name, m in METHODS.items() if not m.saves_adapter} == {"full", "freeze"}
    assert {name: m.base_bits for name, m in METHODS.items() if m.base_bits} == {"qlora": 4, "lora-8bit": 8}
    for method in METHODS.values():
        if method.saves_adapter:
            assert PeftType[method.peft_type].value == method.peft_type  # PEFT's own name for the adapter
    assert METHODS["adalora"].peft_type == "ADALORA" and METHODS["dora"].peft_type == "LORA"


def test_adapter_methods_cite_their_paper():
    for name, method in METHODS.items():
        assert method.saves_adapter == (method.paper is not None), name
        assert method.paper is None or method.paper.startswith("https://arxiv.org/abs/"), name
