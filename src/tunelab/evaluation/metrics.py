"""Metrics: registries from name to function, each documented with exactly how it is computed.

Every scalar metric takes per-example ``outputs`` and ``references`` (same length) and returns
one float, so a paired bootstrap can recompute it on resampled examples. Each also carries its
per-example statistics (``per_example``) and how their column sums give its value (``combine``):
the bootstrap scores every example once and resamples those rows, instead of rescoring texts
thousands of times (ROUGE on 50 generated replies: seconds instead of tens of minutes).

- classification: outputs and references are class ids;
- language modelling: outputs are ``(nll_sum, token_count)`` per example, references unused;
- generation: outputs are generated strings, references the expected strings.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from tunelab.tables import interval, is_number, signed

Metric = Callable[[Sequence, Sequence], float]


def decomposed(per_example: Callable[[Sequence, Sequence], np.ndarray], combine: Callable[[np.ndarray], float]):
    """Attach to a metric its per-example statistics, an (examples x k) array, and the function of their
    column sums that equals the metric (tests check it does, for every registered metric)."""
    def attach(metric: Metric) -> Metric:
        metric.per_example, metric.combine = per_example, combine
        return metric

    return attach


def _ratio(sums: np.ndarray) -> float:
    return float(sums[0] / sums[1]) if sums[1] else 0.0


def _matches(outputs: Sequence, references: Sequence) -> np.ndarray:
    return np.array([[float(o == r), 1.0] for o, r in zip(outputs, references)]).reshape(-1, 2)


def _class_counts(predictions: Sequence[int], references: Sequence[int]) -> np.ndarray:
    """Per example, one-hot true positives, false positives and false negatives over the classes seen.

    This numpy decomposition is what the bootstrap resamples: sklearn's per-call input checks cost about
    a millisecond, so calling ``f1_score`` on each of thousands of resamples would take seconds instead of
    a fraction of one. Tests check it agrees with the sklearn-computed ``macro_f1`` on every resample.
    """
    predictions, references = np.asarray(predictions), np.asarray(references)
    classes = np.union1d(predictions, references)
    predicted = predictions[:, None] == classes[None, :]
    actual = references[:, None] == classes[None, :]
    return np.concatenate([predicted & actual, predicted & ~actual, ~predicted & actual], axis=1).astype(float)


def _macro_f1_from_counts(sums: np.ndarray) -> float:
    """Macro-F1 from column sums of ``_class_counts``: classes absent from a resample are skipped."""
    tp, fp, fn = np.split(sums, 3)
    seen = tp + fp + fn > 0
    scores = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)[seen]
    return float(np.mean(scores)) if len(scores) else 0.0


# sklearn is imported inside the functions below: importing sklearn.metrics takes over a second, and
# this module is also imported by commands such as ``tunelab report`` that compute no classification metric.

@decomposed(_matches, _ratio)
def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of examples whose predicted class id equals the reference id (0.0 for no examples)."""
    from sklearn.metrics import accuracy_score

    # sklearn rejects empty inputs; an empty split scores 0 as it always has here.
    return float(accuracy_score(references, predictions)) if len(references) else 0.0


@decomposed(_class_counts, _macro_f1_from_counts)
def macro_f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Unweighted mean over classes of F1 = 2TP / (2TP + FP + FN), over every class that occurs
    in the references or the predictions; a class with no true positive scores 0.

    Takes class ids; returns a float (0.0 for no examples).
    """
    from sklearn.metrics import f1_score

    if not len(references):
        return 0.0
    # Average over the classes present in either list, not every class id: passing all ids would add a 0
    # for each class absent from both. _macro_f1_from_counts, which the bootstrap resamples, uses the
    # same set, so the interval and the reported value agree.
    seen = np.union1d(np.asarray(predictions), np.asarray(references))
    return float(f1_score(references, predictions, labels=seen, average="macro", zero_division=0))


def confusion_matrix(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> list[list[int]]:
    """Counts as a ``num_labels`` x ``num_labels`` list of int lists: row = reference id, column = predicted id."""
    from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

    if not len(references):
        return [[0] * num_labels for _ in range(num_labels)]
    with warnings.catch_warnings():
        # sklearn warns about any 1 x 1 result, even when ``labels`` says there is one class.
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        matrix = sklearn_confusion_matrix(references, predictions, labels=list(range(num_labels)))
    return matrix.tolist()


def per_class(predictions: Sequence[int], references: Sequence[int], labels: list[str]) -> dict[str, dict]:
    """Per label name: precision TP/(TP+FP), recall TP/(TP+FN) (floats, 0.0 when undefined) and
    support, the reference count (int); ``labels[i]`` names class id ``i``."""
    from sklearn.metrics import precision_recall_fscore_support

    if not len(references):
        return {name: {"precision": 0.0, "recall": 0.0, "support": 0} for name in labels}
    precision, recall, _, support = precision_recall_fscore_support(
        references, predictions, labels=list(range(len(labels))), zero_division=0)
    return {name: {"precision": float(p), "recall": float(r), "support": int(n)}
            for name, p, r, n in zip(labels, precision, recall, support)}


def _nll_rows(outputs: Sequence[tuple[float, int]], references: Sequence = ()) -> np.ndarray:
    return np.array([[float(o[0]), float(o[1])] for o in outputs]).reshape(-1, 2)


def _mean_nll(sums: np.ndarray) -> float:
    return float(sums[0] / sums[1]) if sums[1] else float("nan")


@decomposed(_nll_rows, _mean_nll)
def mean_loss(outputs: Sequence[tuple[float, int]], references: Sequence = ()) -> float:
    """Token-weighted mean negative log-likelihood (nats): sum of NLL over all evaluated tokens
    divided by the number of evaluated tokens (prompt tokens masked with -100 are not evaluated)."""
    nll = sum(o[0] for o in outputs)
    tokens = sum(o[1] for o in outputs)
    return nll / tokens if tokens else float("nan")


@decomposed(_nll_rows, lambda sums: math.exp(_mean_nll(sums)))
def perplexity(outputs: Sequence[tuple[float, int]], references: Sequence = ()) -> float:
    """exp(token-weighted mean NLL) over every evaluated token of every example."""
    return math.exp(mean_loss(outputs))


@lru_cache(maxsize=1)
def _bleu_scorer():
    from sacrebleu.metrics import BLEU

    return BLEU()


def _bleu_counts(outputs: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu's sufficient statistics per example: lengths, matched and total n-grams (n = 1..4)."""
    stats = _bleu_scorer()._extract_corpus_statistics(list(outputs), [list(references)])
    return np.array(stats, dtype=float).reshape(len(outputs), -1)


