"""Example 3: quantizing a fine-tuned chat model: 8-bit, 4-bit NF4 (the QLoRA format), GPTQ and CPU dynamic int8.

What it demonstrates
    SmolLM2-135M-Instruct is fine-tuned with LoRA (the settings of configs/support-replies-smollm2.yaml: r 16,
    every linear layer; 20 steps of 8 replies) to answer customer messages in one shop's house style (the
    built-in support replies; or give --run to start from a run you already have). The adapter is merged
    into fp32 weights, and that model is quantized several ways. Every copy is then measured
    against the merged fp32 model on the same test replies, each in its own process: size on disk,
    weight memory (all, and the transformer blocks), peak memory, generation latency at batch 1 and 8,
    throughput, test perplexity and its change, and agreement (the share of fp32's greedy answer tokens
    the copy produced too). The trade-offs observed are printed under the table.

    - int8: bitsandbytes LLM.int8 (arXiv 2208.07339): int8 weights, outlier features kept in 16 bit;
    - nf4: bitsandbytes 4-bit NormalFloat with double quantization, the QLoRA base format (arXiv 2305.14314);
    - gptq: GPTQ (arXiv 2210.17323), 4-bit weights calibrated on the run's own training texts. Opt-in
      (--methods int8,nf4,gptq,dynamic-int8): on a 2-core CPU its calibration takes roughly a minute per
      block, so about half an hour for SmolLM2's 30 blocks (an estimate, not a committed measurement).
      Needs pip install -e ".[gptq]";
    - dynamic-int8: PyTorch's dynamic int8 Linear layers, the CPU-native path.
    int8 and nf4 need bitsandbytes (pip install -e ".[quant]"). A method whose library is missing, among
    the defaults or in --methods, is skipped with a note saying what to install.

    The table also has an `adapter` row (the adapter on the base it was trained on, not merged) and, on
    CPUs with fast bf16 matmuls (AVX512-BF16), a `bf16` row: the fp32 model cast to bf16 when loaded.

    python examples/example_03_quantization.py                        # LoRA on SmolLM2, then quantize (~9 min*)
    python examples/example_03_quantization.py --quick                # tiny random model, seconds: numbers mean nothing
    python examples/example_03_quantization.py --train-method qlora   # train the adapter on a 4-bit base first
    python examples/example_03_quantization.py --epochs 1             # train a whole epoch first (38 steps)
    python examples/example_03_quantization.py --run runs/my-run      # quantize a run you already have
    python examples/example_03_quantization.py --methods nf4,dynamic-int8 --model my-model-folder --data my.jsonl
    python examples/example_03_quantization.py "quantize.keep_full_precision=['mlp\\.down_proj']"
    (* approximate, on a 2-core CPU)

What to look for
    - memory ("blocks x fp32"): 4 bits per weight is 1/8 of fp32's 32 and 8 bits 1/4, plus the scales,
      so expect the 4-bit copies' transformer blocks a little above 1/8 and the 8-bit ones a little above
      1/4 (MiniLM's were 0.13 for nf4 and 0.25 for int8 in benchmarks/RESULTS.md, Inference); layers kept
      fp32 raise it. SmolLM2's embedding (49,152 tokens x 576) stays fp32, so the whole model shrinks less;
    - speed: dynamic int8 runs int8 kernels on the CPU; bitsandbytes' kernels are built for GPUs, so on
      a CPU they buy memory rather than time. Compare the bs1 and bs8 columns with fp32's (in
      benchmarks/RESULTS.md dynamic-int8 was faster than fp32 at batch 8 on MiniLM and on SmolLM2, and
      bitsandbytes' int8 slower on MiniLM);
    - quality: SmolLM2 already answers sensibly before fine-tuning, and the tuned fp32 model is the
      reference, so the perplexity change and the agreement measure what each copy lost. LLM.int8
      reports 8-bit inference without a loss of accuracy (arXiv 2208.07339); a 4-bit grid is coarser, so
      check whether nf4 and gptq lose more than int8 here. builtin:smollm2-135m is unpacked from a Q4_1
      GGUF file (src/tunelab/models/packaged.py), so a 4-bit copy rounds weights that were on a 4-bit
      grid once already. dynamic-int8 also quantizes each layer's input at run time, and layers whose
      inputs carry outlier features (as described in the LLM.int8 paper) lose the most: when its
      perplexity rises past 1.25x fp32's a warning names the cure (keep those layers fp32; for
      Llama-style models mlp.down_proj, as in the last command). benchmarks/RESULTS.md measured it on
      SmolLM2 with those layers kept fp32;
    - agreement compares greedy answers token by token at the same position, so one early changed
      token shifts the rest of the answer: a low agreement with a small perplexity change means the
      copy says the same things in other words, a low agreement with a large one that it got worse;
    - the trade-off lines name the fastest, the smallest and the closest copy: check whether one copy
      wins all three or each trade-off has its own winner.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import (
    add_chat_arguments,
    chat_data_section,
    chat_learning_rate,
    chat_lora,
    chat_model,
    lora_summary,
    overrides,
)

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.config.schema import QUANTIZE_METHODS
from tunelab.errors import TunelabError
from tunelab.models.quantizers import check_methods, installed
from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.rundir import open_run
from tunelab.tables import text_table
from tunelab.training import train

DEFAULT_METHODS = ["int8", "nf4", "dynamic-int8"]
GPTQ_NOTE = ("gptq is opt-in: on a CPU its calibration takes about a minute per transformer block (half an hour "
             "for SmolLM2-135M), more than this example's budget; add it with --methods int8,nf4,gptq,dynamic-int8")
QUANTIZE_SECTIONS = ("quantize.", "quantization.")
# Sized to finish in about 10 minutes on a 2-core CPU: 20 LoRA steps (160 replies, half an epoch: enough to pick
# up the house style); each copy measured on 16 test replies (perplexity, and 24 greedy tokens each compared
# with fp32's), latency as the median of 3 timed calls after 1 warm-up. Each copy takes about a minute.
TRAIN_STEPS = 20
MEASURE = {"max_new_tokens": 24, "batch_size": 8}
TIMING = {"timing_repeats": 3, "timing_warmup": 1}
MAX_EXAMPLES = 16
# --quick leaves out the bf16 row (on CPUs with fast bf16 it would add a process): random weights say nothing there.
QUICK_EXTRA = ["quantize.precision=fp32"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config settings, e.g. data.max_rows=160 quantize.timing_repeats=10 (see `tunelab config "
                             "schema`); with --run only quantize.* and quantization.* ones (the run is trained)")
    parser.add_argument("--run", help="an existing run folder to quantize (skips training; --model, --data, --test, "
                                      "--epochs and --train-method are then unused)")
    parser.add_argument("--methods", help=f"comma-separated, from {', '.join(QUANTIZE_METHODS)} (default "
                                          f"{','.join(DEFAULT_METHODS)}; gptq is slow on a CPU; a method whose library "
                                          "is missing is skipped with a note)")
    parser.add_argument("--train-method", choices=["lora", "qlora", "full"], default="lora",
                        help="how the run is trained first (default lora, as in configs/support-replies-smollm2.yaml: "
                             f"{lora_summary()}; qlora trains that adapter on a 4-bit NF4 base; full updates every "
                             "weight, at 5e-5)")
    parser.add_argument("--max-examples", type=int,
                        help="test replies each copy is measured on: perplexity, and greedy answers compared with "
                             f"fp32's (default {MAX_EXAMPLES}, 8 with --quick; the built-in test split has 50)")
    add_chat_arguments(parser, "runs/example_03")
    return parser.parse_args(argv)


def chosen_methods(args: argparse.Namespace) -> list[str]:
    """--methods, or the default (with why gptq is not in it); either way a method whose library is missing
    is skipped with a note saying what to install (unknown names are kept, for check_methods to refuse)."""
    if args.methods is None:
        print(f"note: {GPTQ_NOTE}")
        wanted = DEFAULT_METHODS
    else:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    return installed(wanted, echo=lambda line: print(f"note: {line}"))


def train_run(args: argparse.Namespace) -> Path:
    """Fine-tune the chat model with the settings of configs/support-replies-smollm2.yaml, for TRAIN_STEPS steps
    unless --epochs is given; return the run folder."""
    full = args.train_method == "full"
    tree = {"task": "causal_lm", "model": {"name": chat_model(args)},
            "data": chat_data_section(args),
            "method": {"name": args.train_method},
            "lora": chat_lora(),
            "train": {"epochs": args.epochs or 1, "max_steps": None if args.epochs else TRAIN_STEPS, "batch_size": 8,
                      "learning_rate": 5e-5 if full else chat_learning_rate(), "seed": 0, "eval_strategy": "no"},
            "eval": MEASURE, "quantize": TIMING,
            "output": {"dir": args.out, "overwrite": True}}
    cfg = from_dict(tree, settings(args), name="example_03", source="example_03")
    steps = f"{cfg.train.max_steps} steps" if cfg.train.max_steps else f"{cfg.train.epochs:g} epoch(s)"
    print(f"step 1/3: {cfg.method.name} fine-tuning of {cfg.model.name} on {cfg.data.train}, {steps} ...")
    return train.run(cfg, echo=print)


def settings(args: argparse.Namespace) -> list[str]:
    """The KEY=VALUE settings in force: --quick's, then the user's (so the user's win)."""
    return (QUICK_EXTRA if args.quick else []) + overrides(args)


def quantize_settings(args: argparse.Namespace) -> list[str]:
    """Overrides for quantizing and measuring: with --run, the user's (and --quick's quantize.* ones);
    after training here they are in the run's config already."""
    if not args.run:
        return []
    quick = [o for o in settings(args) if o.startswith(QUANTIZE_SECTIONS) and o not in args.overrides]
    return quick + list(args.overrides)


def timed(clock: dict, step: str, call):
    """``call()``, its wall time recorded in ``clock[step]``."""
    start = time.perf_counter()
    result = call()
    clock[step] = time.perf_counter() - start
    return result


def quantize_and_compare(args: argparse.Namespace, methods: list[str], clock: dict) -> dict:
    """Train (unless --run), quantize with ``methods``, measure every copy; the report of the comparison."""
    check_methods(methods, "cpu")  # before minutes of training
    if args.run:
        print(f"step 1/3: no training, --run {args.run} is quantized")
    run_dir = Path(args.run) if args.run else timed(clock, "training", lambda: train_run(args))
    run, cfg = open_run(run_dir)
    cfg = quantize.with_overrides(cfg, quantize_settings(args))
    print(f"step 2/3: merging and quantizing {run.root}: {', '.join(methods)} ...")
    timed(clock, "quantizing", lambda: quantize.run(run.root, methods, quantize_settings(args), echo=print))
    examples = args.max_examples or (8 if args.quick else MAX_EXAMPLES)
    print(f"step 3/3: measuring every copy against fp32 on {examples} test examples, each in its own process ...")
    return timed(clock, "measuring",
                 lambda: quantize_compare.compare(run.root, cfg, methods, max_examples=examples, echo=print))


def print_report(report: dict, clock: dict) -> None:
    print("\n== fp32 vs quantized copies")
    print(text_table(quantize_compare.COLUMNS, [quantize_compare.table_cells(r) for r in report["rows"]]))
    for line in quantize_compare.notes(report):
        print(f"\n{line}")
    print("\n== trade-offs observed")
    for line in quantize_compare.tradeoffs(report) or ["none: no quantized copy was measured"]:
        print(f"- {line}")
    print("\ntime taken: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in clock.items()))
    print(f"written: {report['run']}/quantization.md; serve {serving_hint(report)}")


def serving_hint(report: dict) -> str:
    """The command that serves the fastest copy at batch 8 within tunelab's quality bar: fp32 itself when no
    copy beats it (the bf16 row is the fp32 model, which `serve.precision: auto` casts where bf16 is fast)."""
    best = quantize_compare.fastest_kept(report)
    name = best["variant"] if best else report["reference"]
    variant = report["reference"] if name == "bf16" else name
    command = f"tunelab serve {report['run']}" + ("" if variant == "model" else f" --variant {variant}")
    cast = " (serve.precision: auto casts it to bf16 where bf16 is fast)" if name == "bf16" else ""
    return f"the fastest copy within the quality bar ({name}) with: {command}{cast}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick and not args.run:
        print(f"--quick: {chat_model(args)} (random weights unless --model) with tiny settings; this checks that "
              "the script runs, and its numbers mean nothing")
    methods = chosen_methods(args)
    clock: dict = {}
    try:
        report = quantize_and_compare(args, methods, clock)
    except TunelabError as err:
        report_problems(err)
        return 2
    print_report(report, clock)
    if args.quick and not args.run:
        print("(--quick: random weights and tiny settings; the numbers above mean nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
