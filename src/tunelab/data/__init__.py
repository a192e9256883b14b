"""Data: read sources, validate rows, split, tokenize (see tunelab.prepare for the stage)."""
