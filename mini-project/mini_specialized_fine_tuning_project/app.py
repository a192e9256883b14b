"""Step 7: the testing interface and the metrics dashboard of both models, in your browser.

    python app.py                 # then open http://127.0.0.1:7860 (Ctrl-C stops it)
    python app.py --port 8080

This is `tunelab app models/ticket-router models/ticket-drafter`: both runs are listed on the page. In
"Try it", pick ticket-router to route a ticket with the base model (linear probe), the fine-tuned router and
every quantized copy side by side, with each one's latency; pick ticket-drafter to have SmolLM2 as released,
the fine-tuned drafter and its quantized copy answer the same message one after the other, streamed as
they are generated. "Dashboard" shows each run's training curves, test scores with their confidence
intervals (router: the confusion matrix; drafter: base and tuned replies) and its quantization table.

The drafter was trained on prompts that start with its instruction line ("Reply to this customer message
as Sam from Northwind Support."), a blank line, then the message; the page sends what you type as it is,
so start with that line to see the drafts inference.py writes. Runs you start from the page itself are
kept in models/studio/. It needs pip install -e ".[serve]" and listens on this machine only.
"""

from __future__ import annotations

import argparse
import sys

from project import DRAFTER, MODELS, ROUTER, require

from tunelab.cli import main as tunelab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    args = parser.parse_args(argv)
    require(ROUTER / "COMPLETE", "train.py")
    runs = [str(ROUTER)]
    if (DRAFTER / "COMPLETE").exists():
        runs.append(str(DRAFTER))
    else:
        print(f"{DRAFTER} is not trained yet: showing the router alone (python train.py --only drafter adds it)")
    return tunelab(["app", *runs, "--workspace", str(MODELS / "studio"), "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
