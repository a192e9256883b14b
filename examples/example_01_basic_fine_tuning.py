"""Example 1: a first fine-tuning: a small chat model learns to answer as one shop does.

What it demonstrates
    SmolLM2-135M-Instruct (builtin:smollm2-135m, a real chat model) is fine-tuned on the built-in
    support replies: 320 customer messages, each answered in the house style of Northwind, a fictional
    shop (its greeting, its policies, its signature). By default this is full fine-tuning: every weight
    is updated, for one epoch at the learning rate usual for that (5e-5). The 50 held-out test messages
    are then answered twice, by the original model and by the fine-tuned one, and scored against the
    shop's reference replies: perplexity of the references, and ROUGE-L and BLEU of the generated
    replies, each with a 95% bootstrap confidence interval of the difference. A few test messages are
    shown side by side: the message, the reference, the original answer and the fine-tuned one.

    Why full fine-tuning, one epoch: it is the plain idea (keep training the pre-trained model on your
    data) with nothing new to learn, and on a 135M model it fits a 2-core CPU. In tunelab's training
    benchmark (one epoch on 160 of these replies, batch 8, bf16), full fine-tuning took 102.4 s against
    80.2 s for a LoRA of r 8 (about 1.3x), and peaked at 4,839.6 MiB of RSS, about 4.7 GiB: AdamW keeps
    two extra numbers for every weight (benchmarks/results/train_throughput.json, tabled in
    benchmarks/RESULTS.md). One epoch here is 38 steps of
    8 examples (304 training messages after 5% are held out for validation), then the evaluation
    generates up to 96 tokens for each of 50 messages, with both models: roughly 8 minutes in all on a
    2-core CPU, and roughly 15 with a second epoch (estimates, not measurements). `--method lora` trains
    a low-rank adapter instead (PEFT, with the LoRA settings and learning rate of
    configs/support-replies-smollm2.yaml, for one epoch); example 02 compares the two.

    python examples/example_01_basic_fine_tuning.py                           # SmolLM2, full fine-tuning (~8 min)
    python examples/example_01_basic_fine_tuning.py --method lora             # the same with a LoRA adapter
    python examples/example_01_basic_fine_tuning.py --quick                   # a tiny random model, well under a minute
    python examples/example_01_basic_fine_tuning.py --task classification     # MiniLM on the built-in intents
    python examples/example_01_basic_fine_tuning.py --model my-model-folder --data my_replies.jsonl \\
        --test my_test.jsonl --epochs 2 train.learning_rate=2e-5              # your model (folder or hub id) and data
    (The times are approximate, for a 2-core CPU.)

What to look for
    - "base" is the model as released: SmolLM2 already answers, politely but as a generic assistant,
      so the comparison is with a working model, not with noise;
    - perplexity of the shop's replies should fall: the fine-tuned model finds them less surprising
      (LoRA with the reference config's settings took it from 23.8 to 2.2 in
      benchmarks/results/demo-causal-lm.json; see how far full fine-tuning gets); ROUGE-L and BLEU
      should rise, and the CI says whether a gain is more than the noise of 50 test messages;
    - the side-by-side table: the fine-tuned answers take the shop's greeting, policies and signature,
      but a 135M model still picks the wrong policy now and then: fluent is not the same as right;
    - classification (--task classification): the base is a linear probe on the frozen encoder (an
      untrained head would only measure chance); full fine-tuning should beat it.
    With --quick (tiny-llama with random weights, 4 steps) the numbers only show that the script runs.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from common import (
    INTENTS_MODEL,
    add_chat_arguments,
    chat_data_section,
    chat_learning_rate,
    chat_lora,
    chat_model,
    intents_data_section,
    lora_summary,
    overrides,
)

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.errors import TunelabError
from tunelab.evaluation import evaluate
from tunelab.rundir import RunDir, predictions_path, read_jsonl
from tunelab.training import train

# method -> (learning rate, epochs) per task: full fine-tuning moves every weight a little, LoRA's
# adapter starts at zero and needs a larger rate (causal: the reference config's, read when the config is
# built; classification: example 02's). Both tasks take the reference config's LoRA settings.
SCHEDULES = {"causal": {"full": (5e-5, 1), "lora": (None, 1)},
             "classification": {"full": (5e-5, 4), "lora": (2e-3, 4)}}
COLUMN_WIDTH = 30   # characters per column of the side-by-side table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="any config setting, after the example's own: train.learning_rate=1e-4 "
                             "eval.max_new_tokens=64 data.max_rows=100 ... (see `tunelab config schema`)")
    parser.add_argument("--task", choices=["causal", "classification"], default="causal",
                        help="causal (default): the chat model on the support replies; classification: "
                             f"{INTENTS_MODEL} (or --model) on the built-in support intents (or --data with "
                             "text/label rows)")
    parser.add_argument("--method", choices=["full", "lora"], default="full",
                        help="full (default): update every weight, at 5e-5 for 1 epoch (4 for classification); "
                             "lora: a PEFT adapter as in configs/support-replies-smollm2.yaml "
                             f"({lora_summary()}) for 1 epoch (at 2e-3 for 4 epochs for classification)")
    parser.add_argument("--samples", type=int, default=3, help="test messages shown side by side (default 3)")
    add_chat_arguments(parser, "runs/example_01")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    learning_rate, epochs = SCHEDULES[args.task][args.method]
    tree = {"method": {"name": args.method}, "lora": chat_lora(),
            "train": {"epochs": args.epochs or epochs, "learning_rate": learning_rate or chat_learning_rate(),
                      "seed": 0},
            "output": {"dir": args.out, "overwrite": True}}
    if args.task == "causal":
        tree.update(task="causal_lm", model={"name": chat_model(args)},
                    data=chat_data_section(args))
        tree["train"].update(batch_size=8, eval_strategy="no")
        tree["eval"] = {"max_new_tokens": 96, "batch_size": 8}
    else:
        tree.update(task="classification", model={"name": args.model or INTENTS_MODEL},
                    data=intents_data_section(args))
        tree["train"]["batch_size"] = 16
    return from_dict(tree, overrides(args), name="example_01", source="example_01")


def describe(cfg) -> str:
    how = ("full fine-tuning (every weight)" if cfg.method.name == "full"
           else f"LoRA (r {cfg.lora.r}, alpha {cfg.lora.lora_alpha:g})")
    return (f"{how} of {cfg.model.name} on {cfg.data.train}: "
            f"{f'{cfg.train.max_steps} steps' if cfg.train.max_steps else f'{cfg.train.epochs:g} epochs'}, "
            f"batch {cfg.train.batch_size}, learning rate {cfg.train.learning_rate:g}")


def quick_note(args: argparse.Namespace) -> str:
    random_model = ", a tiny model with random weights" if args.task == "causal" and not args.model else ""
    return f"--quick: a smoke run (a few steps on a few rows{random_model}); the numbers below mean nothing"


def training_line(metrics: dict) -> str:
    share = ("all of them" if metrics["trainable_params"] == metrics["total_params"]
             else f"{metrics['trainable_percent']:.2f}%")
    return (f"trained {metrics['trainable_params']:,} of {metrics['total_params']:,} parameters ({share}) "
            f"in {metrics['train_seconds']:.0f} s; peak RSS {metrics['peak_rss_mb']:,.0f} MiB; "
            f"saved {metrics['artifact_size_mb']:,.1f} MiB")


def samples(folder: Path, n: int) -> str:
    """``n`` test examples as wrapped columns: message, reference, original and fine-tuned answer."""
    rows = sorted(read_jsonl(predictions_path(folder)), key=lambda r: r["base_output"] == r["tuned_output"])[:n]  # changed answers first
    shared, messages = split_instruction([str(r["input"]) for r in rows])
    cells = [[m, r["reference"], r["base_output"], r["tuned_output"]] for m, r in zip(messages, rows)]
    table = columns(["message", "reference", "original", "fine-tuned"], cells)
    return (f"every request starts with the instruction: {shared!r}\n\n" if shared else "") + table


def split_instruction(inputs: list[str]) -> tuple[str | None, list[str]]:
    """The first paragraph when every request shares it (the Alpaca instruction), and the rest of each."""
    parts = [text.split("\n\n", 1) for text in inputs]
    if inputs and all(len(p) == 2 for p in parts) and len({p[0] for p in parts}) == 1:
        return parts[0][0], [p[1] for p in parts]
    return None, inputs


def columns(headers: list[str], rows: list[list]) -> str:
    """A table whose long cells wrap within their column; a blank line between rows."""
    texts = [[" ".join(str(cell).split()) if cell is not None else "-" for cell in row] for row in rows]
    widths = [min(COLUMN_WIDTH, max([len(h)] + [len(row[i]) for row in texts])) for i, h in enumerate(headers)]
    lines = [_line(headers, widths), _line(["-" * w for w in widths], widths)]
    for row in texts:
        wrapped = [textwrap.wrap(cell, width) or [""] for cell, width in zip(row, widths)]
        for depth in range(max(map(len, wrapped))):
            lines.append(_line([cell[depth] if depth < len(cell) else "" for cell in wrapped], widths))
        lines.append("")
    return "\n".join(lines).rstrip()


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        print(describe(cfg) + " ...")
        if args.quick:
            print(quick_note(args))
        run_dir = train.run(cfg, echo=print)
        print("scoring the original and the fine-tuned model on the held-out test split ...")
        report = evaluate.run(run_dir, split="test")
    except TunelabError as err:
        report_problems(err)
        return 2
    print("\n== original vs fine-tuned on the held-out test split")
    print(evaluate.table_text(report))
    print(training_line(RunDir(run_dir).metrics()))
    print(f"\n== {args.samples} test examples side by side")
    print(samples(Path(report["written_to"]), args.samples))
    if args.quick:
        print("\n(--quick: the answers and scores above only show that the script runs)")
    print(f"\nrun folder: {run_dir}/ (try: tunelab predict {run_dir} \"your text\")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
