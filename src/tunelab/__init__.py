"""tunelab: fine-tune pre-trained language models on your own data and measure what it bought you."""

import importlib as _importlib
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
# ``import tunelab.runs`` give the module at its new place (one module object under both names). Names
# that moved from one module to another (``cpu_count`` into ``machine``) are imported from their new home.
_MOVED = {
    "runs": "rundir",
    "threads": "machine",
    "modeling": "machine",
    "packaged_models": "models.packaged",
    "gguf_import": "models.gguf_import",
    "tiny": "models.tiny",
    "kbit": "models.kbit",
    "causal_loss": "models.causal_loss",
    "quantizers": "models.quantizers",
    "dynamic_int8": "models.dynamic_int8",
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
    "merge": "quantization.merge",
    "serve": "serving",
    "serve.api": "serving.api",
    "serve.server": "serving.server",
    "serve.streams": "serving.streams",
    "serve.worker": "serving.worker",
    "web": "serving.web",
    "batching": "serving.batching",
    "app": "studio.app",
    "serving.app": "studio.app",
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


class _MovedModules:
    """Imports ``tunelab.<old name>`` as the module it became, leaving that module's own spec in place."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname.removeprefix(__name__ + ".") in _MOVED and fullname.startswith(__name__ + "."):
            return _util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = _importlib.import_module(f"{__name__}.{_MOVED[spec.name.removeprefix(__name__ + '.')]}")
        self._specs[spec.name] = module.__spec__  # the import system is about to overwrite it with the alias's
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)  # ran under its new name already


# First in line, so that an old path inside a moved package (``tunelab.serve.api``) is this alias, not a
# second copy of the file loaded under the old name.
_sys.meta_path.insert(0, _MovedModules())


def __getattr__(name: str):
    if name in _MOVED:  # ``from tunelab import train``
        return _importlib.import_module(f"{__name__}.{_MOVED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
