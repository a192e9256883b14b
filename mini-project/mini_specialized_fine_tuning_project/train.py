"""Step 2: LoRA fine-tuning of the ticket router (MiniLM + a classification head), then of the reply drafter.

    python train.py                        # both: about 1 + 5 minutes on a 2-core CPU
    python train.py --only router lora.r=16 train.epochs=6
    python train.py --only drafter --drafter-set train.learning_rate=5e-4
    python train.py --resume               # continue an interrupted run from its last checkpoint

The router trains with configs/ticket_router.yaml, the drafter (SmolLM2-135M-Instruct answering in the
shop's house style) with the repository's configs/support-replies-smollm2.yaml and configs/ticket_drafter.yaml
laid over it; settings after the options override the router's,
--drafter-set ones the drafter's. Writes the run folders models/ticket-router/ and models/ticket-drafter/:
the adapter (router about 1.3 MiB, drafter about 19 MiB), metrics.json, train_log.jsonl, TensorBoard logs
and a README describing the run.
"""

from __future__ import annotations

import argparse
import sys

from project import (DATA, add_only, add_overrides, chosen, config, drafter_config, main_guard, require, run_folder,
                     timed)

from tunelab.rundir import read_json
from tunelab.training import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_overrides(parser)
    add_only(parser, "train")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted runs from their last checkpoint (finished ones are left alone)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = chosen(args)
    if "router" in parts:  # the drafter reads the built-in replies itself
        require(DATA / "train.jsonl", "data_prep.py")

    def body():
        for part in parts:
            if args.resume and (run_folder(part) / "COMPLETE").exists():
                print(f"the {part} finished training already ({run_folder(part)}): nothing to resume")
                continue
            cfg = config(args.overrides) if part == "router" else drafter_config(args.drafter_set)
            print(f"== training the {part}: {cfg.model.name}, {cfg.method.name} ==")
            with timed(f"train.py: {part}"):
                run_dir = train.run(cfg, resume=args.resume, echo=print)
            m = read_json(run_dir / "metrics.json")
            score = (f"validation accuracy {m['eval'].get('accuracy', float('nan')):.4f}" if part == "router"
                     else f"final training loss {m['final_train_loss']:.4f}")
            print(f"trained {m['trainable_params']:,} of {m['total_params']:,} parameters "
                  f"({m['trainable_percent']:.2f}%) in {m['train_seconds']:.0f} s; {score}; "
                  f"adapter {m['artifact_size_mb']:.2f} MiB; peak RSS {m['peak_rss_mb']:.0f} MiB")
            print(f"wrote {run_dir}/")
        print("next: python evaluate.py" + (f" --only {parts[0]}" if len(parts) == 1 else ""))

    return main_guard(body)


if __name__ == "__main__":
    sys.exit(main())
