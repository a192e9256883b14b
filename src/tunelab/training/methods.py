"""Fine-tuning methods: a registry from ``method.name`` to a ``Method`` entry that builds the trainable
model and carries the method's facts (the adapter PEFT saves, the base's bits while training, the paper).

Every function takes a ``MethodContext`` and returns the model to train, with exactly the
parameters the method trains marked ``requires_grad``. PEFT does the adapter work under its
own names; for classification the new head is trained with every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from tunelab.config.schema import TunelabConfig
from tunelab.errors import TunelabError
from tunelab.machine import Device
from tunelab.models.dropout import pack_lora_dropout
from tunelab.models.kbit import keep_trainable_on_cpu
from tunelab.models.loading import load_base_model, only_needed_peft_backends, transformer_layers


@dataclass
class MethodContext:
    cfg: TunelabConfig
    labels: list[str] | None     # classification label names in id order; None for causal LM
    device: Device
    total_steps: int             # optimizer steps the run will take (AdaLoRA's schedule needs it)

    def load(self, bits: int | None = None, frozen: bool = False):
        """The base model; ``frozen`` (adapter methods) keeps it in bf16 on a CPU computing in bf16."""
        return load_base_model(self.cfg, self.labels, self.device, bits, dtype=frozen_base_dtype(self.device, bits, frozen))


def frozen_base_dtype(device: Device, bits: int | None, frozen: bool) -> str:
    """bfloat16 for a frozen, unquantized base on a CPU that computes in bf16, else float32.

    Measured on SmolLM2-135M, LoRA on every linear layer, batch 8 x 192, on a CPU with AVX512-BF16:
    a bf16 frozen base trained 1.7x as many tokens/s as fp32 weights under bf16 autocast (which casts
    every weight on every step) and peaked at less memory; the trained weights stay in fp32.
    """
    return "bfloat16" if frozen and bits is None and device.type == "cpu" and device.bf16 else "float32"


def trainable_in_fp32(model: nn.Module) -> nn.Module:
    """Trained weights (adapters, a new head) in fp32 whatever the base's dtype: the optimizer's updates
    are far below bf16's resolution of the weights."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def full(ctx: MethodContext) -> nn.Module:
    """Full fine-tuning: every weight is trained."""
    model = ctx.load()
    model.requires_grad_(True)
    return model


def freeze(ctx: MethodContext) -> nn.Module:
    """Train only the top ``train.freeze_layers_trainable`` transformer layers, the final norm and the head."""
    model = ctx.load()
    model.requires_grad_(False)
    layers = transformer_layers(model)
    keep = ctx.cfg.train.freeze_layers_trainable
    for layer in list(layers)[len(layers) - keep:] if keep else []:
        layer.requires_grad_(True)
    # Also train what sits after the stack (final norm, BERT's pooler) and outside the body (the head).
    in_layers = {id(p) for p in layers.parameters()}
    prefix = model.base_model_prefix
    for name, param in model.named_parameters():
        in_body = name.startswith(f"{prefix}.")
        embedding = any(key in name for key in ("embed", ".wte.", ".wpe."))
        if not in_body or (id(param) not in in_layers and not embedding):
            param.requires_grad_(True)
    return model


def lora_config(ctx: MethodContext, config_class=None, **extra):
    """PEFT config from the ``lora`` section (PEFT's own field names)."""
    from peft import LoraConfig, TaskType

    lora = ctx.cfg.lora
    task_type = TaskType.SEQ_CLS if ctx.cfg.task == "classification" else TaskType.CAUSAL_LM
    fields = dict(lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                  target_modules=lora.target_modules, bias=lora.bias, modules_to_save=lora.modules_to_save,
                  init_lora_weights=lora.init_lora_weights, task_type=task_type)
    if config_class is None:  # AdaLoRA sets its ranks through init_r / target_r instead
        config_class = LoraConfig
        fields.update(r=lora.r, use_rslora=lora.use_rslora, use_dora=lora.use_dora)
    fields.update(extra)
    return config_class(**fields)


def adapter_inputs_uncast(model: nn.Module) -> int:
    """Let the adapter layers of ``model`` take their inputs in the dtype they come in; returns how many.

    PEFT casts each adapter layer's input to its weights' dtype. Over a bf16 frozen base with fp32 adapters
    (``frozen_base_dtype``, ``trainable_in_fp32``) that is an fp32 copy of every adapted layer's input,
    which autocast then casts back to bf16 for the matmul and keeps for the backward pass: two copies per
    adapted layer where the base layer's input would do. Under bf16 autocast the values are the same (bf16
    to fp32 and back is exact). Measured on SmolLM2-135M, LoRA on every linear layer without dropout, batch
    8 x 200: 13% fewer bytes kept for the backward pass (1,586 -> 1,375 MiB). Only for training under
    autocast: without it a bf16 input cannot meet an fp32 adapter weight. Layers with a LoRA variant (DoRA)
    keep the cast: DoRA computes its weight norm in its input's dtype, outside autocast's reach.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [module for module in model.modules()
              if isinstance(module, BaseTunerLayer) and not getattr(module, "lora_variant", None)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def _with_adapter(ctx: MethodContext, model: nn.Module, config) -> nn.Module:
    """``model`` with a trainable adapter; on a CPU its dropouts draw packed random numbers (``PackedDropout``),
    and over a bf16 frozen base its adapters take the base's bf16 activations as they are."""
    import torch
    from peft import PeftModel, get_peft_model

    with only_needed_peft_backends(model):
        if ctx.cfg.method.init_from:
            # Continue from an existing adapter: its own config, weights trainable.
            wrapped = PeftModel.from_pretrained(model, ctx.cfg.method.init_from, is_trainable=True)
        else:
            wrapped = get_peft_model(model, config)
    if ctx.device.type == "cpu":
        pack_lora_dropout(wrapped)
    if ctx.device.bf16 and model.get_input_embeddings().weight.dtype == torch.bfloat16:
        adapter_inputs_uncast(wrapped)
    return trainable_in_fp32(wrapped)


