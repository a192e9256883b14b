"""Quantization methods: a registry from ``--method`` name to how a model is quantized, saved and reloaded.

Every method starts from the run's fp32 weights (the adapter merged into the base) and
produces a folder under ``RUN/quantized/<method>/``. The libraries do the work under their
own names: bitsandbytes through transformers' ``BitsAndBytesConfig``, GPTQ through
``GPTQConfig`` (optimum + gptqmodel), CPU int8 through ``torch.ao`` dynamic quantization.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.nn as nn

from tunelab.config.schema import QUANTIZE_METHODS, TunelabConfig
from tunelab.errors import TunelabError
from tunelab.machine import Device
from tunelab.models import dynamic_int8
from tunelab.models.kbit import HEAD_MODULES, quantization_config
from tunelab.models.loading import load_base_model, transformer_layers

GPU, CPU = "cuda", "cpu"


@dataclass
class Job:
    """What a method needs to quantize one run."""

    cfg: TunelabConfig
    source: Path                               # the fp32 model folder (RUN/merged/ or RUN/model/)
    tokenizer_dir: Path                        # the run's tokenizer (RUN/tokenizer/)
    labels: list[str] | None                   # classification label names; None for causal LM
    device: Device
    calibration_texts: Callable[[], list[str]]  # a seeded sample of the run's training texts


@dataclass(frozen=True)
class Quantizer:
    summary: str
    devices: tuple[str, ...]                    # where the quantized model runs
    quantize: Callable[[Job], nn.Module]        # the quantized model, in memory
    save: Callable[[nn.Module, Path], None]     # write it to an empty folder
    load: Callable[..., nn.Module]              # (cfg, labels, device, folder): read a folder written by save
    settings: Callable[[TunelabConfig], dict]   # what the result depends on (a changed setting redoes it)
    from_pretrained: bool                       # the folder loads with plain transformers from_pretrained
    requires: tuple[str, str] | None = None     # (module, pip extra) that must be installed


def auto_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM


def _save_pretrained(model: nn.Module, folder: Path) -> None:
    model.save_pretrained(folder)


def _load_pretrained(cfg: TunelabConfig, labels: list[str] | None, device: Device, folder: Path) -> nn.Module:
    # config.json carries the quantization_config, so transformers restores the format itself.
    return load_base_model(cfg, labels, device, location=str(folder))


def _bnb(bits: int) -> Callable[[Job], nn.Module]:
    def quantize(job: Job) -> nn.Module:
        config = quantization_config(job.cfg, bits, job.device, str(job.source),
                                     needed_by=f"--method {BNB_NAMES[bits]}")
        return load_base_model(job.cfg, job.labels, job.device, location=str(job.source), quantization=config)

    return quantize


BNB_NAMES = {8: "int8", 4: "nf4"}


def _bnb_settings(cfg: TunelabConfig) -> dict:
    q = cfg.quantization
    return {"quant_type": q.bnb_4bit_quant_type, "double_quant": q.bnb_4bit_use_double_quant,
            "compute_dtype": q.bnb_4bit_compute_dtype, "skip_modules": HEAD_MODULES}


def _gptq(job: Job) -> nn.Module:
    from transformers import AutoTokenizer, GPTQConfig

    q = job.cfg.quantize
    block, group_size = check_gptq_model(job.cfg, job.source, q.group_size, q.bits)
    config = GPTQConfig(bits=q.bits, group_size=group_size, dataset=job.calibration_texts(),
                        tokenizer=AutoTokenizer.from_pretrained(job.tokenizer_dir), block_name_to_quantize=block)
    logging.getLogger("optimum").setLevel(logging.WARNING)  # one INFO line per layer otherwise
    try:
        model = load_base_model(job.cfg, job.labels, job.device, location=str(job.source), quantization=config)
    except (ValueError, RuntimeError, NotImplementedError) as err:
        raise TunelabError(f"--method gptq: quantization failed ({str(err).splitlines()[0][:200]}); "
                           "try quantize.bits=4 and quantize.group_size=-1") from None
    saved = model.config.quantization_config
    saved.dataset = saved.tokenizer = None  # the calibration texts are training data: keep them out of config.json
    saved.block_name_to_quantize = block    # reloading needs it, and optimum does not keep it
    return model


# gptqmodel's CPU kernel for 4-bit weights (torch's _weight_int4pack_mm) takes only these group sizes.
CPU_INT4_GROUP_SIZES = (32, 64, 128, 256)


# What quantize.group_size=auto picks from, in order: the usual 128, then smaller groups (more scales, closer fit).
AUTO_GROUP_SIZES = (128, 64, 32)


def check_gptq_model(cfg: TunelabConfig, source: Path, group_size: int | str,
                     bits: int = 4) -> tuple[str, int]:
    """Refuse settings and models GPTQ cannot round-trip before spending minutes; return the blocks' path
    and the group size (``auto`` resolved against the layer widths).

    The quantized model must also run on a CPU (where --compare measures it), so 4-bit needs a
    group size the CPU kernel supports.
    """
    if group_size != "auto" and bits == 4 and group_size not in CPU_INT4_GROUP_SIZES:
        raise TunelabError(f"quantize.group_size: {group_size} cannot run on a CPU with 4-bit GPTQ (its kernel takes "
                           f"{', '.join(map(str, CPU_INT4_GROUP_SIZES))}); use one of those")
    import torch
    from transformers import AutoConfig
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        skeleton = auto_class(cfg.task).from_config(AutoConfig.from_pretrained(source))
    if any(isinstance(m, Conv1D) for m in skeleton.modules()):
        raise TunelabError(f"--method gptq: {skeleton.config.model_type} uses Conv1D layers (GPT-2 style); GPTQ "
                           "quantizes them but transformers cannot reload the result. Use int8, nf4 or dynamic-int8")
    layers = transformer_layers(skeleton)
    widths = {m.in_features for m in layers.modules() if isinstance(m, nn.Linear)}
    if group_size == "auto":
        group_size = _auto_group_size(widths, bits)
    elif group_size > 0 and any(w % group_size for w in widths):
        raise TunelabError(f"quantize.group_size: {group_size} does not divide the layer widths "
                           f"{sorted(widths)}; {_group_size_advice(widths, bits)}")
    return next(name for name, m in skeleton.named_modules() if m is layers), group_size


def _auto_group_size(widths: set[int], bits: int) -> int:
    fitting = [size for size in AUTO_GROUP_SIZES if all(w % size == 0 for w in widths)]
    if fitting:
        return fitting[0]
    if bits != 4:
        return -1
    raise TunelabError(f"quantize.group_size: auto found no group size for the layer widths {sorted(widths)}; "
                       f"{_group_size_advice(widths, bits)}")


def _group_size_advice(widths: set[int], bits: int) -> str:
    """A group size that divides every width and runs on a CPU (SmolLM2's 576 and 1536 take 64, not 128)."""
    fitting = [size for size in CPU_INT4_GROUP_SIZES if all(w % size == 0 for w in widths)]
    if fitting:
        return f"use {max(fitting)}" + ("" if bits == 4 else " or -1 (one group per row)")
    if bits == 4:
        return (f"no group size the CPU kernel takes ({', '.join(map(str, CPU_INT4_GROUP_SIZES))}) divides them; "
                "use quantize.bits=8 with quantize.group_size=-1, or another method")
    return "use -1 (one group per row)"


def _gptq_settings(cfg: TunelabConfig) -> dict:
    q = cfg.quantize
    return {"bits": q.bits, "group_size": q.group_size, "calibration_samples": q.calibration_samples}


def _dynamic(job: Job) -> nn.Module:
    model = load_base_model(job.cfg, job.labels, Device(CPU, False, CPU), location=str(job.source))
    q = job.cfg.quantize
    return dynamic_int8.quantize(model, HEAD_MODULES, per_channel=q.per_channel, keep=q.keep_full_precision)


def _dynamic_save(model: nn.Module, folder: Path) -> None:
    dynamic_int8.save(model, folder)


def _dynamic_load(cfg: TunelabConfig, labels: list[str] | None, device: Device, folder: Path) -> nn.Module:
    return dynamic_int8.load(folder, auto_class(cfg.task))


QUANTIZERS: dict[str, Quantizer] = {
    "int8": Quantizer("bitsandbytes LLM.int8 (arXiv 2208.07339): 8-bit weights, outliers in 16-bit",
                      (CPU, GPU), _bnb(8), _save_pretrained, _load_pretrained,
                      lambda cfg: {"skip_modules": HEAD_MODULES}, True, ("bitsandbytes", "quant")),
    "nf4": Quantizer("bitsandbytes 4-bit NF4 with double quantization (the QLoRA format, arXiv 2305.14314)",
                     (CPU, GPU), _bnb(4), _save_pretrained, _load_pretrained, _bnb_settings, True,
                     ("bitsandbytes", "quant")),
    "gptq": Quantizer("GPTQ (arXiv 2210.17323), calibrated on the run's training data, via optimum + gptqmodel",
                      (CPU, GPU), _gptq, _save_pretrained, _load_pretrained, _gptq_settings, True,
                      ("gptqmodel", "gptq")),
    "dynamic-int8": Quantizer("PyTorch dynamic int8 Linear layers (fbgemm/onednn kernels); CPU only",
                              (CPU,), _dynamic, _dynamic_save, _dynamic_load,
                              lambda cfg: {"per_channel": cfg.quantize.per_channel,
                                           "keep_full_precision": cfg.quantize.keep_full_precision}, False),
}

assert tuple(QUANTIZERS) == QUANTIZE_METHODS, "the config schema and the registry must list the same methods"


def methods_help() -> str:
    """``name (where it runs)`` for every method, for error messages and --help."""
    where = {(CPU, GPU): "CPU or GPU", (CPU,): "CPU only", (GPU,): "needs a CUDA GPU"}
    return ", ".join(f"{name} ({where[q.devices]})" for name, q in QUANTIZERS.items())


def missing_extra(name: str) -> str | None:
    """The pip extra a method still needs on this machine, or None when it can run."""
    requires = QUANTIZERS[name].requires
    return requires[1] if requires and importlib.util.find_spec(requires[0]) is None else None


def installed(methods: list[str], echo: Callable[[str], None] = print) -> list[str]:
    """The methods whose library is installed (unknown names kept, for check_methods to refuse); say which are skipped."""
    kept = [m for m in methods if m not in QUANTIZERS or missing_extra(m) is None]
    for name in sorted(set(methods) - set(kept)):
        echo(f"skipping {name}: it needs pip install 'tunelab[{missing_extra(name)}]'")
    return kept


def check_methods(methods: list[str], device: str) -> None:
    """Refuse unknown methods, methods that cannot run on ``device`` and missing extras, all at once."""
    problems = []
    for name in methods:
        quantizer = QUANTIZERS.get(name)
        if quantizer is None:
            problems.append(f"--method: unknown method '{name}'; valid: {methods_help()}")
        elif device not in quantizer.devices:
            runs_on = "a CPU" if quantizer.devices == (CPU,) else "a CUDA GPU"
            problems.append(f"--method {name}: runs only on {runs_on}, not with --device {device}")
        elif missing_extra(name):
            problems.append(f"--method {name}: needs {quantizer.requires[0]}; install it with "
                            f"pip install 'tunelab[{missing_extra(name)}]'")
    if not methods:
        problems.append(f"--method: give at least one method; valid: {methods_help()}")
    if problems:
        raise TunelabError(problems)
