"""The causal-LM training loss, computed only at the positions that have a label.

A causal LM's own loss projects every position onto the whole vocabulary: batch x length x vocab
floats, kept for the backward pass with a log-softmax and a gradient of the same size. With
SmolLM2's 49,152-token vocabulary that is 0.4 GB per copy at batch 8 x 256 and several copies, while
an instruction example has labels only on its reply (the prompt is masked with -100).

``LabelledLoss`` takes the last hidden states from the input of the model's output layer, which then
projects no position at all (hooks: ``attach``). Asking the model for ``output_hidden_states`` instead
would keep every layer's hidden states alive until the loss is done, and accelerate hands them over
as fp32 copies under bf16 autocast: about 0.2 GB more at batch 8 x 256 on SmolLM2. The loss keeps the
positions whose next token has a label, and projects them through the output layer in chunks of
``chunk_rows`` positions. Each chunk is checkpointed, so the backward pass recomputes its logits rather
than keeping them: the peak is one chunk's logits, however long the batch. The value equals the model's
own loss (tested), including the Trainer's ``num_items_in_batch`` normalisation for gradient accumulation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
# A chunk's logits and their gradient peak at the start of the backward pass, when every activation is still
# kept: 256 rows x 49,152 (SmolLM2) is 50 MB per fp32 copy. Measured on SmolLM2-135M, LoRA, batch 8 x 256, 10
# steps, two runs each: peak RSS 2,772 and 2,822 MiB at 256 rows against 2,941 and 2,967 at 1,024, no slower,
# and the same loss.
CHUNK_ROWS = 256
# Architectures whose logits are exactly output_layer(last hidden state): no soft-capping or scaling.
PLAIN_HEADS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "smollm3", "olmo2", "starcoder2"})


def supported(model, distributed_engine: str) -> bool:
    """Whether ``LabelledLoss`` computes exactly this model's loss. Not under FSDP or DeepSpeed, whose
    sharded output layer can only be used inside the model's own forward pass."""
    config = getattr(model, "config", None)
    return (distributed_engine in ("none", "ddp") and getattr(config, "model_type", None) in PLAIN_HEADS
            and model.get_output_embeddings() is not None)


def next_token_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states, targets) of the positions whose next token is labelled, flattened."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return hidden[:, :-1][keep], targets[keep]


def summed_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Sum of the cross-entropy of ``head(hidden)`` against ``targets``, ``chunk_rows`` rows at a time."""
    # The loss runs outside autocast: rows that reach it in another dtype than the output layer's weight
    # (fp32 rows from a caller, a frozen bf16 output layer) are cast to the weight's.
    weight = getattr(head, "weight", None)

    def chunk_sum(rows: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        if weight is not None and rows.dtype != weight.dtype:
            rows = rows.to(weight.dtype)
        return F.cross_entropy(head(rows).float(), wanted, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk_rows):
        rows, wanted = hidden[start:start + chunk_rows], targets[start:start + chunk_rows]
        if torch.is_grad_enabled():
            total = total + checkpoint(chunk_sum, rows, wanted, use_reentrant=False)
        else:
            total = total + chunk_sum(rows, wanted)
    return total


def labelled_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor) -> list[tuple[float, int]]:
    """(summed NLL in nats, labelled tokens) per row, for evaluation: only labelled positions are
    projected onto the vocabulary when ``supported`` says that is exact, else the model's logits are used."""
    if supported(model, "none"):
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1,
                        output_hidden_states=True)
        hidden, head = outputs.hidden_states[-1], model.get_output_embeddings()
    else:
        hidden, head = model(input_ids=input_ids, attention_mask=attention_mask).logits, torch.nn.Identity()
    results = []
    for row in range(len(labels)):
        rows, targets = next_token_targets(hidden[row:row + 1], labels[row:row + 1].to(hidden.device))
        results.append((float(summed_loss(head, rows, targets)), len(targets)))
    return results


class Hooks:
    """Several hook handles removed as one."""

    def __init__(self, handles: list):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class LabelledLoss:
    """The Trainer's ``compute_loss_func`` for causal LMs, with the hooks that hand it the last hidden states
    in place of the model's logits (``attach``)."""

    def __init__(self, model, chunk_rows: int = CHUNK_ROWS):
        self.head = model.get_output_embeddings()
        self.chunk_rows = chunk_rows
        self.hidden: torch.Tensor | None = None   # the last forward pass's, until the loss takes it
        self._waiting = False                     # a forward pass is on its way to the output layer

    def attach(self, model) -> Hooks:
        """Hooks on ``model``: each forward pass hands all its last hidden states to the output layer
        (``logits_to_keep=0``), whose input is kept here and which projects none of them (its logits
        have length 0). The output layer called by the loss itself is left alone. Returns the handles."""
        def before_model(module, args, kwargs):
            self._waiting = True
            return args, {**kwargs, "logits_to_keep": 0}

        def before_head(module, args):
            if not self._waiting:
                return None
            self._waiting = False
            self.hidden = args[0]
            return (args[0][..., :0, :],)

        return Hooks([model.register_forward_pre_hook(before_model, with_kwargs=True),
                      self.head.register_forward_pre_hook(before_head)])

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        if self.hidden is None:
            raise RuntimeError("LabelledLoss: no hidden states; attach() it to the model before its forward pass")
        last, self.hidden = self.hidden, None
        hidden, targets = next_token_targets(last, labels.to(last.device))
        total = summed_loss(self.head, hidden, targets, self.chunk_rows)
        if num_items_in_batch is not None:  # the Trainer's count over the accumulated (and gathered) batch
            return total / num_items_in_batch
        return total / max(len(targets), 1)
