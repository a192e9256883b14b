"""Stage 3, evaluation: ``tunelab.evaluation.evaluate.run(run_dir)`` scores the tuned model against
its base on the held-out split (classification or causal LM) with bootstrap confidence intervals."""