def lora(ctx: MethodContext, **extra) -> nn.Module:
    """LoRA: a trainable low-rank update BA beside each frozen target weight (arXiv 2106.09685)."""
    return _with_adapter(ctx, ctx.load(frozen=True), lora_config(ctx, **extra))


def dora(ctx: MethodContext) -> nn.Module:
    """DoRA: LoRA on the direction plus a trained magnitude per output (arXiv 2402.09353)."""
    return lora(ctx, use_dora=True)


def rslora(ctx: MethodContext) -> nn.Module:
    """rsLoRA: LoRA scaled by lora_alpha / sqrt(r), stable at high ranks (arXiv 2312.03732)."""
    return lora(ctx, use_rslora=True)


def adalora(ctx: MethodContext) -> nn.Module:
    """AdaLoRA: starts at rank 1.5 r and prunes to an average of r by importance (arXiv 2303.10512).

    The budget schedule is derived from the real step count: 10% warm-up at the initial
    rank, pruning until 70% of training, then the final ranks are fixed. The training loop
    calls ``update_and_allocate`` after every optimizer step.
    """
    from peft import AdaLoraConfig

    steps = max(ctx.total_steps, 10)
    tinit, tfinal = max(1, steps // 10), max(1, int(steps * 0.3))
    config = lora_config(ctx, AdaLoraConfig, init_r=max(ctx.cfg.lora.r * 3 // 2, ctx.cfg.lora.r + 1),
                         target_r=ctx.cfg.lora.r, tinit=tinit, tfinal=tfinal, deltaT=max(1, steps // 50),
                         total_step=steps)
    return _with_adapter(ctx, ctx.load(frozen=True), config)


def kbit_lora(ctx: MethodContext) -> nn.Module:
    """LoRA on a frozen base quantized to the method's ``base_bits``: QLoRA's 4-bit NF4 with double
    quantization (arXiv 2305.14314) or LLM.int8() (arXiv 2208.07339)."""
    from peft import prepare_model_for_kbit_training

    model = ctx.load(bits=METHODS[ctx.cfg.method.name].base_bits)
    keep_trainable_on_cpu(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ctx.cfg.train.gradient_checkpointing)
    return _with_adapter(ctx, model, lora_config(ctx))


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: how to build its trainable model, and the facts other stages need."""

    build: Callable[[MethodContext], nn.Module]
    peft_type: str | None           # PEFT's PeftType of the saved adapter; None: the whole model is saved
    base_bits: int | None = None    # bits per frozen base weight while training (None: fp32)
    paper: str | None = None        # where the method comes from
    model_loss: bool = False        # trains on the loss the model computes from its labels (see train.labelled_loss)

    @property
    def saves_adapter(self) -> bool:
        return self.peft_type is not None


# method.name -> Method; the config schema's METHOD_NAMES lists the same names (tests/training check it).
METHODS: dict[str, Method] = {
    "full": Method(full, None),
    "freeze": Method(freeze, None),
    "lora": Method(lora, "LORA", paper="https://arxiv.org/abs/2106.09685"),
    "dora": Method(dora, "LORA", paper="https://arxiv.org/abs/2402.09353"),
    "rslora": Method(rslora, "LORA", paper="https://arxiv.org/abs/2312.03732"),
    # PEFT adds AdaLoRA's orthogonal regularisation to the model's own loss, never to one computed outside it.
    "adalora": Method(adalora, "ADALORA", paper="https://arxiv.org/abs/2303.10512", model_loss=True),
    "qlora": Method(kbit_lora, "LORA", base_bits=4, paper="https://arxiv.org/abs/2305.14314"),
    "lora-8bit": Method(kbit_lora, "LORA", base_bits=8, paper="https://arxiv.org/abs/2208.07339"),
}


def build_model(ctx: MethodContext) -> nn.Module:
    """Build the trainable model for ``method.name``."""
    name = ctx.cfg.method.name
    if name not in METHODS:
        raise TunelabError(f"method.name: unknown method '{name}'; valid: {', '.join(METHODS)}")
    if ctx.cfg.method.init_from and not METHODS[name].saves_adapter:
        raise TunelabError(f"method.init_from: continuing from an adapter needs an adapter method, not '{name}'")
    return METHODS[name].build(ctx)
