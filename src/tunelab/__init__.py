"""tunelab: fine-tune pre-trained language models on your own data and measure what it bought you."""

import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import logging as _logging
import sys as _sys

__version__ = "0.1.0"

# torchao (installed with the gptq extra, imported by transformers and peft) logs on import that
# its CUDA kernels are missing and that it uses a deprecated torch API: nothing a user can act on.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

# PEFT imports bitsandbytes on `import peft`, whatever the method. On CPUs with AVX-512 BF16,
# bitsandbytes then tries to fetch an optional 4-bit kernel from the Hugging Face hub and warns when
# it cannot; it falls back to its own CPU kernel, so the line is noise. Only that message is hidden.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "Failed to load CPU gemm_4bit_forward" not in record.getMessage())

# Modules that moved into the stage packages, by their old names: ``from tunelab import train`` and
# ``import tunelab.runs`` keep working and give the module at its new place.
MOVED = {
    "runs": "rundir",
    "threads": "machine",
    "modeling": "machine",
    "models": "models.resolve",
    "packaged_models": "models.packaged",
    "gguf_import": "models.gguf_import",
    "tiny": "models.tiny",
    "kbit": "models.kbit",
    "causal_loss": "models.causal_loss",
    "prepare": "data.prepare",
    "train": "training.train",
    "train_outputs": "training.outputs",
    "callbacks": "training.callbacks",
    "methods": "training.methods",
    "distributed": "training.distributed",
    "model_card": "training.model_card",
    "evaluate": "evaluation.evaluate",
    "evaluate_causal": "evaluation.causal",
    "evaluate_classification": "evaluation.classification",
    "metrics": "evaluation.metrics",
    "probe": "evaluation.probe",
    "measure": "evaluation.measure",
    "quantize": "quantization.quantize",
    "quantize_compare": "quantization.compare",
    "quantizers": "quantization.quantizers",
    "dynamic_int8": "quantization.dynamic_int8",
    "merge": "quantization.merge",
    "serve": "serving",
    "web": "serving.web",
    "batching": "serving.batching",
    "app": "serving.app",
    "predict": "serving.predict",
    "bakeoff": "studies.bakeoff",
    "sweep": "studies.sweep",
    "advise": "studies.advise",
    "report": "studies.report",
    "svg": "studies.charts",
    "demo": "studies.demo",
    "cli_args": "cli.args",
    "cli_deploy": "cli.deploy",
    "cli_models": "cli.models",
}


class _MovedModules(_abc.MetaPathFinder, _abc.Loader):
    """Imports ``tunelab.<old name>`` as the module it became (one module object under both names)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and old in MOVED:
            return _util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return _importlib.import_module(f"{__name__}.{MOVED[spec.name.removeprefix(__name__ + '.')]}")

    def exec_module(self, module):
        pass  # the module ran when it was imported under its new name


_sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in MOVED:  # ``from tunelab import train``
        return _importlib.import_module(f"{__name__}.{MOVED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
