"""Example 3: quantization for deployment: 8-bit, 4-bit NF4 (the QLoRA format), GPTQ and CPU dynamic int8.

What it demonstrates
    A fine-tuned model is merged into fp32 weights, then quantized four ways, and every copy is measured
    against fp32 on the same test split, each in its own process: size on disk, weight memory, latency at
    batch 1 and 8, throughput, quality and how often it agrees with fp32. The trade-offs it observed are
    printed under the table.

    - int8: bitsandbytes LLM.int8 (arXiv 2208.07339): int8 weights, outlier features kept in 16 bit;
    - nf4: bitsandbytes 4-bit NormalFloat with double quantization, the QLoRA base format (arXiv 2305.14314);
    - gptq: GPTQ (arXiv 2210.17323), 4-bit weights calibrated on the run's own training texts
      (needs pip install -e ".[gptq]" torch==2.13.0; skipped with a note when missing);
    - dynamic-int8: PyTorch's dynamic int8 Linear layers, the CPU-native path.

    python examples/example_03_quantization.py                           # trains MiniLM LoRA first (~10 min)
    python examples/example_03_quantization.py --train-method qlora      # train on a 4-bit base (QLoRA) first
    python examples/example_03_quantization.py --run runs/my-run         # quantize a run you already have
    python examples/example_03_quantization.py --methods nf4,dynamic-int8 --model my-model-folder --data my.csv

What to look for
    - memory: 4-bit copies keep the transformer blocks in about 1/8 of fp32's bytes, 8-bit in about 1/4;
    - speed: on a CPU dynamic int8 is the copy that is reliably faster than fp32; bitsandbytes' kernels
      are built for GPUs (on a CPU they buy memory, not time) and GPTQ's CPU kernel helps at batch 1 at most;
    - quality: agreement with fp32 tells you how many answers changed, not only the metric.
"""

from __future__ import annotations

import argparse
import sys

from common import add_model_and_data_arguments, data_section

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.config.schema import QUANTIZE_METHODS
from tunelab.errors import TunelabError
from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.models.quantizers import installed
from tunelab.rundir import open_run
from tunelab.training import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config settings for the training run, e.g. train.epochs=2 data.max_rows=300")
    parser.add_argument("--run", help="an existing run folder to quantize (skips training)")
    parser.add_argument("--methods", default=",".join(QUANTIZE_METHODS),
                        help=f"comma-separated, from {', '.join(QUANTIZE_METHODS)} (default: all; "
                             "those whose library is missing are skipped)")
    parser.add_argument("--train-method", choices=["lora", "qlora", "full"], default="lora",
                        help="how the run is trained first (default lora; qlora trains the adapter on a 4-bit base)")
    add_model_and_data_arguments(parser, "runs/example_03")
    return parser.parse_args(argv)


def train_run(args: argparse.Namespace):
    tree = {"task": args.task, "model": {"name": args.model},
            "data": data_section(args),
            "method": {"name": args.train_method},
            "train": {"epochs": args.epochs, "batch_size": 16,
                      "learning_rate": 5e-5 if args.train_method == "full" else 2e-3},
            "output": {"dir": args.out, "overwrite": True}}
    cfg = from_dict(tree, args.overrides, name="example_03", source="example_03")
    print(f"[1/3] {cfg.method.name} fine-tuning of {cfg.model.name} ...")
    return train.run(cfg, echo=print)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = installed([m.strip() for m in args.methods.split(",") if m.strip()])
    try:
        run_dir = args.run or train_run(args)
        print(f"[2/3] quantizing {run_dir}: {', '.join(methods)} ...")
        quantize.run(run_dir, methods, echo=print)
        print("[3/3] measuring every copy against fp32, each in its own process ...")
        run_dir, cfg = open_run(run_dir)
        report = quantize_compare.compare(run_dir, cfg, methods, echo=print)
    except TunelabError as err:
        report_problems(err)
        return 2
    print("\n== fp32 vs quantized copies")
    print(quantize_compare.summary_text(report))
    print("\n".join(quantize_compare.notes(report)))
    print("\n== trade-offs observed")
    for line in quantize_compare.tradeoffs(report):
        print(f"- {line}")
    print(f"\nwritten: {run_dir}/quantization.md; serve one with: tunelab serve {run_dir} --variant dynamic-int8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
