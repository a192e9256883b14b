"""Matmul FLOPs of a training run, counted as `train_throughput.py`'s docstring states, for its MFU figures."""

from __future__ import annotations


def flops_per_token(model_path: str, causal: bool, full: bool = False, rank: int = 8) -> dict:
    """Matmul FLOPs per token (see train_throughput.py's docstring) for this contestant's method on this model:
    a causal LM's output layer runs on every token, a classifier's head once per sequence (left out)."""
    import torch.nn as nn
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(model_path)
    per_token = [m for name, m in model.named_modules()
                 if isinstance(m, nn.Linear) and not any(k in name for k in ("pooler", "classifier", "score"))]
    weights = sum(m.in_features * m.out_features for m in per_token)
    if full:
        linear = 6 * weights
    else:  # LoRA r on every linear layer but the output layer: frozen weights plus trained A (r x in), B (out x r)
        adapted = [m for m in per_token if m is not model.get_output_embeddings()]
        linear = 4 * weights + 6 * sum(rank * (m.in_features + m.out_features) for m in adapted)
    return {"linear": linear, "attention_per_position": 12 * config.num_hidden_layers * config.hidden_size,
            "matmul_weights": weights}


def training_flops(flops: dict, lengths: list[int], epochs: float) -> float:
    return epochs * sum(flops["linear"] * n + flops["attention_per_position"] * n * n for n in lengths)
