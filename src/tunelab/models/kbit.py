"""bitsandbytes 4- and 8-bit bases: the config, which layers stay in full precision, and CPU kernel traps.

    config = quantization_config(cfg, bits=4, device=device, location=folder)
    kept_full_precision(model)          # layers the 4-bit kernel cannot take, left in fp32
    keep_trainable_on_cpu(model)        # a base being trained never switches to the inference kernel

On CPUs with AVX-512 BF16, bitsandbytes (0.50) repacks a 4-bit weight for a fast inference kernel
at the first forward in eval mode without gradients. The repack tiles the weight in blocks of
32 output rows and reads its scales one 64-weight quantization block per input row, so a layer
whose output width is not a multiple of 32, or whose input width is not a multiple of the block
size, crashes there (``shape '[32, 0]' is invalid``). tunelab keeps such layers in full precision
on every machine, so a copy quantized anywhere loads anywhere. The 8-bit path has no such rule.
"""

from __future__ import annotations

from tunelab.config.schema import TunelabConfig
from tunelab.errors import TunelabError

# Output heads that must stay in full precision when the body is quantized. transformers' default
# skip list misses a head whose last parameter is a bias (BERT's `classifier`), and passing a
# list replaces the defaults, so every head name is listed.
HEAD_MODULES = ["classifier", "score", "lm_head", "qa_outputs", "pre_classifier"]

# The repack's tile: output rows per block, and the 4-bit quantization block along the input.
REPACK_OUTPUT_MULTIPLE = 32
BLOCK_SIZE_4BIT = 64


def quantization_config(cfg: TunelabConfig, bits: int | None, device, location: str | None = None,
                        needed_by: str | None = None):
    """A bitsandbytes config for a 4- or 8-bit base, or None for full precision.

    ``location`` (the model folder or hub id) lets a 4-bit config leave the layers the kernel
    cannot take in full precision; without it only the heads are skipped.

    Raises:
        TunelabError: bitsandbytes is not installed, or no layer of the model fits the 4-bit kernel.
    """
    if bits is None:
        return None
    who = needed_by or f"method.name: {cfg.method.name}"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunelabError(f"{who} needs bitsandbytes; install it with pip install 'tunelab[quant]'") from None
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(HEAD_MODULES))
    q = cfg.quantization
    if q.bnb_4bit_compute_dtype == "auto":
        compute = torch.bfloat16 if device.type == "cuda" and device.bf16 else torch.float32
    else:
        compute = getattr(torch, q.bnb_4bit_compute_dtype)
    narrow = narrow_layers(cfg, location, who) if location else []
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=HEAD_MODULES + narrow)


def fits_4bit_kernel(in_features: int, out_features: int) -> bool:
    """Whether bitsandbytes' CPU repack can take a layer of these widths."""
    return out_features % REPACK_OUTPUT_MULTIPLE == 0 and in_features % BLOCK_SIZE_4BIT == 0


def narrow_layers(cfg: TunelabConfig, location: str, who: str) -> list[str]:
    """Names of the linear layers (heads aside) too narrow for the 4-bit kernel, from a weightless skeleton.

    Raises:
        TunelabError: every layer is too narrow, so a 4-bit model would hold no 4-bit weight.
    """
    widths = linear_widths(cfg, location)
    if widths is None:  # the model cannot be built: from_pretrained will say why
        return []
    narrow = [name for name, (n_in, n_out) in widths.items() if not fits_4bit_kernel(n_in, n_out)]
    if widths and len(narrow) == len(widths):
        shown = sorted({f"{n_in}->{n_out}" for n_in, n_out in widths.values()})
        raise TunelabError(f"{who}: no layer of {cfg.model.name} fits bitsandbytes' 4-bit kernel (widths "
                           f"{', '.join(shown[:6])}; it needs inputs in multiples of {BLOCK_SIZE_4BIT} and outputs "
                           f"in multiples of {REPACK_OUTPUT_MULTIPLE}), so nothing would be quantized; use an 8-bit "
                           "method or a wider model")
    return narrow


def linear_widths(cfg: TunelabConfig, location: str) -> dict[str, tuple[int, int]] | None:
    """{module name: (in, out)} of every Linear or GPT-2 Conv1D layer but the heads; None if unreadable."""
    import torch
    import torch.nn as nn
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    auto = AutoModelForSequenceClassification if cfg.task == "classification" else AutoModelForCausalLM
    try:
        config = AutoConfig.from_pretrained(location, revision=cfg.model.revision,
                                            trust_remote_code=cfg.model.trust_remote_code)
        with torch.device("meta"):
            skeleton = auto.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError, ImportError, KeyError):  # loading the weights reports it, as one line
        return None
    widths = {}
    for name, module in skeleton.named_modules():
        if name.split(".")[-1] in HEAD_MODULES:
            continue
        if isinstance(module, nn.Linear):
            widths[name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # weight is (in, out)
            widths[name] = tuple(module.weight.shape)
    return widths


def kept_full_precision(model) -> list[str]:
    """Layers a 4-bit model left in full precision because the kernel cannot take them (heads aside)."""
    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    if quant is None:
        return []
    quant = quant if isinstance(quant, dict) else quant.to_dict()
    if not quant.get("load_in_4bit"):
        return []
    return [name for name in quant.get("llm_int8_skip_modules") or [] if name not in HEAD_MODULES]


def keep_trainable_on_cpu(model) -> None:
    """Keep every 4-bit layer of a model being trained on the trainable path.

    The repack above also happens at an evaluation during training, and the repacked inference
    kernel has no backward: the training steps after it would drop the gradient through the
    frozen base. Turned off here for the life of the training model (inference loads are unaffected).
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def describe_kept(names: list[str]) -> str:
    """One line for the log: which layers stay in full precision, and why."""
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (f"{len(names)} layer(s) too narrow for the 4-bit kernel stay in full precision (it needs inputs in "
            f"multiples of {BLOCK_SIZE_4BIT} and outputs in multiples of {REPACK_OUTPUT_MULTIPLE}): {shown}")

