"""The commands over several runs: bakeoff, sweep, advise, report and the built-in demo
(registered in ``tunelab.cli.commands.COMMANDS``)."""

from __future__ import annotations

import argparse

from tunelab.cli.args import Command, config_arguments, non_negative_float, positive_int


def _bakeoff_arguments(parser: argparse.ArgumentParser) -> None:
    config_arguments(parser)
    parser.add_argument("--methods", required=True, help="comma-separated methods, e.g. full,lora,dora,qlora")
    parser.add_argument("--out", help="folder for the runs and bakeoff.json/.md (default: OUTPUT_DIR-bakeoff)")
    parser.add_argument("--same-learning-rate", action="store_true",
                        help="train full and freeze at the config's learning rate too (default: at most 5e-5, "
                             "since adapter learning rates wreck full fine-tuning)")


def _bakeoff(args: argparse.Namespace) -> None:
    from tunelab.studies import bakeoff

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    report = bakeoff.run(args.config, args.overrides, methods, args.out, echo=print,
                         same_learning_rate=args.same_learning_rate)
    print(bakeoff.summary_text(report))
    print(f"wrote {report['dir']}/bakeoff.json and bakeoff.md")


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("axes", nargs="+", metavar="KEY=V1,V2",
                        help="values to try per setting, e.g. lora.r=2,4,8,16 lora.lora_alpha=8,16,32")
    parser.add_argument("--samples", type=positive_int, help="try this many random points of the grid instead of all")
    parser.add_argument("--tolerance", type=non_negative_float, default=0.01,
                        help="recommend the cheapest point within this much of the best validation score "
                             "(default 0.01)")
    parser.add_argument("--out", help="folder for the runs and sweep.json/.md (default: OUTPUT_DIR-sweep)")


def _sweep(args: argparse.Namespace) -> None:
    from tunelab.studies import sweep

    report = sweep.run(args.config, args.axes, args.samples, args.tolerance, args.out, echo=print)
    print(sweep.summary_text(report))
    print(f"wrote {report['dir']}/sweep.json and sweep.md")


def _advise_arguments(parser: argparse.ArgumentParser) -> None:
    config_arguments(parser)
    parser.add_argument("--tolerance", type=non_negative_float, default=0.02,
                        help="prefer a simpler approach whose quality is within this much of the best (default 0.02)")
    parser.add_argument("--out", help="folder for the fine-tuning run and advise.json (default: OUTPUT_DIR-advise)")


def _advise(args: argparse.Namespace) -> None:
    from tunelab.studies import advise

    report = advise.run(args.config, args.overrides, args.tolerance, args.out, echo=print)
    print(advise.summary_text(report))
    print(f"wrote {report['dir']}/advise.json")


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="RUN_OR_BAKEOFF",
                        help="finished run folders (evaluate them first for metric charts), bake-off or sweep folders")
    parser.add_argument("--out", default=None,
                        help="file to write (default: report.html, or report.md with --markdown, inside the folder "
                             "given; required when several folders are given, since the report belongs to none "
                             "of them alone)")
    parser.add_argument("--markdown", action="store_true", help="write the same numbers as Markdown instead of HTML")


def _report(args: argparse.Namespace) -> None:
    from tunelab.studies import report

    print(f"wrote {report.run(args.sources, args.out, markdown=args.markdown)}")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from tunelab.studies.demo import DEMOS

    parser.add_argument("--task", choices=list(DEMOS), default="classification",
                        help="classification (default): MiniLM, linear probe vs LoRA on support intents, about 3 "
                             "minutes; causal_lm: SmolLM2-135M-Instruct as released vs LoRA-tuned on support "
                             "replies, with generations side by side (fetches the model once, about 93 MB)")
    parser.add_argument("--out", default=None,
                        help="run folder for the demo (default runs/demo, or runs/demo-causal-lm with --task causal_lm)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="change the demo's settings, e.g. train.epochs=2 (see tunelab config schema)")


def _demo(args: argparse.Namespace) -> None:
    from tunelab.studies import demo

    summary = demo.run(args.out, args.overrides, echo=print, task=args.task)
    print(demo.summary_table(summary))
    print(f"wrote {summary['run_dir']}/summary.json and report.html")


STUDY_COMMANDS: dict[str, Command] = {
    "bakeoff": Command("train several methods on the same data and budget; compare memory, time, quality",
                       _bakeoff_arguments, _bakeoff),
    "sweep": Command("try a grid of settings and recommend one, with the evidence", _sweep_arguments, _sweep),
    "advise": Command("zero-shot, few-shot and retrieval vs fine-tuning on your data, with a recommendation",
                      _advise_arguments, _advise),
    "report": Command("one self-contained HTML (or Markdown) report of runs, bake-offs and sweeps",
                      _report_arguments, _report),
}

DEMO_COMMAND = Command("measure base vs fine-tuned on the built-in data (the README's main jobs)", _demo_arguments,
                       _demo, "Trains LoRA on built-in data and measures base and tuned on its held-out test split. "
                       "--task classification: the shipped MiniLM on support intents, against a linear probe on the "
                       "frozen encoder (about 3 minutes on a laptop CPU). --task causal_lm: SmolLM2-135M-Instruct on "
                       "support replies in one house style (perplexity, ROUGE, BLEU with CIs, and three generations "
                       "side by side). Writes OUT/summary.json and OUT/report.html.")
