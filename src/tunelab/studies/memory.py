"""Where a training step's memory goes: weights, gradients, optimizer state and activations, counted.

One forward and backward pass of the config's causal LM and method on a full batch (``train.batch_size``
rows of ``data.max_length`` random tokens, every position labelled: the longest and most expensive batch
the run can see), with the loss tunelab trains with (``LabelledLoss`` where it is exact), in the
precision ``train.precision`` picks, then one AdamW step. Each part is the bytes of the tensors it holds:
- weights: every parameter and buffer of the model (a frozen base in bf16 counts 2 bytes a value);
- gradients: the ``.grad`` of every trained parameter;
- optimizer state: AdamW's two moments (and step counters) per trained parameter;
- weight copies: tensors shaped like a parameter that autograd saves for the backward pass (under bf16
  autocast, the bf16 copy of each fp32 weight it multiplies);
- activations: every other tensor autograd saves for the backward pass, each storage once.
Peak RSS adds what these leave out: the Python process, libraries, allocator caches and temporaries.
"""

from __future__ import annotations

import torch

from tunelab.config import TunelabConfig
from tunelab.errors import TunelabError
from tunelab.machine import choose_device, with_precision
from tunelab.models.causal_loss import LabelledLoss, supported
from tunelab.training.methods import MethodContext, build_model

MIB = 2**20


def parts(cfg: TunelabConfig, method: str) -> dict:
    """The parts for ``method`` on ``cfg``'s causal LM, in MiB, with the trainable parameter count."""
    if cfg.task != "causal_lm":
        raise TunelabError(f"task: the memory study runs causal LMs, not {cfg.task}")
    cfg = cfg.model_copy(deep=True)
    cfg.method.name = method
    device = with_precision(choose_device(cfg.train.device), cfg.train.precision)
    model = build_model(MethodContext(cfg, None, device, total_steps=1))
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    ids = torch.randint(0, model.get_input_embeddings().num_embeddings, (cfg.train.batch_size, cfg.data.max_length),
                        generator=torch.Generator().manual_seed(0)).to(device.type)
    saved = _saved_for_backward(model, lambda: _loss(model, ids), device)
    optimizer = torch.optim.AdamW(trained, lr=cfg.train.learning_rate)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor))
    tensors = list(model.parameters()) + list(model.buffers())
    return {"method": method, "precision": device.precision["used"], "batch": f"{ids.shape[0]} x {ids.shape[1]}",
            "trainable_params": sum(p.numel() for p in trained),
            "weights_mb": _mib(sum(t.numel() * t.element_size() for t in tensors)),
            "gradients_mb": _mib(sum(p.grad.numel() * p.grad.element_size() for p in trained if p.grad is not None)),
            "optimizer_mb": _mib(state), "weight_copies_mb": _mib(sum(saved["weight copies"].values())),
            "activations_mb": _mib(sum(saved["activations"].values()))}


def _loss(model, ids: torch.Tensor) -> torch.Tensor:
    """The training loss on ``ids`` (every position labelled), as tunelab's trainer computes it."""
    if not supported(model, "none"):
        return model(input_ids=ids, labels=ids).loss
    loss_fn = LabelledLoss(model)
    handle = loss_fn.attach(model)
    try:
        return loss_fn(model(input_ids=ids), ids)
    finally:
        handle.remove()


def _saved_for_backward(model, forward, device) -> dict[str, dict[int, int]]:
    """Run ``forward`` (returning a loss), then backward; the bytes autograd saved, per storage, split into
    copies of weights (shaped like a parameter) and activations (everything else)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    saved: dict[str, dict[int, int]] = {"weight copies": {}, "activations": {}}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            kind = "weight copies" if tuple(tensor.shape) in shapes else "activations"
            saved[kind][storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.bf16):
        loss = forward()
    loss.backward()
    return saved


def _mib(nbytes: int) -> float:
    return round(nbytes / MIB, 1)
