"""PyTorch dynamic int8: Linear weights stored in int8, activations quantized on the fly per batch.

On x86 CPUs this runs on fbgemm's int8 kernels, the one CPU path measured faster than fp32
on CPUs without AVX-512 (bitsandbytes and GPTQ save memory there but not time).

Two traps are handled here:
- GPT-2-style models use ``transformers.pytorch_utils.Conv1D`` (``y = x W + b``) instead of
  ``nn.Linear``, and ``quantize_dynamic`` silently skips them. They are rewritten as Linear
  layers (same numbers, weight transposed) first, so they are quantized too.
- A dynamically quantized model cannot go through ``save_pretrained`` (its packed weights are
  not tensors). The folder format below is plain safetensors, reloaded exactly:

    config.json          the model's transformers config
    model.safetensors    every fp32 tensor of the model, and for each quantized layer NAME:
                         NAME.weight (int8), NAME.weight_scale (float64, one per output channel
                         or one for the layer), NAME.weight_zero_point (int64), NAME.bias (fp32)
                         metadata: tunelab_format = dynamic-int8, the layer names, the scheme
                         (per_channel or per_layer)

``load`` rebuilds the architecture from config.json, swaps in quantized layers with the stored
int8 weights and loads the rest, so the reloaded model computes bit-identical outputs.
"""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from tunelab.errors import ModelLoadError, TunelabError

FORMAT = "dynamic-int8"
WEIGHTS_FILE = "model.safetensors"


@contextmanager
def _quiet() -> Iterator[None]:
    # torch.ao.quantization warns that it is deprecated on every call; it is still the only
    # int8 path with fast CPU kernels (torchao's int8 dynamic runs 10-20x slower here).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        yield


def _dynamic_linear_class():
    try:
        from torch.ao.nn.quantized.dynamic import Linear
    except ImportError:
        raise TunelabError(f"dynamic-int8 needs torch.ao's dynamic quantization, which torch {torch.__version__} "
                           "no longer has; use int8 or nf4") from None
    return Linear


def quantize(model: nn.Module, skip: list[str], per_channel: bool = True, keep: list[str] = ()) -> nn.Module:
    """Quantize every Linear (and GPT-2 Conv1D) layer of ``model`` in place, except modules named in
    ``skip`` (the task heads) and those whose full name matches a regular expression in ``keep``."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    _dynamic_linear_class()
    conv1d_to_linear(model)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    names = {name: qconfig for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.split(".")[-1] not in skip
             and not any(re.search(pattern, name) for pattern in keep)}
    with _quiet():
        return quantize_dynamic(model.eval(), names, dtype=torch.qint8, inplace=True)


def conv1d_to_linear(model: nn.Module) -> None:
    """Replace GPT-2's Conv1D layers with equivalent ``nn.Linear`` layers, in place."""
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            nx, nf = module.weight.shape
            linear = nn.Linear(nx, nf)
            linear.weight.data = module.weight.data.t().contiguous()
            linear.bias.data = module.bias.data
            _set_module(model, name, linear)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    cls = _dynamic_linear_class()
    return {name: m for name, m in model.named_modules() if isinstance(m, cls)}


def save(model: nn.Module, folder: Path) -> None:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` (layout in the module docstring)."""
    from safetensors.torch import save_file

    layers = quantized_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    schemes = set()
    with _quiet():
        for name, layer in layers.items():
            weight, bias = layer._weight_bias()
            per_channel = weight.qscheme() == torch.per_channel_affine
            schemes.add("per_channel" if per_channel else "per_layer")
            tensors[f"{name}.weight"] = weight.int_repr().contiguous()
            tensors[f"{name}.weight_scale"] = (weight.q_per_channel_scales() if per_channel
                                               else torch.tensor([weight.q_scale()], dtype=torch.float64))
            tensors[f"{name}.weight_zero_point"] = (weight.q_per_channel_zero_points() if per_channel
                                                    else torch.tensor([weight.q_zero_point()], dtype=torch.int64))
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor) or any(key.startswith(f"{name}.") for name in layers):
            continue
        if value.data_ptr() in seen:  # tied weights (e.g. lm_head and the embeddings) are stored once
            continue
        seen.add(value.data_ptr())
        tensors[key] = value.detach().contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    metadata = {"format": "pt", "tunelab_format": FORMAT, "layers": json.dumps(sorted(layers)),
                "scheme": next(iter(schemes), "per_channel")}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata=metadata)


def is_dynamic_int8(folder: Path) -> bool:
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_FILE
    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("tunelab_format") == FORMAT


def load(folder: Path, auto_class) -> nn.Module:
    """Rebuild a model saved by ``save`` (``auto_class``: e.g. AutoModelForSequenceClassification)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoConfig

    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        metadata = f.metadata()
    layers, per_channel = json.loads(metadata["layers"]), metadata["scheme"] == "per_channel"
    tensors = load_file(str(folder / WEIGHTS_FILE))
    model = auto_class.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    conv1d_to_linear(model)
    quantized = {key: tensors.pop(key) for key in list(tensors) if any(key.startswith(f"{n}.") for n in layers)}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not any(k.startswith(f"{name}.") for name in layers)]
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    untied = [k for k in missing if k not in tied]
    if unexpected or untied:
        raise ModelLoadError(f"{folder}: the dynamic-int8 weights do not match config.json "
                             f"(missing {untied[:3]}, unexpected {unexpected[:3]}); quantize the run again")
    cls = _dynamic_linear_class()
    with _quiet():
        for name in layers:
            int8, scale = quantized[f"{name}.weight"], quantized[f"{name}.weight_scale"]
            zero = quantized[f"{name}.weight_zero_point"]
            if per_channel:
                weight = torch._make_per_channel_quantized_tensor(int8, scale, zero, 0)
            else:
                weight = torch._make_per_tensor_quantized_tensor(int8, float(scale[0]), int(zero[0]))
            layer = cls(int8.shape[1], int8.shape[0], dtype=torch.qint8)
            layer.set_weight_bias(weight, quantized.get(f"{name}.bias"))
            _set_module(model, name, layer)
    model.tie_weights()
    return model.eval()


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
