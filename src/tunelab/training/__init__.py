"""Stage 2, training: ``tunelab.training.train.run(config)`` trains a method (``methods.METHODS``) on
prepared data and writes a complete run folder; ``distributed`` spreads it over several processes."""
