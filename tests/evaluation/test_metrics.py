"""Metric values against hand-computed cases; the bootstrap is seeded and covers the truth."""

import math

import numpy as np
import pytest
import torch

from tunelab.evaluation.metrics import (
    GENERATION_METRICS,
    accuracy,
    bleu,
    confusion_matrix,
    exact_match,
    macro_f1,
    mean_loss,
    paired_bootstrap,
    per_class,
    perplexity,
)


def test_macro_f1_and_per_class_of_a_known_confusion_matrix():
    # references / predictions giving the confusion matrix [[2, 1], [0, 3]] (rows = reference).
    refs = [0, 0, 0, 1, 1, 1]
    preds = [0, 0, 1, 1, 1, 1]
    assert confusion_matrix(preds, refs, 2) == [[2, 1], [0, 3]]
    f1_a = 2 * 2 / (2 * 2 + 0 + 1)   # TP 2, FP 0, FN 1 -> 0.8
    f1_b = 2 * 3 / (2 * 3 + 1 + 0)   # TP 3, FP 1, FN 0 -> 6/7
    assert macro_f1(preds, refs) == pytest.approx((f1_a + f1_b) / 2)
    assert accuracy(preds, refs) == pytest.approx(5 / 6)
    report = per_class(preds, refs, ["a", "b"])
    assert report["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "support": 3}
    assert report["b"]["precision"] == pytest.approx(3 / 4) and report["b"]["recall"] == 1.0


def test_perplexity_of_a_uniform_distribution_is_the_vocabulary_size():
    from tunelab.models.causal_loss import next_token_targets, summed_loss

    vocab = 50
    logits = torch.zeros(2, 6, vocab)                        # uniform over the vocabulary
    labels = torch.tensor([[-100, -100, 3, 4, 5, 6], [-100, 1, 2, 3, -100, -100]])
    rows = [next_token_targets(logits[i:i + 1], labels[i:i + 1]) for i in range(2)]
    per_example = [(float(summed_loss(torch.nn.Identity(), h, t)), len(t)) for h, t in rows]
    assert [n for _, n in per_example] == [4, 3]              # first position is never predicted
    assert perplexity(per_example) == pytest.approx(vocab, rel=1e-5)
    assert mean_loss(per_example) == pytest.approx(math.log(vocab), rel=1e-6)


def test_perplexity_is_token_weighted():
    # 10 nats over 4 tokens: 2.5 per token; averaging the two examples' means would give 2.0.
    assert mean_loss([(1.0, 1), (9.0, 3)]) == pytest.approx(2.5)
    assert perplexity([(1.0, 1), (9.0, 3)]) == pytest.approx(math.exp(2.5))


def test_bleu_and_rouge_of_known_pairs():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["completely different words here"], ["the cat sat on the mat"]) < 1.0
    rouge1, rouge2, rouge_l = (GENERATION_METRICS[k] for k in ("rouge1", "rouge2", "rougeL"))
    # "the cat" vs "the cat sat": unigram P 2/2, R 2/3 -> F 0.8; bigram P 1/1, R 1/2 -> F 2/3
    assert rouge1(["the cat"], ["the cat sat"]) == pytest.approx(0.8)
    assert rouge2(["the cat"], ["the cat sat"]) == pytest.approx(2 / 3)
    assert rouge_l(["cat the"], ["the cat"]) == pytest.approx(0.5)
    assert exact_match(["  Cancel_Order "], ["cancel_order"]) == 1.0


def test_paired_bootstrap_is_seeded_and_contains_the_true_delta():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 2, 400).tolist()
    base = [r if rng.random() < 0.70 else 1 - r for r in refs]    # about 70% right
    tuned = [r if rng.random() < 0.85 else 1 - r for r in refs]   # about 85% right
    first = paired_bootstrap(accuracy, base, tuned, refs, 500, seed=1)
    assert first == paired_bootstrap(accuracy, base, tuned, refs, 500, seed=1)
    assert first != paired_bootstrap(accuracy, base, tuned, refs, 500, seed=2)
    low, high = first
    assert low < 0.15 < high and low > 0                            # true delta 0.15; clearly positive
    observed = accuracy(tuned, refs) - accuracy(base, refs)
    assert low < observed < high


@pytest.mark.parametrize("name", ["accuracy", "macro_f1", "perplexity", "mean_loss", "bleu", "rouge1", "rouge2",
                                  "rougeL", "exact_match"])
