"""Load the base model for a task: the right Auto class, labels, device, dtype and quantization,
and the quirks of the libraries that load it (warnings users cannot act on, PEFT's backend probe).

The device comes from ``tunelab.machine.choose_device``.
"""

from __future__ import annotations

import ast
import os
import pickle
from contextlib import contextmanager
from pathlib import Path

from tunelab.config.schema import TunelabConfig
from tunelab.errors import ModelLoadError, TunelabError
from tunelab.machine import Device, cpu_count
from tunelab.models.kbit import quantization_config
from tunelab.models.resolve import hub_error, resolve_model, safetensors_only


def load_base_model(cfg: TunelabConfig, labels: list[str] | None, device: Device, bits: int | None = None,
                    location: str | None = None, quantization=None, dtype: str = "float32"):
    """The pre-trained model with the task's head (a new classifier for ``labels``), in ``dtype``.

    ``bits`` loads the base in 4- or 8-bit with bitsandbytes; ``quantization`` passes any other
    transformers quantization config (GPTQ). A folder that is already quantized (its config.json
    says how) loads in that format without either.

    Raises:
        ModelLoadError: the model cannot be found, downloaded or loaded for this task.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    prepare_quantization_backends()
    location = location or resolve_model(cfg.model.name, cfg.model.allow_pickle_weights)
    kwargs = {"revision": cfg.model.revision, "trust_remote_code": cfg.model.trust_remote_code,
              "dtype": getattr(torch, dtype),
              "use_safetensors": None if cfg.model.allow_pickle_weights else safetensors_only(location)}
    quant = quantization or quantization_config(cfg, bits, device, location)
    if quant is not None or is_quantized_checkpoint(location):
        kwargs["device_map"] = {"": 0} if device.type == "cuda" else {"": "cpu"}
    if quant is not None:
        kwargs["quantization_config"] = quant
    if cfg.task == "classification":
        auto = AutoModelForSequenceClassification
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)})
    else:
        auto = AutoModelForCausalLM
    try:
        model = quietly(auto.from_pretrained, location, **kwargs)
    except OSError as err:
        if Path(location).is_dir():
            raise ModelLoadError(f"model.name: cannot load {location} ({str(err).splitlines()[0]})") from None
        raise hub_error(cfg.model.name, err) from None
    except pickle.UnpicklingError as err:
        found = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        raise ModelLoadError(f"model.name: {location}: the pickle weights hold more than tensors"
                             f"{' (' + found[0][:160] + ')' if found else ''}, so torch.load(weights_only=True) "
                             "refused them and nothing in them ran; ask for safetensors weights") from None
    except ValueError as err:
        raise ModelLoadError(f"model.name: {cfg.model.name} cannot be loaded for task {cfg.task} "
                             f"({str(err).splitlines()[0][:200]})") from None
    return model


def is_quantized_checkpoint(location: str) -> bool:
    """Whether a local model folder was saved quantized (its config.json has a quantization_config)."""
    import json

    config = Path(location) / "config.json"
    try:
        return "quantization_config" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def prepare_quantization_backends() -> None:
    """Settings the quantization libraries need before they are imported.

    gptqmodel sizes its CPU worker pool at (cores + 1) // 2 while its model loader asks for 2
    workers, so on a 1- or 2-core machine every GPTQ load fails with "Virtual pool
    'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1". Give it at least 2.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, cpu_count())))


def silence_known_warnings() -> None:
    """Hide warnings users cannot act on: transformers' own code calling an API it deprecated."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # Quantized models are placed with device_map={"": "cpu"}, which transformers calls "offloaded".
    warnings.filterwarnings("ignore", message=".*save a model with offloaded modules.*")
    # LLM.int8 casts activations to fp16 by design; bitsandbytes says so on every forward pass.
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(
        lambda record: "inputs will be cast from" not in record.getMessage())
    # PEFT checks the base's vocabulary size when saving an adapter, looking the base up by the name the
    # adapter records (a hub id, unreachable offline); tunelab never resizes embeddings, so nothing is lost.
    warnings.filterwarnings("ignore", message="Could not find a config file in .* will assume that the vocabulary")
    # rouge-score logs "Using default tokenizer." at INFO on every call once anything enables INFO logging.
    logging.getLogger("absl").setLevel(logging.WARNING)


class TiedKeysReport:
    """A logging filter for the Trainer's "There were missing keys in the checkpoint model loaded: [...]".

    When the Trainer reloads the best checkpoint of a model whose output head shares the embedding
    matrix, the checkpoint holds that matrix once and the head's key is reported missing, although
    loading the embeddings restores both. The report is hidden only when every key in it is tied.
    """

    PREFIX = "There were missing keys in the checkpoint model loaded: "

    def __init__(self):
        self.tied: set[str] = set()

    def filter(self, record) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        try:
            missing = ast.literal_eval(message[len(self.PREFIX):].rstrip("."))
        except (ValueError, SyntaxError):
            return True
        return not (missing and set(missing) <= self.tied)


_TIED_KEYS_REPORT = TiedKeysReport()


def hide_tied_keys_report(model) -> None:
    """Hide the Trainer's missing-keys report when it names only ``model``'s tied weights."""
    import logging

    _TIED_KEYS_REPORT.tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    logger = logging.getLogger("transformers.trainer")
    if _TIED_KEYS_REPORT not in logger.filters:
        logger.addFilter(_TIED_KEYS_REPORT)


@contextmanager
def only_needed_peft_backends(model):
    """Keep PEFT from importing gptqmodel for a model that has no GPTQ layers.

    For every layer it adapts, PEFT asks each quantization backend it knows whether the layer is
    theirs; with gptqmodel installed, that question imports gptqmodel (measured: 140 MB more RSS,
    seconds of start-up and a banner) even for a plain fp32 model. For the duration, a model
    without a GPTQ quantization config gets the answer "gptqmodel is not installed".
    """
    import sys

    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if "gptq" in str(getattr(method, "value", method)).lower() or "gptqmodel" in sys.modules:
        yield  # a GPTQ model, or gptqmodel is loaded already: nothing to save
        return
    import peft.import_utils

    original = getattr(peft.import_utils, "is_gptqmodel_available", None)
    # PEFT modules import the check by name, so every module holding it gets the stand-in.
    holders = [m for name, m in list(sys.modules.items())
               if name.startswith("peft") and original is not None and getattr(m, "is_gptqmodel_available", None) is original]
    for module in holders:
        module.is_gptqmodel_available = _gptqmodel_absent
    try:
        yield
    finally:
        for module in holders:
            module.is_gptqmodel_available = original


def _gptqmodel_absent() -> bool:
    return False


def quietly(load, *args, **kwargs):
    """Load without transformers' report of newly initialised head weights (expected: the head is new)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a bar for loading a few hundred tensors is noise
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def align_pad_token(model, tokenizer) -> None:
    """Give tokenizers without a pad token (GPT-2, Llama) their EOS as pad, and tell the model."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def transformer_layers(model):
    """The stack of transformer blocks: the longest ``nn.ModuleList`` in the model."""
    from torch import nn

    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise TunelabError(f"method.name: freeze cannot find the transformer layers of {type(model).__name__}; "
                           "use lora or full")
    return max(stacks, key=len)


def context_window(model) -> int:
    """The most tokens the model attends over (its position limit; 1024 when its config does not say)."""
    config = model.config
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))