def _bleu_from_counts(sums: np.ndarray) -> float:
    return float(_bleu_scorer()._compute_score_from_stats([int(x) for x in sums]).score)


@decomposed(_bleu_counts, _bleu_from_counts)
def bleu(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, up to 4-grams, brevity penalty), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(outputs), [list(references)]).score)


@lru_cache(maxsize=None)
def _rouge_scorer(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def _rouge(kind: str) -> Metric:
    def per_example(outputs: Sequence[str], references: Sequence[str]) -> np.ndarray:
        scorer = _rouge_scorer(kind)
        return np.array([[scorer.score(ref, out)[kind].fmeasure, 1.0]
                         for out, ref in zip(outputs, references)]).reshape(-1, 2)

    @decomposed(per_example, _ratio)
    def score(outputs: Sequence[str], references: Sequence[str]) -> float:
        return _ratio(per_example(outputs, references).sum(0))

    score.__doc__ = (f"Mean over examples of the {kind.upper()} F-measure (rouge-score, Porter stemming), 0-1: "
                     + {"rouge1": "unigram overlap.", "rouge2": "bigram overlap.",
                        "rougeL": "longest common subsequence."}[kind])
    return score


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def _exact_rows(outputs: Sequence[str], references: Sequence[str]) -> np.ndarray:
    return _matches([_normalized(o) for o in outputs], [_normalized(r) for r in references])


@decomposed(_exact_rows, _ratio)
def exact_match(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Share of examples whose output equals the reference after lower-casing and collapsing whitespace."""
    return _ratio(_exact_rows(outputs, references).sum(0))


CLASSIFICATION_METRICS: dict[str, Metric] = {"accuracy": accuracy, "macro_f1": macro_f1}
LANGUAGE_MODEL_METRICS: dict[str, Metric] = {"perplexity": perplexity, "mean_loss": mean_loss}
GENERATION_METRICS: dict[str, Metric] = {"bleu": bleu, "rouge1": _rouge("rouge1"), "rouge2": _rouge("rouge2"),
                                         "rougeL": _rouge("rougeL"), "exact_match": exact_match}
LOWER_IS_BETTER = {"perplexity", "mean_loss"}


def bootstrap_interval(metric: Metric, outputs: Sequence, references: Sequence, samples: int,
                       seed: int) -> tuple[float, float]:
    """95% percentile interval of the metric itself over ``samples`` seeded resamples of the examples."""
    values = resampled(metric, outputs, references, _resamples(len(references), samples, seed))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(metric: Metric, base: Sequence, tuned: Sequence, references: Sequence,
                     samples: int, seed: int) -> tuple[float, float]:
    """95% interval of metric(tuned) - metric(base), resampling examples with replacement, the
    same resample for both (paired), ``samples`` times with a seeded generator."""
    indices = _resamples(len(references), samples, seed)
    deltas = resampled(metric, tuned, references, indices) - resampled(metric, base, references, indices)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


def _resamples(n: int, samples: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(samples)]


def resampled(metric: Metric, outputs: Sequence, references: Sequence, indices: list[np.ndarray]) -> np.ndarray:
    """The metric on each resample of the examples: from per-example statistics when the metric has
    them (each example scored once), else by calling it on every resample."""
    if getattr(metric, "per_example", None) is None:
        return np.array([metric([outputs[i] for i in idx], [references[i] for i in idx]) for idx in indices])
    stats = metric.per_example(outputs, references)
    return np.array([metric.combine(stats[idx].sum(0)) for idx in indices])


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


def compare(metrics: dict, base: list, tuned: list, references: list, samples: int, seed: int) -> dict:
    """Base, tuned, delta, the paired-bootstrap 95% CI of the delta and the tuned score's own CI."""
    table = {}
    for name, metric in metrics.items():
        b, t = metric(base, references), metric(tuned, references)
        low, high = paired_bootstrap(metric, base, tuned, references, samples, seed)
        table[name] = {"base": b, "tuned": t, "delta": t - b, "ci95": [low, high],
                       "tuned_ci95": list(bootstrap_interval(metric, tuned, references, samples, seed)),
                       "lower_is_better": name in LOWER_IS_BETTER}
    return table
