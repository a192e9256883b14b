"""Keep secrets (hub tokens, API keys) out of everything tunelab prints or writes.

    redact("could not download https://me:hf_abc...@hf.co/x")  ->  "... https://***@hf.co/x"

Three kinds are masked: the values of the environment variables that hold secrets, strings
shaped like Hugging Face or OpenAI tokens, and passwords inside URLs.
"""

from __future__ import annotations

import os
import re

SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TUNELAB_API_KEY", "OPENAI_API_KEY", "WANDB_API_KEY",
                    "MLFLOW_TRACKING_PASSWORD")
PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),                 # Hugging Face access tokens
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),               # OpenAI-style API keys
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),       # user:password@ in a URL
)
MASK = "***"
_given: list[str] = []  # secrets given on the command line (serve --api-key)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***``."""
    for value in [os.environ.get(name) for name in SECRET_VARIABLES] + _given:
        if value and len(value) >= 6:
            text = text.replace(value, MASK)
    for pattern in PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def add_secret(value: str | None) -> None:
    """Mask ``value`` too from now on (a key given on the command line rather than the environment)."""
    if value and value not in _given:
        _given.append(value)
