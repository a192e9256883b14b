"""``compute_metrics`` for the Trainer on classification: eval logits -> accuracy and macro-F1.

Written on sklearn here rather than imported from ``tunelab.evaluation``, which is a later stage:
training only imports from stages below it. The numbers match ``tunelab.evaluation.metrics``
(macro-F1 over the classes present in the predictions or the references).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(eval_prediction) -> dict[str, float]:
    """Take a ``transformers.EvalPrediction`` (``predictions``: logits of shape examples x classes, or a
    tuple whose first item is; ``label_ids``: class ids) and return ``{"accuracy", "macro_f1"}`` as floats."""
    logits, references = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        # Models asked for extra outputs (hidden states, attentions) return them after the logits.
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1).ravel()
    references = np.asarray(references).ravel()
    if not len(references):
        return {"accuracy": 0.0, "macro_f1": 0.0}
    seen = np.union1d(predictions, references)
    return {"accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, labels=seen, average="macro", zero_division=0))}
