"""Fold a run's adapter into its base weights: ``RUN/merged/``, a standalone model.

    tunelab merge runs/my-run

The merged folder loads with plain ``AutoModelForSequenceClassification/AutoModelForCausalLM
.from_pretrained`` (safetensors), with the tokenizer beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tunelab.errors import RunFolderError

QUANTIZED_BASE_METHODS = {"qlora": "4-bit NF4", "lora-8bit": "8-bit"}


def run(run_dir: str | Path, full_precision: bool = False) -> Path:
    """Write ``RUN/merged/`` and return it.

    Raises:
        RunFolderError: the run has no adapter, or its base was quantized and ``full_precision`` is off.
    """
    from tunelab.inference import load_run, open_run

    run_dir, cfg = open_run(run_dir)
    if not (run_dir / "adapter").exists():
        raise RunFolderError(f"{run_dir}: a {cfg.method.name} run saves the whole model in model/; "
                             "there is no adapter to merge")
    kind = QUANTIZED_BASE_METHODS.get(cfg.method.name)
    if kind and not full_precision:
        raise RunFolderError(f"{run_dir}: the adapter was trained on a {kind} base; merging into quantized "
                             "weights would round the update away. Pass --full-precision to reload the base in "
                             "fp32 and merge there (outputs then differ slightly from the quantized model)")
    loaded = load_run(run_dir)
    merged = loaded.model.merge_and_unload()
    target = run_dir / "merged"
    staging = run_dir / ".merged-staging"
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
