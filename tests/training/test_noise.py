"""Known-harmless library messages stay hidden, and only those."""

from __future__ import annotations

import logging
import subprocess
import sys

from conftest import train_config
from tunelab.models.loading import TiedKeysReport

# Imported first in a child process: bitsandbytes' native library then reports AVX-512 BF16, so the
# import takes the path it takes on such CPUs (and tries to fetch its optional 4-bit kernel).
FORCE_AVX512_BF16 = """
import importlib.abc, importlib.util, sys

class Force(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.cextension":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.lib.has_avx512bf16_cpu = lambda: True
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Force())
"""


def child_stderr(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", FORCE_AVX512_BF16 + code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_bitsandbytes_kernel_download_warning_is_hidden_on_avx512_bf16_cpus():
    code = "import bitsandbytes.functional as F; assert F.has_avx512bf16()\n"
    assert "Failed to load CPU gemm_4bit_forward" in child_stderr(code)  # what a plain import prints there
    assert "Failed to load CPU gemm_4bit_forward" not in child_stderr("import tunelab\nimport peft\n" + code)
    # Other messages of the same logger still show.
    other = child_stderr("import tunelab, logging\nlogging.getLogger('bitsandbytes.backends.cpu.ops').warning('x9')\n")
    assert "x9" in other


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.trainer", logging.WARNING, __file__, 1, message, None, None)


def test_the_missing_keys_report_is_hidden_only_for_tied_weights():
    report = TiedKeysReport()
    report.tied = {"lm_head.weight"}
    assert not report.filter(record("There were missing keys in the checkpoint model loaded: ['lm_head.weight']."))
    assert report.filter(record("There were missing keys in the checkpoint model loaded: ['lm_head.weight', "
                                "'model.norm.weight']."))
    assert report.filter(record("There were unexpected keys in the checkpoint model loaded: ['x']."))


def test_full_fine_tuning_a_tied_model_does_not_report_missing_keys(tmp_path, tiny_llama, caplog):
    from tunelab.config import load_config
    from tunelab.training import train

    with caplog.at_level(logging.WARNING):
        train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "full"},
                                           train={"max_steps": 2})))
    assert not [r for r in caplog.records if "missing keys" in r.getMessage()]
