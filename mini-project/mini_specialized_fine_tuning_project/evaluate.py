"""Step 3: was fine-tuning worth it? The router vs the base model on the held-out test tickets.

    python evaluate.py

The base is a linear probe (logistic regression) on the frozen MiniLM embeddings, trained on the same
training tickets: what you get without fine-tuning the encoder. Both are scored on the test split:
accuracy and macro-F1 with a 95% paired-bootstrap CI of the difference, per-queue precision/recall,
the confusion matrix, and models/ticket-router/predictions.jsonl with every ticket's routing.
"""

from __future__ import annotations

import argparse
import sys

from project import RUN, main_guard, require

from tunelab.evaluation import evaluate
from tunelab.tables import text_table


def f1(row: dict) -> float:
    p, r = row["precision"], row["recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


def per_queue(report: dict, worst: int = 5) -> str:
    """The queues the router handles worst (lowest F1), with the base model's F1 for comparison."""
    base, tuned = report["per_class"]["base"], report["per_class"]["tuned"]
    names = sorted(tuned, key=lambda name: (f1(tuned[name]), name))[:worst]
    rows = [[name, tuned[name]["support"], f1(base[name]), tuned[name]["precision"], tuned[name]["recall"],
             f1(tuned[name])] for name in names]
    return text_table(["queue", "test tickets", "base F1", "precision", "recall", "F1"], rows)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    require(RUN / "COMPLETE", "train.py")

    def body():
        report = evaluate.run(RUN, split="test")
        print(evaluate.table_text(report))
        print("\nthe five weakest queues after fine-tuning:")
        print(per_queue(report))
        print(f"wrote {RUN}/eval.json and predictions.jsonl\nnext: python quantize.py")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
