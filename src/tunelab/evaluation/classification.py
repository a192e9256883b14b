"""Classification evaluation: the tuned classifier vs a linear probe on the frozen base encoder."""

from __future__ import annotations

from tunelab.evaluation.metrics import CLASSIFICATION_METRICS, compare, confusion_matrix, per_class
from tunelab.evaluation.probe import probe_predictions
from tunelab.inference import LoadedRun, class_probabilities
from tunelab.models.resolve import resolve_model


def evaluate_classification(loaded: LoadedRun, examples: list[dict], split: str) -> dict:
    cfg, labels = loaded.cfg, loaded.labels
    label2id = {name: i for i, name in enumerate(labels)}
    texts = [e["text"] for e in examples]
    references = [label2id[e["label"]] for e in examples]
    probs = class_probabilities(loaded.model, loaded.tokenizer, texts, cfg.data.max_length, cfg.eval.batch_size)
    tuned = probs.argmax(-1).tolist()
    train = loaded.run.read_split("train")
    base = probe_predictions(resolve_model(cfg.model.name, cfg.model.allow_pickle_weights), [e["text"] for e in train],
                             [label2id[e["label"]] for e in train], texts, len(labels), cfg.data.max_length)
    return {
        "base_kind": "linear probe on the frozen base encoder (trained on the train split)",
        "metrics": compare(CLASSIFICATION_METRICS, base, tuned, references, cfg.eval.bootstrap_samples,
                           cfg.eval_seed()),
        "per_class": {"base": per_class(base, references, labels), "tuned": per_class(tuned, references, labels)},
        "confusion_matrix": {"labels": labels, "base": confusion_matrix(base, references, len(labels)),
                             "tuned": confusion_matrix(tuned, references, len(labels))},
        "predictions": [{"input": t, "reference": e["label"], "base_output": labels[b], "tuned_output": labels[p],
                         "tuned_probability": round(float(probs[i, p]), 6)}
                        for i, (t, e, b, p) in enumerate(zip(texts, examples, base, tuned))],
    }
