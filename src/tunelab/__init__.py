"""tunelab: fine-tune pre-trained language models on your own data and measure what it bought you."""

import logging as _logging

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
