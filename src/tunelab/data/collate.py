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
