"""Dynamic padding: each batch is padded to its own longest example, never to ``max_length``."""

from __future__ import annotations

import torch

from tunelab.data.tokenize import IGNORE_INDEX


class PadCollator:
    """Pad a list of tokenized records into tensors.

    ``input_ids`` get the pad token, ``attention_mask`` 0, token ``labels`` -100 (outside the
    loss) and ``position_ids`` 0. Integer labels (classification) are stacked as they are.
    """

    def __init__(self, pad_token_id: int):
        self.pad_values = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX,
                           "position_ids": 0, "token_type_ids": 0}

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in records)
        batch = {}
        for key in records[0]:
            values = [r[key] for r in records]
            if isinstance(values[0], (list, tuple)):
                pad = self.pad_values.get(key, 0)
                values = [list(v) + [pad] * (longest - len(v)) for v in values]
            batch[key] = torch.tensor(values, dtype=torch.long)
        return batch


def block_diagonal_mask(attention_mask: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask that keeps packed examples apart.

    ``attention_mask`` (B, T) marks real tokens; ``position_ids`` (B, T) restart at 0 where each packed
    example begins. Returns (B, 1, T, T): 0 where query i may attend to key j (same example, j <= i,
    j not padding), the dtype's minimum elsewhere. Each token always sees itself, so no row is empty.
    """
    length = attention_mask.shape[1]
    example = (position_ids == 0).cumsum(-1)                               # (B, T): example index per token
    allowed = example[:, :, None] == example[:, None, :]                   # (B, T, T): same example
    allowed &= torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed &= attention_mask.bool()[:, None, :]                           # never attend to padding
    allowed |= torch.eye(length, dtype=torch.bool, device=attention_mask.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def attend_within_examples(model: torch.nn.Module):
    """Make the examples of packed batches independent for ``model`` (returns the hook's handle).

    Packed records carry ``position_ids``; their batches reach the model with a 2-D padding mask,
    under which every token would also attend to the examples packed before it. A forward pre-hook
    swaps in ``block_diagonal_mask`` before the model runs. The 2-D mask stays in the batch until
    then, so the Trainer still counts non-padding tokens from it.
    """
    dtype = model.get_input_embeddings().weight.dtype

    def hook(module, args, kwargs):
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if mask is None or positions is None or mask.dim() != 2:
            return None
        return args, {**kwargs, "attention_mask": block_diagonal_mask(mask, positions, dtype)}

    return model.register_forward_pre_hook(hook, with_kwargs=True)
