"""Step 4: smaller and faster copies of the router for deployment, each measured against fp32.

    python quantize.py                          # the config's quantize.methods (gptq added when installed)
    python quantize.py --methods dynamic-int8   # just the one that is fastest on a CPU

Merges the adapter into the fp32 model (models/ticket-router/merged/), writes each quantized copy under
models/ticket-router/quantized/<method>/, then measures every copy on the test tickets in its own
process: size, memory, latency at batch 1 and 8, accuracy and how often it routes like fp32.
"""

from __future__ import annotations

import argparse
import sys

from project import RUN, main_guard, require

from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.models.quantizers import installed
from tunelab.rundir import open_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", help="comma-separated: int8, nf4, gptq, dynamic-int8 (default: the config's "
                                          "quantize.methods, plus gptq when its extra is installed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require(RUN / "COMPLETE", "train.py")

    def body():
        run_dir, cfg = open_run(RUN)
        if args.methods:
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        else:
            methods = installed([*cfg.quantize.methods, "gptq"], echo=lambda _: None)  # gptq only when installed
        written = quantize.run(run_dir, list(dict.fromkeys(methods)), echo=print)
        report = quantize_compare.compare(run_dir, cfg, list(written), echo=print)
        print(quantize_compare.summary_text(report))
        for line in quantize_compare.tradeoffs(report):
            print(f"- {line}")
        print(f"wrote {run_dir}/quantization.json and quantization.md\nnext: python inference.py")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
