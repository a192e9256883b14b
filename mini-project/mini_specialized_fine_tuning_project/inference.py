"""Step 5: route tickets with the trained router, then draft each reply with the trained drafter.

    python inference.py                                   # a few example tickets
    python inference.py "my card was charged twice" "where is my parcel?"
    python inference.py --input tickets.jsonl --output routed.jsonl --no-draft

Routing uses the fastest CPU copy of the router (dynamic-int8) when quantize.py has written it, else the
adapter. Each ticket gets its queue, the router's confidence, and "needs a human" when the confidence is
under --threshold (results.py measures how accurate the router is above and below such thresholds).

Drafting uses the drafter copy quantize.py measured best for CPU generation (of the quantized copies and
the bf16 cast whose perplexity stays under the bar `tunelab quantize --compare` warns above, the fastest for
one reply; the merged fp32 model when none does; the adapter before quantize.py has run), greedy, with the
prompt it was trained on: its training instruction, a blank line, then the ticket. A draft may take a
quarter more tokens than the longest reply the drafter was trained on. Drafts are for a person to check
and send: the drafter knows the shop's policies, not the customer's order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from project import DRAFTER, ROUTER, drafter_copy, main_guard, require, timed

from tunelab.data.tokenize import to_messages
from tunelab.inference import classify, generate, load_run
from tunelab.rundir import read_json
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
    parser.add_argument("texts", nargs="*", help="tickets to route and answer (default: five examples)")
    parser.add_argument("--input", help="a .jsonl file of tickets: one string, or an object with 'text', per line")
    parser.add_argument("--output", help="write one JSON line per ticket here (queue, probabilities, draft)")
    parser.add_argument("--variant", help="router copy: adapter, merged, int8, nf4, gptq or dynamic-int8 "
                                          "(default: dynamic-int8 when it exists, else adapter)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="below this confidence a ticket is marked 'needs a human' (default 0.5)")
    parser.add_argument("--no-draft", action="store_true", help="route only; the drafter is not needed then")
    parser.add_argument("--drafter-variant", help="drafter copy: adapter, merged, bf16 (merged, cast at load) or a "
                                                  "quantized one such as dynamic-int8 (default: the one quantize.py "
                                                  "measured best)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="longest draft, in tokens (default: the longest reply the drafter was trained on, "
                             "counted when it runs, plus a quarter)")
    return parser.parse_args(argv)


def route(args: argparse.Namespace, texts: list[str]) -> list[dict]:
    variant = args.variant or ("dynamic-int8" if (ROUTER / "quantized/dynamic-int8").exists() else None)
    loaded = load_run(ROUTER, variant)
    started = time.perf_counter()
    routed = classify(loaded, texts)
    ms = (time.perf_counter() - started) * 1000 / len(texts)
    for r in routed:
        r["confidence"] = r["probabilities"][r["label"]]
        r["needs_a_human"] = r["confidence"] < args.threshold
    rows = [[t[:60], r["label"], r["confidence"], "needs a human" if r["needs_a_human"] else ""]
            for t, r in zip(texts, routed)]
    print(text_table(["ticket", "queue", "confidence", ""], rows))
    print(f"{len(texts)} tickets routed with the {variant or 'adapter'} model, {ms:.1f} ms per ticket")
    return routed


def drafter_choice(args: argparse.Namespace) -> dict:
    if args.drafter_variant == "bf16":
        return {"variant": "merged", "precision": "bf16", "name": "bf16", "why": "--drafter-variant"}
    if args.drafter_variant:
        chosen = None if args.drafter_variant == "adapter" else args.drafter_variant
        return {"variant": chosen, "precision": "fp32", "name": args.drafter_variant, "why": "--drafter-variant"}
    report = DRAFTER / "quantization.json"
    return drafter_copy(read_json(report) if report.exists() else None)


def instruction(examples: list[dict]) -> str:
    """The instruction the drafter was trained with (the most common one of its training split)."""
    return Counter(e["instruction"] for e in examples).most_common(1)[0][0]


def draft_limit(args: argparse.Namespace, examples: list[dict], tokenizer) -> tuple[int, str]:
    """The most new tokens a draft may take, and where that number comes from: --max-new-tokens, else the
    longest reply of the drafter's training split (in its tokenizer's tokens) plus a quarter."""
    if args.max_new_tokens is not None:
        return args.max_new_tokens, "--max-new-tokens"
    longest = max(len(ids) for ids in tokenizer([e["output"] for e in examples], add_special_tokens=False)["input_ids"])
    return longest + longest // 4, f"the longest training reply, {longest} tokens, plus a quarter"


def draft(args: argparse.Namespace, texts: list[str], routed: list[dict]) -> None:
    pick = drafter_choice(args)
    loaded = load_run(DRAFTER, pick["variant"], precision=pick["precision"], setting="--drafter-variant")
    examples = loaded.run.read_split("train")
    ask = instruction(examples)
    limit, source = draft_limit(args, examples, loaded.tokenizer)
    prompts = [to_messages({"instruction": ask, "input": t, "output": ""})[:-1] for t in texts]
    started = time.perf_counter()
    drafts = generate(loaded, prompts, limit, loaded.cfg.eval.batch_size)
    seconds = (time.perf_counter() - started) / len(texts)
    print(f"\ndrafts by the fine-tuned drafter, {pick['name']} copy, greedy, at most {limit} new tokens ({source})"
          f"\n(why {pick['name']}: {pick['why']})")
    for i, (text, r, reply) in enumerate(zip(texts, routed, drafts), start=1):
        flag = ", needs a human" if r["needs_a_human"] else ""
        body = reply.replace("\n", "\n" + " " * 12)  # later lines under the first
        print(f"\n[{i}] ticket: {text}\n    queue:  {r['label']} ({r['confidence']:.3f}{flag})\n    draft:  {body}")
        r.update(draft=reply, drafted_by=pick["name"])
    print(f"\n{len(texts)} replies drafted, {seconds:.1f} s per reply")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require(ROUTER / "COMPLETE", "train.py")
    if not args.no_draft:
        require(DRAFTER / "COMPLETE", "train.py --only drafter", " (or pass --no-draft to route only)")

    def body():
        texts = list(args.texts) + (read_inputs(args.input, "text") if args.input else [])
        texts = texts or EXAMPLES
        with timed("inference.py"):
            routed = route(args, texts)
            if not args.no_draft:
                draft(args, texts, routed)
        if args.output:
            with open(Path(args.output), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in routed)
            print(f"wrote {args.output}")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
