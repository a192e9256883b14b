"""Step 5: route tickets with the trained router.

    python inference.py                                   # a few example tickets
    python inference.py "my card was charged twice" "where is my parcel?"
    python inference.py --variant merged --input tickets.jsonl --output routed.jsonl

Uses the fastest CPU copy (dynamic-int8) when quantize.py has written it, else the adapter. Each ticket
gets its queue, the router's confidence, and "needs a human" when the confidence is under --threshold
(results.py measures how accurate the router is above and below such thresholds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from project import RUN, main_guard, require

from tunelab.inference import classify, load_run
from tunelab.serving.predict import read_inputs
from tunelab.tables import text_table

EXAMPLES = ["Hi, I was charged twice for the same order, can you fix it?",
            "My parcel was supposed to arrive on Monday and it still isn't here.",
            "I can't log in, the password reset email never comes.",
            "Please stop my monthly plan, I don't need it anymore.",
            "Is the blue backpack waterproof?"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="tickets to route (default: five examples)")
    parser.add_argument("--input", help="a .jsonl file of tickets: one string, or an object with 'text', per line")
    parser.add_argument("--output", help="write one JSON line per ticket here")
    parser.add_argument("--variant", help="adapter, merged, int8, nf4, gptq or dynamic-int8 "
                                          "(default: dynamic-int8 when it exists, else adapter)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="below this confidence a ticket is marked 'needs a human' (default 0.5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require(RUN / "COMPLETE", "train.py")

    def body():
        texts = list(args.texts) + (read_inputs(args.input, "text") if args.input else [])
        texts = texts or EXAMPLES
        variant = args.variant or ("dynamic-int8" if (RUN / "quantized/dynamic-int8").exists() else None)
        loaded = load_run(RUN, variant)
        started = time.perf_counter()
        routed = classify(loaded, texts)
        ms = (time.perf_counter() - started) * 1000 / len(texts)
        confidence = [r["probabilities"][r["label"]] for r in routed]
        rows = [[t[:60], r["label"], c, "needs a human" if c < args.threshold else ""]
                for t, r, c in zip(texts, routed, confidence)]
        print(text_table(["ticket", "queue", "confidence", ""], rows))
        print(f"{len(texts)} tickets routed with the {variant or 'adapter'} model, {ms:.1f} ms per ticket")
        if args.output:
            with open(Path(args.output), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in routed)
            print(f"wrote {args.output}")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
