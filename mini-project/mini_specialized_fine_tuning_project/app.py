"""Step 7: the testing interface and the metrics dashboard, in your browser.

    python app.py                 # then open http://127.0.0.1:7860 (Ctrl-C stops it)
    python app.py --port 8080

"Try it" routes a ticket you type with the base model (linear probe), the fine-tuned router and every
quantized copy side by side, with each one's latency. "Dashboard" shows the training curves, the test
scores with their confidence intervals, the confusion matrix and the quantization table. This is
`tunelab app models/ticket-router`; it needs pip install -e ".[serve]" and listens on this machine only.
"""

from __future__ import annotations

import argparse
import sys

from project import RUN, require

from tunelab.cli import main as tunelab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    args = parser.parse_args(argv)
    require(RUN / "COMPLETE", "train.py")
    return tunelab(["app", str(RUN), "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
