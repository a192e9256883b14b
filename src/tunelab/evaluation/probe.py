"""The honest baseline for classification: a linear probe on the frozen base encoder.

An untrained classification head only measures chance. The probe instead trains a
multinomial logistic regression on the base model's sentence embeddings (mean of the last
hidden states over real tokens, the pooling all-MiniLM-L6-v2 was trained for) using the same
training split, so "tuned minus base" measures what fine-tuning the encoder added.
"""

from __future__ import annotations

import torch


def embed(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled last hidden states, shape (len(texts), hidden)."""
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state                      # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)    # (B, T, 1)
            rows.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(rows)


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_labels: int, l2: float = 1e-3,
              steps: int = 200) -> torch.nn.Linear:
    """Logistic regression (softmax + L2) fitted with full-batch L-BFGS; deterministic."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(features.shape[1], num_labels)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(features), labels) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def fit_base_probe(model_location: str, train_texts: list[str], train_labels: list[int], num_labels: int,
                   max_length: int):
    """Fit the probe on the frozen encoder at ``model_location``; return ``texts -> class probabilities``."""
    from transformers import AutoModel, AutoTokenizer

    from tunelab.models.loading import quietly
    from tunelab.models.resolve import safetensors_only

    tokenizer = AutoTokenizer.from_pretrained(model_location)
    encoder = quietly(AutoModel.from_pretrained, model_location, dtype=torch.float32,
                     use_safetensors=safetensors_only(model_location)).eval()
    probe = fit_probe(embed(encoder, tokenizer, train_texts, max_length), torch.tensor(train_labels), num_labels)

    def probabilities(texts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(probe(embed(encoder, tokenizer, texts, max_length)), -1)
    return probabilities


def probe_predictions(model_location: str, train_texts: list[str], train_labels: list[int], texts: list[str],
                      num_labels: int, max_length: int) -> list[int]:
    """Fit the probe on the train split; return its predicted class id for each of ``texts``."""
    probabilities = fit_base_probe(model_location, train_texts, train_labels, num_labels, max_length)
    return probabilities(texts).argmax(-1).tolist()
