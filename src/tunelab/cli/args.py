"""Argument types and arguments shared by the command-line commands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the error into a usage message, exit 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


@dataclass
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int | None]
    description: str = ""


def run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished run folder (output.dir of a trained config)")


TRUST_HELP = ("allow a run whose config.yaml sets model.trust_remote_code: true; loading it runs Python code that "
              "came with its model, so pass this only for runs whose origin you trust")


def trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)


def variant_argument(parser: argparse.ArgumentParser) -> None:
    from tunelab.config.schema import QUANTIZE_METHODS

    parser.add_argument("--variant", choices=("adapter", "merged") + QUANTIZE_METHODS, default=None,
                        help="which copy of the model to use: the adapter as trained (default), RUN/merged/ "
                             "(tunelab merge), or RUN/quantized/<method>/ (tunelab quantize)")


OVERRIDES_HELP = ("settings that replace the config's, as section.key=value (e.g. train.epochs=2 lora.r=16); "
                  "values are YAML (null, true, [q_proj, v_proj]). `tunelab config schema` lists every key")


def config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/ for examples)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
