"""Should you fine-tune at all? The cheaper approaches vs fine-tuning, measured on your data.

    tunelab advise CONFIG [KEY=VALUE ...] [--tolerance 0.02]

Classification (an encoder has no prompt, so the cheap approaches are its embeddings):
- prompting: zero-shot label-name similarity: the text and each label name embedded by the base
  encoder, the most similar label wins;
- retrieval: a 5-nearest-neighbour vote over the embedded training set.
Causal LM (a chat model, so the approaches are what goes into its prompt):
- prompting: zero-shot, the base model answers the message;
- few-shot: the same 2 training examples before every message, as earlier turns;
- retrieval (the RAG idea): the 2 training examples nearest to the message (found with the built-in
  MiniLM sentence encoder) as earlier turns.
Both: fine-tuning, a LoRA run with the config's training settings, answering with no examples.
Rule: take the best quality; if a simpler approach (in the order above) is within ``tolerance``
of it, recommend the simpler one, since it needs no training and no new model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tunelab.config import TunelabConfig, load_config
from tunelab.rundir import RunDir, study_path, write_json
from tunelab.tables import text_table

ORDER = ("prompting", "few-shot", "retrieval", "fine-tuning")   # simplest first
WHAT = {
    "classification": {"prompting": "zero-shot label-name similarity (base encoder)",
                       "retrieval": "5-nearest-neighbour vote over the embedded training set",
                       "fine-tuning": "LoRA"},
    "causal_lm": {"prompting": "zero-shot: the base model answers", "few-shot": "2 fixed training examples as turns",
                  "retrieval": "the 2 nearest training examples as turns", "fine-tuning": "LoRA, no examples"},
}
SHOTS = 2
MAX_EXAMPLES = 200


def run(config: str, overrides: list[str], tolerance: float = 0.02, out: str | None = None,
        echo: Callable[[str], None] = lambda _: None) -> dict:
    from tunelab.training import train

    cfg = load_config(config, overrides)
    root = Path(out or f"{cfg.output.dir}-advise")
    tuned_cfg = cfg.model_copy(deep=True)
    tuned_cfg.method.name = "lora" if cfg.method.name not in ("lora", "dora", "rslora", "qlora") else cfg.method.name
    tuned_cfg.output.dir, tuned_cfg.output.overwrite = str(root / "fine-tuning"), True
    echo(f"[1/3] fine-tuning ({tuned_cfg.method.name}) ...")
    run_dir = train.run(tuned_cfg)
    run = RunDir(run_dir)
    train_rows, test_rows = run.read_split("train"), run.read_split(cfg.eval.split)
    test_rows = test_rows[: cfg.eval.max_examples or MAX_EXAMPLES]
    measure = _classification if cfg.task == "classification" else _causal
    echo("[2/3] the cheaper approaches with the base model ...")
    rows = measure(cfg, run_dir, train_rows, test_rows)
    for row in rows:
        row["what"] = WHAT[cfg.task][row["approach"]]
    echo("[3/3] comparing ...")
    report = {"config": str(config), "task": cfg.task, "split": cfg.eval.split, "examples": len(test_rows),
              "metric": rows[0]["metric"], "tolerance": tolerance, "approaches": rows}
    report["recommendation"] = recommend(rows, tolerance)
    root.mkdir(parents=True, exist_ok=True)
    write_json(study_path(root, "advise"), report)
    report["dir"] = str(root)
    return report


def recommend(rows: list[dict], tolerance: float) -> dict:
    best = max(rows, key=lambda r: r["quality"])
    present = [name for name in ORDER if any(r["approach"] == name for r in rows)]
    for name in present:
        row = next(r for r in rows if r["approach"] == name)
        if best["quality"] - row["quality"] <= tolerance:
            reason = (f"{name} scores {row['quality']:.4g} {row['metric']}, within {tolerance} of the best "
                      f"({best['approach']}, {best['quality']:.4g})" if row is not best else
                      f"{name} is the only approach that reaches {best['quality']:.4g} {row['metric']}; the simpler "
                      f"ones fall short by more than {tolerance}")
            return {"approach": name, "rule": f"best quality; prefer simpler ({' < '.join(present)}) "
                                              f"when within {tolerance}", "reason": reason}
    raise AssertionError("unreachable: the best row is always within tolerance of itself")


def _latency_ms(predict_one: Callable[[str], object], texts: list[str], repeats: int = 10) -> float:
    timings = []
    for text in texts[:repeats]:
        started = time.perf_counter()
        predict_one(text)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.median(timings))


def _classification(cfg: TunelabConfig, run_dir: Path, train_rows: list[dict], test_rows: list[dict]) -> list[dict]:
    from transformers import AutoModel, AutoTokenizer

    from tunelab.evaluation.metrics import accuracy
    from tunelab.evaluation.probe import embed
    from tunelab.inference import class_probabilities, load_run
    from tunelab.models.loading import quietly
    from tunelab.models.resolve import resolve_model, safetensors_only

    loaded = load_run(run_dir, trust_remote_code=cfg.model.trust_remote_code, precision=cfg.eval.precision,
                      merge=True)
    labels, max_length = loaded.labels, cfg.data.max_length
    location = resolve_model(cfg.model.name, cfg.model.allow_pickle_weights)
    tokenizer = AutoTokenizer.from_pretrained(location)
    encoder = quietly(AutoModel.from_pretrained, location, dtype=torch.float32,
                     use_safetensors=safetensors_only(location)).eval()
    texts = [r["text"] for r in test_rows]
    refs = [labels.index(r["label"]) for r in test_rows]
    tokens = float(np.mean([len(tokenizer(t)["input_ids"]) for t in texts]))

    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)

    started = time.perf_counter()
    label_vectors = unit(embed(encoder, tokenizer, [name.replace("_", " ") for name in labels], max_length))
    prompt_setup = time.perf_counter() - started

    def zero_shot(batch: list[str]) -> torch.Tensor:
        return (unit(embed(encoder, tokenizer, batch, max_length)) @ label_vectors.T).argmax(-1)

    started = time.perf_counter()
    memory = unit(embed(encoder, tokenizer, [r["text"] for r in train_rows], max_length))
    memory_labels = torch.tensor([labels.index(r["label"]) for r in train_rows])
    retrieval_setup = time.perf_counter() - started

    def knn(batch: list[str], k: int = 5) -> torch.Tensor:
        scores, idx = (unit(embed(encoder, tokenizer, batch, max_length)) @ memory.T).topk(min(k, len(memory)), dim=-1)
        votes = torch.zeros(len(batch), len(labels)).scatter_add_(1, memory_labels[idx], scores)
        return votes.argmax(-1)

    def tuned(batch: list[str]) -> torch.Tensor:
        return class_probabilities(loaded.model, loaded.tokenizer, batch, max_length).argmax(-1)

    train_seconds = RunDir(run_dir).metrics()["train_seconds"]
    approaches = [("prompting", zero_shot, prompt_setup), ("retrieval", knn, retrieval_setup),
                  ("fine-tuning", tuned, train_seconds)]
    return [{"approach": name, "metric": "accuracy", "quality": accuracy(fn(texts).tolist(), refs),
             "setup_seconds": round(setup, 2), "latency_ms": round(_latency_ms(lambda t, fn=fn: fn([t]), texts), 2),
             "prompt_tokens": round(tokens, 1)} for name, fn, setup in approaches]


def _causal(cfg: TunelabConfig, run_dir: Path, train_rows: list[dict], test_rows: list[dict]) -> list[dict]:
    from transformers import AutoModel, AutoTokenizer

    from tunelab.data.tokenize import to_messages
    from tunelab.evaluation.metrics import GENERATION_METRICS
    from tunelab.evaluation.probe import embed
    from tunelab.inference import base_model, generate, load_run
    from tunelab.models.loading import quietly
    from tunelab.models.resolve import resolve_model

    rouge = GENERATION_METRICS["rougeL"]
    loaded = load_run(run_dir, trust_remote_code=cfg.model.trust_remote_code, precision=cfg.eval.precision,
                      merge=True)
    prompts = [to_messages(r)[:-1] for r in test_rows]
    refs = [to_messages(r)[-1]["content"] for r in test_rows]
    n_new = cfg.eval.max_new_tokens
    started = time.perf_counter()
    encoder_dir = resolve_model("builtin:minilm")
    enc_tok = AutoTokenizer.from_pretrained(encoder_dir)
    encoder = quietly(AutoModel.from_pretrained, encoder_dir, dtype=torch.float32, use_safetensors=True).eval()

    def key(rows: list[dict]) -> list[str]:
        return [to_messages(r)[-2]["content"] for r in rows]  # the last user turn

    memory = torch.nn.functional.normalize(embed(encoder, enc_tok, key(train_rows), 128), dim=-1)
    retrieval_setup = time.perf_counter() - started
    queries = torch.nn.functional.normalize(embed(encoder, enc_tok, key(test_rows), 128), dim=-1)
    neighbours = (queries @ memory.T).topk(min(SHOTS, len(train_rows)), dim=-1).indices.tolist()
    retrieved = [with_examples(p, [m for j in idx for m in to_messages(train_rows[j])[-2:]])
                 for idx, p in zip(neighbours, prompts)]
    fixed = [m for row in train_rows[:SHOTS] for m in to_messages(row)[-2:]]
    few_shot = [with_examples(p, fixed) for p in prompts]
    train_seconds = RunDir(run_dir).metrics()["train_seconds"]

    def length(conversations):
        rendered = [loaded.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                    for c in conversations]
        return float(np.mean([len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rendered]))

    rows = []
    with base_model(loaded) as base:
        for name, convs, setup in (("prompting", prompts, 0.0), ("few-shot", few_shot, 0.0),
                                   ("retrieval", retrieved, retrieval_setup)):
            outputs = generate(loaded, convs, n_new, cfg.eval.batch_size, model=base)
            latency = _latency_ms(lambda c: generate(loaded, [c], n_new, 1, model=base), convs)
            rows.append({"approach": name, "metric": "rougeL", "quality": rouge(outputs, refs),
                         "setup_seconds": round(setup, 2), "latency_ms": round(latency, 2),
                         "prompt_tokens": round(length(convs), 1)})
    outputs = generate(loaded, prompts, n_new, cfg.eval.batch_size)
    rows.append({"approach": "fine-tuning", "metric": "rougeL", "quality": rouge(outputs, refs),
                 "setup_seconds": round(train_seconds, 2),
                 "latency_ms": round(_latency_ms(lambda c: generate(loaded, [c], n_new, 1), prompts), 2),
                 "prompt_tokens": round(length(prompts), 1)})
    return rows


def with_examples(conversation: list[dict], examples: list[dict]) -> list[dict]:
    """``examples`` (user/assistant turns) placed before the conversation's turns, after its system message."""
    system = conversation[:1] if conversation and conversation[0]["role"] == "system" else []
    return system + examples + conversation[len(system):]


def table_rows(report: dict) -> tuple[list[str], list[list]]:
    headers = ["approach", "what it is", report["metric"], "setup s", "latency ms", "prompt tokens"]
    return headers, [[r["approach"], r.get("what", ""), r["quality"], r["setup_seconds"], r["latency_ms"],
                      r["prompt_tokens"]] for r in report["approaches"]]


def summary_text(report: dict) -> str:
    headers, rows = table_rows(report)
    rec = report["recommendation"]
    return (f"{report['task']} on {report['split']} ({report['examples']} examples)\n{text_table(headers, rows)}\n"
            f"recommendation: {rec['approach']} ({rec['reason']})\nrule: {rec['rule']}")
