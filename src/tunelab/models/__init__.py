"""Models: where a model name points (hub id, local folder, GGUF file, built-in), the built-ins
(tiny test models and SmolLM2), and loading a base model for a task in the precision a method needs."""

from tunelab.models.resolve import load_tokenizer, resolve_model

__all__ = ["load_tokenizer", "resolve_model"]
