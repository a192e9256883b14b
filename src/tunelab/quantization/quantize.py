"""Stage 4, quantize: deployable quantized copies of a trained run.

    tunelab quantize runs/my-run --method int8,nf4,gptq,dynamic-int8 [--compare]

Every method starts from the run's fp32 weights: ``RUN/model/`` for full fine-tuning, else
``RUN/merged/`` (written here when missing: the adapter merged into the base reloaded in
fp32, also for qlora and lora-8bit runs, whose adapters were trained on a quantized base).
Each method writes ``RUN/quantized/<method>/``: the weights (safetensors), the tokenizer and
``quantized.json`` (method, settings, the SHA-256 of the fp32 weights it was made from, layers
kept in full precision, how to load it), written last; a folder is only ever in place complete.
A copy is reused only when its settings and its source weights are the ones asked for now, and
a copy whose source weights changed is refused when loaded. ``--compare`` then measures every
variant against fp32 (see ``tunelab.quantization.compare``).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from tunelab.config.load import with_overrides as config_overrides
from tunelab.config.schema import TunelabConfig
from tunelab.machine import choose_device
from tunelab.models.kbit import describe_kept, kept_full_precision
from tunelab.models.loading import silence_known_warnings
from tunelab.models.provenance import SourceWeights
from tunelab.models.quantizers import CPU, QUANTIZERS, Job, check_methods, installed
from tunelab.quantization import merge
from tunelab.rundir import (
    RunDir,
    make_readable,
    open_run,
    read_json,
    refuse_remote_code,
    variant_info_path,
    versions,
    write_json,
)

OVERRIDE_SECTIONS = ("quantize", "quantization")
CPU_INSTEAD = "use --device cpu (int8, nf4, gptq and dynamic-int8 all run on a CPU)"


def run(run_dir: str | Path, methods: list[str] | None = None, overrides: Iterable[str] = (),
        device: str = CPU, force: bool = False, echo: Callable[[str], None] = lambda _: None,
        trust_remote_code: bool = False) -> dict[str, Path]:
    """Write ``RUN/quantized/<method>/`` for each method; return {method: folder}.

    A folder made with the same settings from the same weights is reused unless ``force``. A run
    whose config asks for its model's own code is refused unless ``trust_remote_code``.
    """
    run, cfg = open_run(run_dir)
    refuse_remote_code(run.root, cfg, trust_remote_code)
    cfg = with_overrides(cfg, overrides)
    if not methods:  # the configured defaults: leave out those whose library is not installed, and say so
        methods = installed(cfg.quantize.methods, echo)
    check_methods(methods, device)
    silence_known_warnings()
    source = SourceWeights(fp32_folder(run, echo, trust_remote_code))
    job = Job(cfg, source.folder, run.tokenizer_dir, run.labels() if cfg.task == "classification" else None,
              choose_device(device, "--device", CPU_INSTEAD), lambda: calibration_texts(run, cfg))
    written = {}
    for i, name in enumerate(methods, start=1):
        quantizer, target = QUANTIZERS[name], run.variant_dir(name)
        settings = quantizer.settings(cfg)
        if not force and up_to_date(target, settings, source):
            echo(f"[{i}/{len(methods)}] {name}: already in {target} with these settings (--force redoes it)")
        else:
            echo(f"[{i}/{len(methods)}] {name}: {quantizer.summary}")
            seconds, kept = write_variant(job, name, target, settings, source)
            if kept:
                echo(f"    {describe_kept(kept)}")
            echo(f"    wrote {target}/ in {seconds:.0f} s")
        written[name] = target
    return written


def up_to_date(target: Path, settings: dict, source: SourceWeights) -> bool:
    """Whether ``target`` holds a copy made with ``settings`` from exactly these fp32 weights."""
    if not variant_info_path(target).exists():
        return False
    info = read_json(variant_info_path(target))
    return info.get("settings") == settings and source.made(info)


def with_overrides(cfg: TunelabConfig, overrides: Iterable[str]) -> TunelabConfig:
    """The run's config with ``quantize.*`` / ``quantization.*`` overrides applied."""
    return config_overrides(cfg, overrides, OVERRIDE_SECTIONS)


def fp32_folder(run: RunDir, echo: Callable[[str], None], trust_remote_code: bool = False) -> Path:
    """The run's full-precision weights: ``model/``, or ``merged/`` (merged now if missing)."""
    if run.full_model:
        return run.model_dir
    if not run.merged_dir.exists():
        echo(f"merging the adapter into the fp32 base first: {run.merged_dir}/")
        merge.run(run.root, full_precision=True, trust_remote_code=trust_remote_code)
    return run.merged_dir


def calibration_texts(run: RunDir, cfg: TunelabConfig) -> list[str]:
    """A seeded sample of ``quantize.calibration_samples`` training texts, as the model saw them."""
    import datasets
    from transformers import AutoTokenizer

    records = datasets.load_from_disk(str(run.tokenized_dir))["train"]
    rows = list(range(len(records)))
    random.Random(cfg.train.seed).shuffle(rows)
    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer_dir)
    picked = [record["input_ids"] for record in records.select(rows[: cfg.quantize.calibration_samples])]
    return [text for text in tokenizer.batch_decode(picked, skip_special_tokens=True) if text.strip()]


def write_variant(job: Job, name: str, target: Path, settings: dict,
                  source: SourceWeights) -> tuple[float, list[str]]:
    """Quantize, save into a staging folder, then move it into place.

    Returns the seconds quantizing took and the layers kept in full precision for the kernel.
    """
    quantizer = QUANTIZERS[name]
    staging = target.parent / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    start = time.perf_counter()
    try:
        model = quantizer.quantize(job)
        seconds = time.perf_counter() - start
        kept = kept_full_precision(model)
        quantizer.save(model, staging)
        shutil.copytree(job.tokenizer_dir, staging, dirs_exist_ok=True)
        write_json(variant_info_path(staging), info(job, name, settings, seconds, kept) | source.record())
        make_readable(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return seconds, kept


def info(job: Job, name: str, settings: dict, seconds: float, kept: list[str]) -> dict:
    quantizer = QUANTIZERS[name]
    loader = ("transformers from_pretrained (the format is in config.json), or tunelab --variant " + name
              if quantizer.from_pretrained else
              f"tunelab only (--variant {name}; tunelab.inference.load_run(run, variant='{name}')); "
              "the layout is described in tunelab/models/dynamic_int8.py")
    return {"method": name, "summary": quantizer.summary, "settings": settings,
            "source": job.source.name, "full_precision_layers": kept, "device": job.device.type, "quantize_seconds": round(seconds, 2),
            "load_with": loader, "versions": versions()}
