"""Metrics: a registry from name to function, each documented with exactly how it is computed."""

from __future__ import annotations

from typing import Callable

import numpy as np


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    """Share of examples whose predicted class id equals the reference id."""
    return float(np.mean(predictions == references)) if len(references) else 0.0


def macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Unweighted mean over classes of F1 = 2PR / (P + R), over every class that occurs in the
    references or the predictions; a class with no true positives scores 0."""
    classes = np.union1d(predictions, references)
    scores = []
    for c in classes:
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
}


def classification_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for the Trainer: logits -> argmax -> every classification metric."""
    logits, references = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1)
    return {name: fn(predictions, references) for name, fn in CLASSIFICATION_METRICS.items()}
