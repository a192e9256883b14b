"""tunelab: fine-tune pre-trained language models on your own data and measure what it bought you."""

__version__ = "0.1.0"
