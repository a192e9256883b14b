"""Export a finished run as one file other tools run: GGUF for llama.cpp and Ollama.

    tunelab export runs/my-run --dtype q8_0

``tunelab.export.pipeline.run`` is the stage entry (a run folder in, a file out);
``tunelab.export.gguf_write.export_gguf`` writes any merged transformers Llama model. This
package's ``__init__`` imports nothing heavy, so the command line can list the choices
(``tunelab.export.dtypes``) without loading numpy or gguf.
"""
