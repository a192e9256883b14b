"""Stage 4, quantization: ``tunelab.quantization.quantize.run(run_dir)`` merges the adapter and writes
8-bit, 4-bit NF4, GPTQ or dynamic-int8 variants (``quantizers.QUANTIZERS``); ``compare`` measures them."""
