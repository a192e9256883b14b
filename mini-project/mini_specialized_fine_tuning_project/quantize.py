"""Step 4: smaller and faster copies of both models for CPU deployment, each measured against fp32.

    python quantize.py                          # both: about 2 + 3 minutes on a 2-core CPU
    python quantize.py --methods dynamic-int8   # just the copy built for CPU speed, for both
    python quantize.py --only drafter --examples 50

Each model's adapter is merged into its fp32 base (models/<run>/merged/), each quantized copy is written
under models/<run>/quantized/<method>/, then every copy is measured in its own process: size, memory,
latency at batch 1 and 8, quality and how often it answers like fp32.

Router: the config's quantize.methods (dynamic-int8, nf4, int8; gptq too when installed), measured on
the test tickets (accuracy, and how often a copy routes like fp32).
Drafter: dynamic-int8 with the mlp.down_proj layers kept in fp32 (configs/ticket_drafter.yaml says why),
plus a bf16 row (the fp32 model cast at load) on CPUs whose bf16 matmuls measure clearly faster than fp32,
measured on the first --examples test messages: perplexity, latency of 16 generated tokens, and the share
of greedy tokens equal to fp32's. inference.py then drafts with the fastest of the quantized copies and the
bf16 cast whose perplexity stays under the bar the comparison warns above (named at the end).
"""

from __future__ import annotations

import argparse
import sys

from project import DRAFTER, ROUTER, add_only, chosen, drafter_copy, main_guard, require_runs, timed

from tunelab.models.quantizers import installed
from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.rundir import RunDir, open_run, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_only(parser, "quantize")
    parser.add_argument("--methods", help="comma-separated: int8, nf4, gptq, dynamic-int8 (default: each config's "
                                          "quantize.methods, plus gptq for the router when its extra is installed)")
    parser.add_argument("--examples", type=int, default=8, metavar="N",
                        help="drafter: test messages each copy is measured on (default 8, one batch; 0: the whole "
                             "test split, several minutes more)")
    return parser.parse_args(argv)


def methods(args: argparse.Namespace, part: str, cfg) -> list[str]:
    if args.methods:
        return list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    if part == "drafter":  # GPTQ's CPU solve would take about 30 minutes on SmolLM2
        return list(cfg.quantize.methods)
    return list(dict.fromkeys(installed([*cfg.quantize.methods, "gptq"], echo=lambda _: None)))


def summary(report: dict, kept: list[str]) -> str:
    """The comparison table; its advice to keep outlier layers in fp32 is replaced when they already are."""
    text = quantize_compare.summary_text(report)
    rows = {r["variant"]: r for r in report["rows"] if "error" not in r}
    for line in quantize_compare.quality_warnings(report) if kept else []:
        ref, row = rows[report["reference"]], rows["dynamic-int8"]
        text = text.replace(line, f"warning: dynamic-int8 lost much of fp32's quality ({row['metric']} "
                                  f"{row['metric_value']:.4g} vs {ref['metric_value']:.4g}) even with the layers "
                                  f"matching {', '.join(kept)} kept in fp32")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = chosen(args)
    require_runs(parts, "train.py")

    def body():
        for part in parts:
            print(f"== quantizing the {part} ==")
            with timed(f"quantize.py: {part}"):
                run_dir, cfg = open_run(ROUTER if part == "router" else DRAFTER)
                written = quantize.run(run_dir, methods(args, part, cfg), echo=print)
                examples = (args.examples or None) if part == "drafter" else None
                report = quantize_compare.compare(run_dir, cfg, list(written), max_examples=examples, echo=print)
            if part == "drafter":  # how many test messages the copies were measured on, for results.py
                report["examples"] = len(RunDir(run_dir).read_split("test")[:examples])
                write_json(RunDir(run_dir).quantization_report_path, report)
            print(summary(report, cfg.quantize.keep_full_precision))
            for line in quantize_compare.tradeoffs(report):
                print(f"- {line}")
            if part == "drafter":
                pick = drafter_copy(report)
                print(f"inference.py drafts with: {pick['name']} ({pick['why']})")
            print(f"wrote {run_dir}/quantization.json and quantization.md")
        print("next: python inference.py")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