def test_per_example_statistics_give_the_metric_on_every_resample(name):
    import numpy as np

    from tunelab.evaluation.metrics import CLASSIFICATION_METRICS, GENERATION_METRICS, LANGUAGE_MODEL_METRICS

    metric = {**CLASSIFICATION_METRICS, **GENERATION_METRICS, **LANGUAGE_MODEL_METRICS}[name]
    rng = np.random.default_rng(0)
    words = ["the", "order", "ships", "today", "refund", "in", "5", "days", "sorry", "label"]
    if name in CLASSIFICATION_METRICS:
        outputs, references = list(rng.integers(0, 4, 30)), list(rng.integers(0, 4, 30))
    elif name in LANGUAGE_MODEL_METRICS:
        outputs, references = [(float(rng.uniform(1, 20)), int(rng.integers(1, 9))) for _ in range(30)], [None] * 30
    else:
        def text():
            return " ".join(rng.choice(words, int(rng.integers(1, 9))))
        references = [text() for _ in range(30)]
        outputs = [r if i % 7 == 0 else text() for i, r in enumerate(references)]
    stats = metric.per_example(outputs, references)
    for _ in range(20):
        idx = rng.integers(0, 30, 30)
        want = metric([outputs[i] for i in idx], [references[i] for i in idx])
        assert metric.combine(stats[idx].sum(0)) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_rouge_and_exact_match_have_the_values_worked_out_by_hand():
    # Their scores are the combined per-example statistics, so they are checked against values known
    # independently of that code: identical texts score 1, disjoint ones 0, F-measure of 1 shared word
    # of 2 and 3 words is 2 * (1/2 * 1/3) / (1/2 + 1/3) = 0.4.
    from tunelab.evaluation.metrics import GENERATION_METRICS

    outputs = ["the cat sat", "a dog", "red car"]
    references = ["the cat sat", "the cat", "red bike went"]
    assert GENERATION_METRICS["rouge1"](outputs, references) == pytest.approx((1 + 0 + 0.4) / 3)
    assert GENERATION_METRICS["rougeL"](outputs, references) == pytest.approx((1 + 0 + 0.4) / 3)
    assert GENERATION_METRICS["rouge2"](outputs, references) == pytest.approx(1 / 3)
    assert GENERATION_METRICS["exact_match"](["Hello  World", "x", "a b"], ["hello world", "y", "A B "]) == \
        pytest.approx(2 / 3)


# refs/preds over 4 classes: class 2 ("c") is never predicted, class 3 ("d") occurs in neither list.
# Confusion matrix (rows = reference): a [1, 1, 0, 0], b [0, 2, 0, 0], c [1, 0, 0, 0], d [0, 0, 0, 0].
ABSENT_REFS = [0, 0, 1, 1, 2]
ABSENT_PREDS = [0, 1, 1, 1, 0]
# F1 = 2TP / (2TP + FP + FN): a: TP 1, FP 1, FN 1 -> 0.5; b: TP 2, FP 1, FN 0 -> 0.8; c: TP 0 -> 0.
# d occurs in neither list, so it is left out of the mean rather than counted as 0.
ABSENT_MACRO_F1 = (0.5 + 0.8 + 0.0) / 3


def test_classification_metrics_with_an_absent_class_and_a_class_never_predicted():
    import json
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")          # zero_division=0: undefined precision is 0, not a warning
        assert accuracy(ABSENT_PREDS, ABSENT_REFS) == pytest.approx(3 / 5)
        assert macro_f1(ABSENT_PREDS, ABSENT_REFS) == pytest.approx(ABSENT_MACRO_F1)
        matrix = confusion_matrix(ABSENT_PREDS, ABSENT_REFS, 4)
        report = per_class(ABSENT_PREDS, ABSENT_REFS, ["a", "b", "c", "d"])
    assert matrix == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert report == {
        "a": {"precision": pytest.approx(1 / 2), "recall": pytest.approx(1 / 2), "support": 2},
        "b": {"precision": pytest.approx(2 / 3), "recall": 1.0, "support": 2},
        "c": {"precision": 0.0, "recall": 0.0, "support": 1},       # never predicted: precision 0/0 -> 0
        "d": {"precision": 0.0, "recall": 0.0, "support": 0},       # absent: both undefined -> 0
    }
    # Plain Python numbers, as eval.json needs.
    assert type(accuracy(ABSENT_PREDS, ABSENT_REFS)) is float and type(macro_f1(ABSENT_PREDS, ABSENT_REFS)) is float
    assert all(type(n) is int for row in matrix for n in row)
    assert all(type(v) in (float, int) for row in report.values() for v in row.values())
    json.dumps({"matrix": matrix, "report": report})
    # The bootstrap's per-example statistics give the same macro-F1.
    assert macro_f1.combine(macro_f1.per_example(ABSENT_PREDS, ABSENT_REFS).sum(0)) == pytest.approx(ABSENT_MACRO_F1)
    # No examples: zeros, as before (sklearn itself rejects empty inputs).
    assert (accuracy([], []), macro_f1([], [])) == (0.0, 0.0)
    assert confusion_matrix([], [], 2) == [[0, 0], [0, 0]]
    assert per_class([], [], ["a"]) == {"a": {"precision": 0.0, "recall": 0.0, "support": 0}}


def test_trainer_metrics_from_logits():
    import subprocess
    import sys
    from types import SimpleNamespace

    from tunelab.training.trainer_metrics import classification_metrics

    logits = np.full((5, 4), -1.0)
    logits[np.arange(5), ABSENT_PREDS] = 2.0                    # argmax gives ABSENT_PREDS
    labels = np.array(ABSENT_REFS)
    got = classification_metrics(SimpleNamespace(predictions=logits, label_ids=labels))
    assert got == {"accuracy": pytest.approx(3 / 5), "macro_f1": pytest.approx(ABSENT_MACRO_F1)}
    assert all(type(v) is float for v in got.values())
    # Extra model outputs come after the logits in a tuple.
    hidden = np.zeros((5, 3, 8))
    assert classification_metrics(SimpleNamespace(predictions=(logits, hidden), label_ids=labels)) == got
    # Same numbers as the evaluation stage's metrics, which training must not import.
    assert got == {"accuracy": pytest.approx(accuracy(ABSENT_PREDS, ABSENT_REFS)),
                   "macro_f1": pytest.approx(macro_f1(ABSENT_PREDS, ABSENT_REFS))}
    check = ("import sys, tunelab.training.trainer_metrics; "
             "sys.exit(any(m.startswith('tunelab.evaluation') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0
