"""Step 3: was fine-tuning worth it? Each model vs its base on held-out test data.

    python evaluate.py                     # both: about 0.5 + 3.5 minutes on a 2-core CPU
    python evaluate.py --only drafter --shown 5

Router: the base is a linear probe (logistic regression) on the frozen MiniLM embeddings, trained on the
same training tickets: what you get without fine-tuning the encoder. Both are scored on the test tickets:
accuracy and macro-F1 with a 95% paired-bootstrap CI of the difference, per-queue precision/recall, the
confusion matrix, and models/ticket-router/predictions.jsonl with every ticket's routing.

Drafter: the base is SmolLM2-135M-Instruct as released, given the same prompts. On the 50 held-out
messages: perplexity of the reference replies, then greedy drafts scored against them (BLEU, ROUGE-1/2/L,
exact match), each difference with its 95% CI; how many drafts open and close in the house style; and a
few drafts side by side. models/ticket-drafter/predictions.jsonl holds every draft.
"""

from __future__ import annotations

import argparse
import sys

from project import DRAFTER, ROUTER, add_only, chosen, house_style, main_guard, require_runs, ticket_of, timed

from tunelab.evaluation import evaluate
from tunelab.rundir import predictions_path, read_jsonl
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


def indented(text: str, by: int = 15) -> str:
    """A draft's later lines indented to line up under its first."""
    return text.replace("\n", "\n" + " " * by)


def side_by_side(predictions: list[dict], shown: int) -> str:
    """The first ``shown`` test messages with the reference reply, the base draft and the tuned draft."""
    blocks = []
    for i, p in enumerate(predictions[:shown], start=1):
        blocks.append("\n".join([f"[{i}] ticket:    {ticket_of(p['input'])}", f"    reference: {p['reference']}",
                                 f"    base:      {indented(p['base_output'])}",
                                 f"    tuned:     {indented(p['tuned_output'])}"]))
    return "\n\n".join(blocks)


def style_line(style: dict | None) -> str:
    if style is None:
        return "house style: the reference replies share no opening or closing to check drafts against"
    return (f"house style: drafts that open with \"{style['opening']}\" and end with \"{style['closing']}\": "
            f"base {style['base']}/{style['examples']}, fine-tuned {style['tuned']}/{style['examples']}")


def router(_: argparse.Namespace) -> None:
    report = evaluate.run(ROUTER, split="test")
    print(evaluate.table_text(report))
    print("\nthe five weakest queues after fine-tuning:")
    print(per_queue(report))
    print(f"wrote {ROUTER}/eval.json and predictions.jsonl")


def drafter(args: argparse.Namespace) -> None:
    report = evaluate.run(DRAFTER, split="test")
    print(evaluate.table_text(report))
    predictions = read_jsonl(predictions_path(DRAFTER))
    print(style_line(house_style(predictions)))
    if args.shown:
        print(f"\ndrafts side by side (the first {min(args.shown, len(predictions))} test messages):")
        print(side_by_side(predictions, args.shown))
    print(f"wrote {DRAFTER}/eval.json and predictions.jsonl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_only(parser, "evaluate")
    parser.add_argument("--shown", type=int, default=3, metavar="N",
                        help="drafter: test messages whose drafts are printed side by side (default 3; 0: none)")
    args = parser.parse_args(argv)
    parts = chosen(args)
    require_runs(parts, "train.py")

    def body():
        for part in parts:
            print(f"== evaluating the {part} ==")
            with timed(f"evaluate.py: {part}"):
                (router if part == "router" else drafter)(args)
        print("next: python quantize.py" + (f" --only {parts[0]}" if len(parts) == 1 else ""))

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
