"""`tunelab serve RUN`: the run's model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

    TUNELAB_API_KEY=... tunelab serve runs/my-run [--variant merged|int8|nf4|gptq|dynamic-int8] [--port 8000]

Causal-LM runs: ``/v1/completions`` and ``/v1/chat/completions`` (``stream: true`` sends server-sent
events; ``stop``, ``n``, ``seed`` and ``stream_options.include_usage`` work as in OpenAI's API), and
``/v1/models``. Classification runs: ``/v1/classify`` with ``{"input": "text"}`` or
``{"input": ["text", ...]}`` (the ``input`` field of OpenAI's embeddings and moderation APIs).
``/health`` for both. Concurrent requests are micro-batched (``serving/batching.py``), streamed
generations too (each stream one row of a batched ``generate``). Bad requests, and
parameters this server does not implement, get a 4xx in OpenAI's error shape,
``{"error": {"message", "type", "param", "code"}}``, never a 500. The README's serving section
has the table of what is supported.

The modules, each importing only the ones before it:

- ``api``: the settings, the request models, the ignored and refused parameters, ``ApiError``;
- ``streams``: stop strings in streamed text, the server-sent event chunks, the streamers and the
  per-row stopping criterion;
- ``worker``: a request's ``Plan``, and the ``Worker`` that renders prompts and batches generations;
- ``server``: the FastAPI app (``create_app``), its routes, and ``run``.
"""

from tunelab.serving.api import ServeSettings
from tunelab.serving.server import create_app, run
from tunelab.serving.streams import StopScanner

__all__ = ["ServeSettings", "StopScanner", "create_app", "run"]
