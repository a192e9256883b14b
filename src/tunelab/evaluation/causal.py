"""Causal-LM evaluation: the tuned model vs the base model on completion loss and generations."""

from __future__ import annotations

import torch

from tunelab.data.tokenize import IGNORE_INDEX, to_messages
from tunelab.evaluation.metrics import GENERATION_METRICS, LANGUAGE_MODEL_METRICS, compare
from tunelab.inference import LoadedRun, base_model, generate
from tunelab.models.causal_loss import labelled_nll
from tunelab.models.loading import context_window


def evaluate_causal(loaded: LoadedRun, examples: list[dict], split: str) -> dict:
    cfg = loaded.cfg
    records = split_records(loaded, split, len(examples))
    samples, seed = cfg.eval.bootstrap_samples, cfg.eval_seed()
    generative = loaded.format in ("instruction", "chat")
    prompts = [to_messages(e)[:-1] for e in examples] if generative else []
    references = [to_messages(e)[-1]["content"] for e in examples] if generative else []

    tuned_nll = sequence_nll(loaded.model, records, cfg.eval.batch_size)
    tuned_text = generate(loaded, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size, progress="tuned: generating")
    with base_model(loaded) as base:
        base_nll = sequence_nll(base, records, cfg.eval.batch_size)
        base_text = generate(loaded, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size, model=base,
                             progress="base: generating")

    metrics = compare(LANGUAGE_MODEL_METRICS, base_nll, tuned_nll, [None] * len(records), samples, seed)
    if generative:
        metrics.update(compare(GENERATION_METRICS, base_text, tuned_text, references, samples, seed))
        predictions = [{"input": p[-1]["content"], "reference": r, "base_output": b, "tuned_output": t}
                       for p, r, b, t in zip(prompts, references, base_text, tuned_text)]
    else:
        predictions = [{"input": loaded.tokenizer.decode(rec["input_ids"])[:300], "reference": None,
                        "base_loss": b[0] / max(b[1], 1), "tuned_loss": t[0] / max(t[1], 1)}
                       for rec, b, t in zip(records, base_nll, tuned_nll)]
    return {"base_kind": "the base model without fine-tuning", "metrics": metrics, "predictions": predictions}


def split_records(loaded: LoadedRun, split: str, examples: int) -> list[dict]:
    """The tokenized records of ``split`` matching its first ``examples`` examples (all of them for
    plain text, where chunking makes records and examples differ)."""
    import datasets

    records = list(datasets.load_from_disk(str(loaded.run.tokenized_dir))[split])
    return records[:examples] if loaded.format != "text" else records


def sequence_nll(model, records: list[dict], batch_size: int) -> list[tuple[float, int]]:
    """(sum of NLL in nats, evaluated tokens) per record; labels -100 are not evaluated.

    Records longer than the model's context are scored with a sliding window (stride half the
    window), each token scored once with as much left context as the window allows.
    """
    window = context_window(model)
    results: list[tuple[float, int]] = [(0.0, 0)] * len(records)
    short = [i for i, r in enumerate(records) if len(r["input_ids"]) <= window]
    for start in range(0, len(short), batch_size):
        idx = short[start:start + batch_size]
        for i, value in zip(idx, _batch_nll(model, [records[i] for i in idx])):
            results[i] = value
    for i, record in enumerate(records):
        if len(record["input_ids"]) > window:
            results[i] = _windowed_nll(model, record["input_ids"], record["labels"], window)
    return results


def _batch_nll(model, records: list[dict]) -> list[tuple[float, int]]:
    longest = max(len(r["input_ids"]) for r in records)
    ids = torch.tensor([r["input_ids"] + [0] * (longest - len(r["input_ids"])) for r in records])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"])) for r in records])
    labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (longest - len(r["labels"])) for r in records])
    with torch.inference_mode():
        return labelled_nll(model, ids, mask, labels)


def _windowed_nll(model, input_ids: list[int], labels: list[int], window: int) -> tuple[float, int]:
    stride, total, count, scored_until = max(1, window // 2), 0.0, 0, 0
    for begin in range(0, len(input_ids), stride):
        end = min(begin + window, len(input_ids))
        piece = labels[begin:end]
        # Only score tokens no earlier window scored; the rest is context.
        keep_from = max(scored_until - begin, 1 if begin else 0)
        piece = [IGNORE_INDEX] * keep_from + piece[keep_from:]
        ids = torch.tensor([input_ids[begin:end]])
        with torch.inference_mode():
            nll, n = labelled_nll(model, ids, torch.ones_like(ids), torch.tensor([piece]))[0]
        total, count, scored_until = total + nll, count + n, end
        if end == len(input_ids):
            break
    return total, count
