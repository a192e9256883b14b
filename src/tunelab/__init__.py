"""tunelab: fine-tune pre-trained language models on your own data and measure what it bought you."""

import logging as _logging

__version__ = "0.1.0"

# torchao (installed with the gptq extra, imported by transformers and peft) logs on import that
# its CUDA kernels are missing and that it uses a deprecated torch API: nothing a user can act on.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
