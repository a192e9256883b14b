"""Packed examples are independent: an example packed after others computes what it computes alone."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import train_config
from tunelab.data.collate import PadCollator, attend_within_examples, block_diagonal_mask
from tunelab.data.tokenize import IGNORE_INDEX, pack


def examples(n: int, vocab: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    records = []
    for i in range(n):
        ids = torch.randint(5, vocab, (4 + 3 * (i % 4),), generator=generator).tolist()
        records.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return records


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_model(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from tunelab.models.tiny import make_tiny_model

    folder = make_tiny_model(request.param, tmp_path_factory.mktemp(request.param), hidden=64, layers=2, heads=4,
                             vocab_size=400)
    return {impl: AutoModelForCausalLM.from_pretrained(folder, attn_implementation=impl).eval()
            for impl in ("sdpa", "eager")}


def packed_and_alone(model, records, max_length=24):
    """Logits of each example inside its packed batch, and alone; in example order."""
    packed = pack(records, max_length)
    batch = PadCollator(pad_token_id=0)(packed)
    with torch.no_grad():
        logits = model(**batch).logits
        alone = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in records]
    inside = []
    for row, positions in enumerate(batch["position_ids"].tolist()):
        length = int(batch["attention_mask"][row].sum())
        starts = [i for i, p in enumerate(positions[:length]) if p == 0] + [length]
        inside += [logits[row, a:b] for a, b in zip(starts, starts[1:])]
    assert len(inside) == len(alone) and len(packed) < len(records)
    return inside, alone


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_a_packed_example_equals_itself_alone(tiny_model, impl):
    model = tiny_model[impl]
    records = examples(9, model.config.vocab_size)
    handle = attend_within_examples(model)
    try:
        inside, alone = packed_and_alone(model, records)
    finally:
        handle.remove()
    for got, expected in zip(inside, alone):
        assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_without_the_block_mask_examples_see_each_other(tiny_model):
    """The failure the mask prevents: a plain padding mask lets later examples attend to earlier ones."""
    inside, alone = packed_and_alone(tiny_model["sdpa"], examples(9, tiny_model["sdpa"].config.vocab_size))
    assert max((a - b).abs().max() for a, b in zip(inside, alone)) > 1e-3


def test_the_block_mask():
    mask = block_diagonal_mask(torch.tensor([[1, 1, 1, 1, 1, 0]]), torch.tensor([[0, 1, 2, 0, 1, 0]]),
                               torch.float32)[0, 0]
    allowed = (mask == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0],
                       [1, 1, 1, 0, 0, 0],
                       [0, 0, 0, 1, 0, 0],   # the second example starts: it sees nothing of the first
                       [0, 0, 0, 1, 1, 0],
                       [0, 0, 0, 0, 0, 1]]   # padding sees only itself (never an empty row)


def test_the_packed_loss_is_the_loss_of_the_examples_alone(tiny_model):
    model = tiny_model["sdpa"]
    records = examples(9, model.config.vocab_size, seed=1)
    handle = attend_within_examples(model)
    try:
        batch = PadCollator(pad_token_id=0)(pack(records, 24))
        with torch.no_grad():
            packed_loss = model(**batch).loss
            # Token-weighted mean over every example alone: each predicts labels[1:] from its own prefix.
            total = sum(model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss
                        * (len(r["labels"]) - 1) for r in records)
    finally:
        handle.remove()
    counted = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert counted == sum(len(r["labels"]) - 1 for r in records)
    assert torch.allclose(packed_loss, total / counted, atol=1e-5)


@pytest.mark.parametrize("packing", [True, False])
def test_training_puts_the_block_mask_on_the_model_only_for_packed_data(tmp_path, tiny_llama, monkeypatch, packing):
    from tunelab.config import load_config
    from tunelab.training import train

    installed = []
    monkeypatch.setattr(train, "attend_within_examples", lambda model: installed.append(model) or
                        attend_within_examples(model))
    cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm",
                                   data={"packing": packing, "max_length": 64}, train={"max_steps": 1}))
    train.run(cfg)
    assert len(installed) == (1 if packing else 0)


@pytest.mark.slow
def test_training_on_packed_data_runs_end_to_end(tmp_path, tiny_llama):
    from tunelab.config import load_config
    from tunelab.training import train

    cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm", data={"packing": True, "max_length": 64},
                                   train={"max_steps": 3}))
    run_dir = train.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["train_tokens_per_second"] and metrics["final_train_loss"] > 0
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["packing"] is True
