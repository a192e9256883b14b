"""Metrics: registries from name to function, each documented with exactly how it is computed.

Every scalar metric takes per-example ``outputs`` and ``references`` (same length) and returns
one float, so a paired bootstrap can recompute it on resampled examples:

- classification: outputs and references are class ids;
- language modelling: outputs are ``(nll_sum, token_count)`` per example, references unused;
- generation: outputs are generated strings, references the expected strings.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from tunelab.tables import interval, is_number, signed

Metric = Callable[[Sequence, Sequence], float]


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of examples whose predicted class id equals the reference id."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    return float(np.mean(predictions == references)) if len(references) else 0.0


def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Unweighted mean over classes of F1 = 2TP / (2TP + FP + FN), over every class that occurs
    in the references or the predictions; a class with no true positive scores 0."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    scores = []
    for c in np.union1d(predictions, references):
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> list[list[int]]:
    """Counts: row = reference class id, column = predicted class id."""
    matrix = np.zeros((num_labels, num_labels), dtype=int)
    for p, r in zip(predictions, references):
        matrix[r, p] += 1
    return matrix.tolist()


def per_class(predictions: Sequence[int], references: Sequence[int], labels: list[str]) -> dict[str, dict]:
    """Precision TP/(TP+FP), recall TP/(TP+FN) and support (reference count) for each class (0 when undefined)."""
    matrix = np.asarray(confusion_matrix(predictions, references, len(labels)))
    report = {}
    for i, name in enumerate(labels):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        report[name] = {"precision": float(tp / predicted) if predicted else 0.0,
                        "recall": float(tp / support) if support else 0.0, "support": int(support)}
    return report


def mean_loss(outputs: Sequence[tuple[float, int]], references: Sequence = ()) -> float:
    """Token-weighted mean negative log-likelihood (nats): sum of NLL over all evaluated tokens
    divided by the number of evaluated tokens (prompt tokens masked with -100 are not evaluated)."""
    nll = sum(o[0] for o in outputs)
    tokens = sum(o[1] for o in outputs)
    return nll / tokens if tokens else float("nan")


def perplexity(outputs: Sequence[tuple[float, int]], references: Sequence = ()) -> float:
    """exp(token-weighted mean NLL) over every evaluated token of every example."""
    return math.exp(mean_loss(outputs))


def bleu(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, up to 4-grams, brevity penalty), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(outputs), [list(references)]).score)


@lru_cache(maxsize=None)
def _rouge_scorer(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def _rouge(kind: str) -> Metric:
    def score(outputs: Sequence[str], references: Sequence[str]) -> float:
        scorer = _rouge_scorer(kind)
        values = [scorer.score(ref, out)[kind].fmeasure for out, ref in zip(outputs, references)]
        return float(np.mean(values)) if values else 0.0

    score.__doc__ = (f"Mean over examples of the {kind.upper()} F-measure (rouge-score, Porter stemming), 0-1: "
                     + {"rouge1": "unigram overlap.", "rouge2": "bigram overlap.",
                        "rougeL": "longest common subsequence."}[kind])
    return score


def exact_match(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Share of examples whose output equals the reference after lower-casing and collapsing whitespace."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    return float(np.mean([norm(o) == norm(r) for o, r in zip(outputs, references)])) if outputs else 0.0


CLASSIFICATION_METRICS: dict[str, Metric] = {"accuracy": accuracy, "macro_f1": macro_f1}
LANGUAGE_MODEL_METRICS: dict[str, Metric] = {"perplexity": perplexity, "mean_loss": mean_loss}
GENERATION_METRICS: dict[str, Metric] = {"bleu": bleu, "rouge1": _rouge("rouge1"), "rouge2": _rouge("rouge2"),
                                         "rougeL": _rouge("rougeL"), "exact_match": exact_match}
LOWER_IS_BETTER = {"perplexity", "mean_loss"}


def classification_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for the Trainer: logits -> argmax -> every classification metric."""
    logits, references = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1)
    return {name: fn(predictions, references) for name, fn in CLASSIFICATION_METRICS.items()}


def bootstrap_interval(metric: Metric, outputs: Sequence, references: Sequence, samples: int,
                       seed: int) -> tuple[float, float]:
    """95% percentile interval of the metric itself over ``samples`` seeded resamples of the examples."""
    rng = np.random.default_rng(seed)
    n = len(references)
    values = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        values.append(metric([outputs[i] for i in idx], [references[i] for i in idx]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(metric: Metric, base: Sequence, tuned: Sequence, references: Sequence,
                     samples: int, seed: int) -> tuple[float, float]:
    """95% interval of metric(tuned) - metric(base), resampling examples with replacement, the
    same resample for both (paired), ``samples`` times with a seeded generator."""
    rng = np.random.default_rng(seed)
    n = len(references)
    deltas = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        refs = [references[i] for i in idx]
        deltas.append(metric([tuned[i] for i in idx], refs) - metric([base[i] for i in idx], refs))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


# --- tuned against base: which way is worse -------------------------------------------------------------

def lower_is_better(name: str, row: dict | None = None) -> bool:
    """Whether a smaller value of metric ``name`` is better (eval.json says so; older files don't)."""
    if row is not None and "lower_is_better" in row:
        return bool(row["lower_is_better"])
    return name in LOWER_IS_BETTER


def worse_than_base(metric: str, delta, ci, lower: bool) -> dict | None:
    """How tuned is worse than base on ``metric`` (delta = tuned - base), or None when it is not.

    "Significantly" only when the 95% CI of the delta lies wholly on the bad side of 0.
    """
    if not is_number(delta) or not (delta > 0 if lower else delta < 0):
        return None
    bounds = list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(is_number, ci)) else None
    significant = bool(bounds) and (bounds[0] > 0 if lower else bounds[1] < 0)
    return {"metric": metric, "delta": delta, "ci95": bounds, "lower_is_better": lower, "significant": significant}


def worse_sentence(finding: dict, who: str = "tuned") -> str:
    """One plain sentence: e.g. 'tuned is significantly worse than base on perplexity (delta +2.1, ...)'."""
    how = "significantly worse" if finding["significant"] else "worse"
    ci = f", 95% CI {interval(finding['ci95'])}" if finding["ci95"] else ""
    direction = "lower" if finding["lower_is_better"] else "higher"
    sentence = (f"{who} is {how} than base on {finding['metric']} (delta {signed(finding['delta'])}{ci}; "
                f"{direction} is better)")
    if finding["ci95"] and not finding["significant"]:
        sentence += "; the CI includes 0, so this may be noise"
    return sentence + "."


def eval_findings(report: dict) -> list[dict]:
    """Every metric of an eval.json on which tuned came out worse than base."""
    found = []
    for name, row in report.get("metrics", {}).items():
        finding = worse_than_base(name, row.get("delta"), row.get("ci95"), lower_is_better(name, row))
        if finding:
            found.append(finding)
    return found
