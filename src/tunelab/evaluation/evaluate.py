"""Stage 3, evaluate: base vs tuned on the same split, with a paired bootstrap CI of the delta.

    tunelab evaluate runs/my-run [--split test] [eval.max_examples=50 ...]

- classification: the base is a linear probe on the frozen base encoder trained on the same
  train split (an untrained head would only measure chance); metrics: accuracy, macro-F1,
  per-class precision/recall, confusion matrix.
- causal LM: the base is the base model itself (the adapter switched off, or the original
  weights for full/freeze runs); metrics: perplexity and mean loss on the completion tokens,
  and for instruction/chat data BLEU, ROUGE-1/2/L and exact match of greedy generations.
Writes ``RUN/eval.json`` and ``RUN/predictions.jsonl`` (input, reference, base and tuned output).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

from tunelab.config.load import with_overrides
from tunelab.errors import TunelabError
from tunelab.evaluation.causal import evaluate_causal
from tunelab.evaluation.classification import evaluate_classification
from tunelab.evaluation.metrics import eval_findings, worse_sentence
from tunelab.inference import load_run
from tunelab.machine import set_threads
from tunelab.rundir import eval_path, open_run, predictions_path, write_json


def run(run_dir: str | Path, split: str | None = None, max_examples: int | None = None,
        variant: str | None = None, trust_remote_code: bool = False, overrides: Iterable[str] = ()) -> dict:
    """Evaluate base and tuned on ``split`` (default ``eval.split``); write and return eval.json.

    ``overrides`` (``eval.key=value``) change the run's eval section; ``split`` and ``max_examples``
    override it in turn. With a ``variant`` (merged, or a quantization method) that copy is the tuned
    model, and eval.json goes into its folder.
    """
    cfg = with_overrides(open_run(run_dir)[1], overrides, ("eval",))  # checked before the model loads
    threads = set_threads(cfg.eval_threads())  # before the precision is measured with them
    loaded = load_run(run_dir, variant, trust_remote_code=trust_remote_code, precision=cfg.eval.precision,
                      merge=True)
    loaded = dataclasses.replace(loaded, cfg=cfg)
    split = split or cfg.eval.split
    examples = loaded.run.read_split(split)[: max_examples or cfg.eval.max_examples or None]
    if not examples:
        raise TunelabError(f"{loaded.run_dir}: split '{split}' has no examples to evaluate")
    result = EVALUATORS[cfg.task](loaded, examples, split)
    report = {"run": str(loaded.run_dir), "task": cfg.task, "split": split, "examples": len(examples),
              "base": result.pop("base_kind"),
              "tuned": f"{cfg.method.name} fine-tuned" + (f" ({variant})" if variant else ""),
              "settings": {"bootstrap_samples": cfg.eval.bootstrap_samples, "seed": cfg.eval_seed(),
                           "max_new_tokens": cfg.eval.max_new_tokens, "threads": threads,
                           "precision": loaded.precision, "adapter_merged": loaded.merged_adapter},
              **result}
    predictions = report.pop("predictions")
    out = loaded.run.outputs_dir(variant)
    with open(predictions_path(out), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions)
    write_json(eval_path(out), report)
    return {**report, "written_to": str(out)}


# task -> evaluator; each returns base_kind, metrics, predictions and task extras.
EVALUATORS = {"classification": evaluate_classification, "causal_lm": evaluate_causal}


def table_text(report: dict) -> str:
    """The printed table: metric, base, tuned, delta, 95% CI of the delta; then a warning line for
    each metric on which tuned is worse than base."""
    from tunelab.tables import interval, signed, text_table

    rows = [[name, row["base"], row["tuned"], signed(row["delta"]), interval(row["ci95"]),
             "lower" if row["lower_is_better"] else "higher"]
            for name, row in report["metrics"].items()]
    heading = f"{report['task']} on {report['split']} ({report['examples']} examples); base = {report['base']}"
    warnings = "".join(f"\nwarning: {worse_sentence(finding)}" for finding in eval_findings(report))
    table = text_table(["metric", "base", "tuned", "delta", "95% CI of delta", "better"], rows)
    return heading + "\n" + table + warnings
