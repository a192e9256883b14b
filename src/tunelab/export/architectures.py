"""Which transformers architectures become which llama.cpp architecture, and how.

One entry per transformers ``model_type``: the llama.cpp architecture, the hyperparameters
llama.cpp reads from the file's metadata, and the tensors whose layout differs from the
Hugging Face one. Tensor names come from gguf's own table (``gguf.get_tensor_name_map``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import gguf
import numpy as np

from tunelab.errors import ExportError

Transform = Callable[[np.ndarray, object], np.ndarray]  # (HF tensor, model config) -> llama.cpp tensor


@dataclass(frozen=True)
class Architecture:
    gguf_arch: gguf.MODEL_ARCH
    write_hyperparameters: Callable[[gguf.GGUFWriter, object], None]
    unsupported: Callable[[object], list[str]]      # config features llama.cpp would run differently
    transforms: dict[gguf.MODEL_TENSOR, Transform]  # tensors stored in another layout than HF's

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]


def interleave_rope_halves(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder a q or k projection's rows (or bias) from HF's rotary layout to llama.cpp's.

    Within each head of d rows, transformers rotates row i together with row i + d/2 (``rotate_half``);
    llama.cpp's rope rotates rows 2i and 2i + 1. So row 2i takes row i, and row 2i + 1 takes row i + d/2.
    transformers' GGUF reader applies the inverse when it loads the file.
    """
    half = weight.shape[0] // heads // 2
    # (heads, 2 halves, d/2, ...) -> (heads, d/2, 2, ...): the halves interleave within each head
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _kv_heads(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope(config) -> dict:
    """transformers 5 keeps rope settings in ``rope_parameters`` (rope_type, rope_theta, factors)."""
    return dict(getattr(config, "rope_parameters", None) or {})


def _llama_hyperparameters(writer: gguf.GGUFWriter, config) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(_kv_heads(config))
    writer.add_rope_dimension_count(_head_dim(config))
    if _head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(_head_dim(config))  # llama.cpp assumes hidden / heads unless told
        writer.add_value_length(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)


def _llama_unsupported(config) -> list[str]:
    problems = []
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type != "default":
        problems.append(f"rope_type '{rope_type}' (supported: default, plain RoPE)")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act '{config.hidden_act}' (supported: silu)")
    for flag in ("attention_bias", "mlp_bias"):  # transformers' GGUF reader drops Llama biases: no way to check
        if getattr(config, flag, False):
            problems.append(f"{flag} true (supported: Llama without biases)")
    return problems


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(
        gguf.MODEL_ARCH.LLAMA, _llama_hyperparameters, _llama_unsupported,
        {gguf.MODEL_TENSOR.ATTN_Q: lambda w, config: interleave_rope_halves(w, config.num_attention_heads),
         gguf.MODEL_TENSOR.ATTN_K: lambda w, config: interleave_rope_halves(w, _kv_heads(config))}),
}


def architecture_for(config) -> Architecture:
    """The entry for a transformers model config.

    Raises:
        ExportError: the model type is not supported, or uses a feature llama.cpp would run differently.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ExportError(f"model type '{model_type}' cannot be exported to GGUF yet; supported: "
                          f"{', '.join(ARCHITECTURES)}")
    problems = ARCHITECTURES[model_type].unsupported(config)
    if problems:
        raise ExportError(f"this {model_type} model cannot be exported to GGUF: {'; '.join(problems)}")
    return ARCHITECTURES[model_type]


def gguf_tensors(arch: Architecture, model) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp tensor name, fp32 array in llama.cpp's layout) for each of the model's weights.

    A tied output projection is left out: llama.cpp reads token_embd.weight in its place.

    Raises:
        ExportError: a weight has no llama.cpp name (a module this architecture entry does not know).
    """
    config = model.config
    names = gguf.get_tensor_name_map(arch.gguf_arch, config.num_hidden_layers)
    known = set(gguf.MODEL_TENSORS[arch.gguf_arch])
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None or found[0] not in known:
            raise ExportError(f"weight '{hf_name}' has no {arch.name} counterpart in llama.cpp; this model "
                              "has a module tunelab's GGUF export does not know")
        kind, name = found
        if kind == gguf.MODEL_TENSOR.OUTPUT and tied:
            continue
        array = tensor.detach().to("cpu").float().numpy()
        transform = arch.transforms.get(kind)
        yield name, transform(array, config) if transform else array
