"""Fold a run's adapter into its base weights: ``RUN/merged/``, a standalone model.

    tunelab merge runs/my-run

The merged folder loads with plain ``AutoModelForSequenceClassification/AutoModelForCausalLM
.from_pretrained`` (safetensors), with the tokenizer beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tunelab.errors import RunFolderError
from tunelab.inference import load_run
from tunelab.rundir import make_readable, open_run
from tunelab.training.methods import METHODS


def run(run_dir: str | Path, full_precision: bool = False, trust_remote_code: bool = False) -> Path:
    """Write ``RUN/merged/`` and return it.

    Raises:
        RunFolderError: the run has no adapter, or its base was quantized and ``full_precision`` is off.
    """
    run, cfg = open_run(run_dir)
    run_dir = run.root
    if not run.adapter_dir.exists():
        raise RunFolderError(f"{run_dir}: a {cfg.method.name} run saves the whole model in model/; "
                             "there is no adapter to merge")
    bits = METHODS[cfg.method.name].base_bits
    if bits and not full_precision:
        raise RunFolderError(f"{run_dir}: the adapter was trained on a {bits}-bit base; merging into quantized "
                             "weights would round the update away. Pass --full-precision to reload the base in "
                             "fp32 and merge there (outputs then differ slightly from the quantized model)")
    loaded = load_run(run_dir, full_precision_base=True, trust_remote_code=trust_remote_code)
    merged = loaded.model.merge_and_unload()
    target = run.merged_dir
    staging = target.with_name(f".{target.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    make_readable(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
