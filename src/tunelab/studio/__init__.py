"""The studio, ``tunelab app``: the whole job in the browser, above every stage.

The modules, each importing only the ones before it:

- ``workspace``: the workspace folder, run names, and the checks that keep a submitted config's paths
  inside it;
- ``jobs``: the queue that trains one run at a time in a child process, with stop and resume;
- ``tryout``: a finished run's models (base, fine-tuned, quantized) answering a text side by side;
- ``artifacts``: what a finished run hands over (adapter or model, merged, quantized copies, GGUF files);
- ``catalog``: the runs the app shows, each run's list entry and detail, the built-ins and the data report;
- ``app``: the FastAPI app (the page and its JSON API) and ``run``.
"""
