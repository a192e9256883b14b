"""Stage 4, quantize: deployable quantized copies of a trained run.

    tunelab quantize runs/my-run --method int8,nf4,gptq,dynamic-int8 [--compare]

Every method starts from the run's fp32 weights: ``RUN/model/`` for full fine-tuning, else
``RUN/merged/`` (written here when missing: the adapter merged into the base reloaded in
fp32, also for qlora and lora-8bit runs, whose adapters were trained on a quantized base).
Each method writes ``RUN/quantized/<method>/``: the weights (safetensors), the tokenizer and
``quantized.json`` (method, settings, how to load it), written last; a folder is only ever
in place complete. ``--compare`` then measures every variant against fp32 (see
``quantize_compare``).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from tunelab.config.load import apply_override, validate
from tunelab.config.schema import QUANTIZE_METHODS, TunelabConfig
from tunelab.errors import ConfigError
from tunelab.modeling import silence_known_warnings
from tunelab.quantizers import CPU, QUANTIZERS, Job, check_methods, installed
from tunelab.runs import read_json, run_labels, versions, write_json

INFO_FILE = "quantized.json"
VARIANTS = ("adapter", "merged") + QUANTIZE_METHODS
OVERRIDE_SECTIONS = ("quantize.", "quantization.")


def run(run_dir: str | Path, methods: list[str] | None = None, overrides: Iterable[str] = (),
        device: str = CPU, force: bool = False, echo: Callable[[str], None] = lambda _: None) -> dict[str, Path]:
    """Write ``RUN/quantized/<method>/`` for each method; return {method: folder}.

    A folder made with the same settings is reused unless ``force``.
    """
    from tunelab.inference import open_run

    run_dir, cfg = open_run(run_dir)
    cfg = with_overrides(cfg, overrides)
    if not methods:  # the configured defaults: leave out those whose library is not installed, and say so
        methods = installed(cfg.quantize.methods, echo)
    check_methods(methods, device)
    silence_known_warnings()
    job = Job(cfg, fp32_folder(run_dir, echo), run_dir / "tokenizer",
              run_labels(run_dir) if cfg.task == "classification" else None, quantize_device(device),
              lambda: calibration_texts(run_dir, cfg))
    written = {}
    for i, name in enumerate(methods, start=1):
        quantizer, target = QUANTIZERS[name], run_dir / "quantized" / name
        settings = quantizer.settings(cfg)
        if not force and (target / INFO_FILE).exists() and read_json(target / INFO_FILE)["settings"] == settings:
            echo(f"[{i}/{len(methods)}] {name}: already in {target} with these settings (--force redoes it)")
        else:
            echo(f"[{i}/{len(methods)}] {name}: {quantizer.summary}")
            seconds = write_variant(job, name, target, settings)
            echo(f"    wrote {target}/ in {seconds:.0f} s")
        written[name] = target
    return written


def with_overrides(cfg: TunelabConfig, overrides: Iterable[str]) -> TunelabConfig:
    """The run's config with ``quantize.*`` / ``quantization.*`` overrides applied."""
    overrides = list(overrides)
    wrong = [o for o in overrides if not o.strip().startswith(OVERRIDE_SECTIONS)]
    if wrong:
        raise ConfigError([f"{o}: only quantize.* and quantization.* settings can change after training"
                           for o in wrong])
    if not overrides:
        return cfg
    tree = cfg.model_dump(mode="json")
    for override in overrides:
        apply_override(tree, override)
    return validate(tree, source="the overrides")


def fp32_folder(run_dir: Path, echo: Callable[[str], None]) -> Path:
    """The run's full-precision weights: ``model/``, or ``merged/`` (merged now if missing)."""
    from tunelab import merge

    if (run_dir / "model").exists():
        return run_dir / "model"
    if not (run_dir / "merged").exists():
        echo(f"merging the adapter into the fp32 base first: {run_dir}/merged/")
        merge.run(run_dir, full_precision=True)
    return run_dir / "merged"


def quantize_device(name: str):
    import torch

    from tunelab.errors import TunelabError
    from tunelab.modeling import Device

    if name == CPU:
        return Device(CPU, False, "cpu")
    if not torch.cuda.is_available():
        raise TunelabError("--device cuda: no CUDA GPU is visible on this machine; use --device cpu "
                           "(int8, nf4, gptq and dynamic-int8 all run on a CPU)")
    return Device("cuda", torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(0))


def calibration_texts(run_dir: Path, cfg: TunelabConfig) -> list[str]:
    """A seeded sample of ``quantize.calibration_samples`` training texts, as the model saw them."""
    import datasets
    from transformers import AutoTokenizer

    records = datasets.load_from_disk(str(run_dir / "data" / "tokenized"))["train"]
    rows = list(range(len(records)))
    random.Random(cfg.train.seed).shuffle(rows)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    picked = [record["input_ids"] for record in records.select(rows[: cfg.quantize.calibration_samples])]
    return [text for text in tokenizer.batch_decode(picked, skip_special_tokens=True) if text.strip()]


def write_variant(job: Job, name: str, target: Path, settings: dict) -> float:
    """Quantize, save into a staging folder, then move it into place; return the seconds taken."""
    quantizer = QUANTIZERS[name]
    staging = target.parent / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    start = time.perf_counter()
    try:
        model = quantizer.quantize(job)
        seconds = time.perf_counter() - start
        quantizer.save(model, staging)
        shutil.copytree(job.tokenizer_dir, staging, dirs_exist_ok=True)
        write_json(staging / INFO_FILE, info(job, name, settings, seconds))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return seconds


def info(job: Job, name: str, settings: dict, seconds: float) -> dict:
    quantizer = QUANTIZERS[name]
    loader = ("transformers from_pretrained (the format is in config.json), or tunelab --variant " + name
              if quantizer.from_pretrained else
              f"tunelab only (--variant {name}; tunelab.inference.load_run(run, variant='{name}')); "
              "the layout is described in tunelab/dynamic_int8.py")
    return {"method": name, "summary": quantizer.summary, "settings": settings,
            "source": job.source.name, "device": job.device.type, "quantize_seconds": round(seconds, 2),
            "load_with": loader, "versions": versions()}
