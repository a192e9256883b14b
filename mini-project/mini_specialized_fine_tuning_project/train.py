"""Step 2: LoRA fine-tuning of the ticket router (MiniLM + a new classification head).

    python train.py                        # about 2 minutes on a 2-core CPU for the built-in tickets
    python train.py lora.r=16 train.epochs=6
    python train.py --resume               # continue an interrupted run from its last checkpoint

Trains with the settings in configs/ticket_router.yaml (overrides after the options) and writes the
run folder models/ticket-router/: the adapter (about 1.3 MiB), labels, metrics.json, train_log.jsonl,
TensorBoard logs and a README describing the run.
"""

from __future__ import annotations

import argparse
import sys

from project import DATA, RUN, config, main_guard, require

from tunelab.rundir import read_json
from tunelab.training import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config settings, e.g. lora.r=16 train.epochs=6 (see `tunelab config schema`)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require(DATA / "train.jsonl", "data_prep.py")

    def body():
        run_dir = train.run(config(args.overrides), resume=args.resume, echo=print)
        m = read_json(run_dir / "metrics.json")
        print(f"trained {m['trainable_params']:,} of {m['total_params']:,} parameters ({m['trainable_percent']:.2f}%) "
              f"in {m['train_seconds']:.0f} s; validation accuracy {m['eval'].get('accuracy', float('nan')):.4f}; "
              f"adapter {m['artifact_size_mb']:.2f} MiB; peak RSS {m['peak_rss_mb']:.0f} MiB")
        print(f"wrote {RUN}/\nnext: python evaluate.py")

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
