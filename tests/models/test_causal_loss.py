"""The causal-LM loss computed only at labelled positions equals the model's own loss, and its gradients."""

from __future__ import annotations

import pytest
import torch

from tunelab.models.causal_loss import CHUNK_ROWS, IGNORE_INDEX, LabelledLoss, labelled_nll, supported


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_model(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from tunelab.models.tiny import make_tiny_model

    folder = make_tiny_model(request.param, tmp_path_factory.mktemp(request.param), hidden=64, layers=2, heads=4,
                             vocab_size=600)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def batch(vocab: int = 600):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0                                  # a padded row
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX                     # a masked prompt
    labels[2, 9:] = IGNORE_INDEX
    return ids, mask, labels


def grads(model) -> list[torch.Tensor]:
    found = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return found


@pytest.mark.parametrize("chunk_rows", [CHUNK_ROWS, 4])
@pytest.mark.parametrize("num_items", [None, 40])
def test_loss_and_gradients_equal_the_models_own(tiny_model, chunk_rows, num_items):
    ids, mask, labels = batch()
    tiny_model.eval()  # dropout off, so both forwards compute the same function (gradients still flow)
    plain = tiny_model(input_ids=ids, attention_mask=mask, labels=labels,
                       **({"num_items_in_batch": num_items} if num_items else {})).loss
    plain.backward()
    expected = grads(tiny_model)

    loss = LabelledLoss(tiny_model, chunk_rows=chunk_rows)
    handle = loss.attach(tiny_model)
    try:
        outputs = tiny_model(input_ids=ids, attention_mask=mask)
        assert outputs.logits.shape[1] == 0          # no full-vocabulary logits were computed
        value = loss(outputs, labels, num_items_in_batch=num_items)
    finally:
        handle.remove()
    value.backward()
    assert torch.allclose(value, plain, atol=1e-5)
    for got, want in zip(grads(tiny_model), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_evaluation_nll_per_row_equals_the_full_logits(tiny_model):
    ids, mask, labels = batch()
    tiny_model.eval()
    with torch.inference_mode():
        logits = tiny_model(input_ids=ids, attention_mask=mask).logits.float()
        got = labelled_nll(tiny_model, ids, mask, labels)
    for row, (total, count) in enumerate(got):
        targets = labels[row, 1:]
        keep = targets != IGNORE_INDEX
        want = torch.nn.functional.cross_entropy(logits[row, :-1][keep], targets[keep], reduction="sum")
        assert count == int(keep.sum()) and total == pytest.approx(float(want), rel=1e-5)


def test_only_plain_output_layers_and_unsharded_engines_take_the_labelled_loss(tiny_model):
    assert supported(tiny_model, "none") and supported(tiny_model, "ddp")
    assert not supported(tiny_model, "fsdp") and not supported(tiny_model, "deepspeed-zero3")
    capped = type("Capped", (), {"config": type("C", (), {"model_type": "gemma2"})(),
                                 "get_output_embeddings": lambda self: torch.nn.Linear(2, 2)})()
    assert not supported(capped, "none")


def test_batched_generation_sorts_by_length_and_returns_each_prompts_own_completion(causal_run):
    from tunelab.inference import generate

    prompts = ["Say alpha.", "A much longer request about an order that never arrived, number 12345.", "Hi", "Where?"]
    alone = [generate(causal_run, [p], 12, batch_size=1)[0] for p in prompts]
    assert generate(causal_run, prompts, 12, batch_size=2) == alone
