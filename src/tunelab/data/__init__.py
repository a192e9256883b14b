"""Data: read sources, validate rows, split, tokenize (see tunelab.data.prepare for the stage)."""
