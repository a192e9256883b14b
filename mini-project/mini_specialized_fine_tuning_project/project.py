"""Where the ticket router and the reply drafter keep their files, and their configs with those paths filled in.

Every script in this folder imports this module, so they all agree on the locations under models/
no matter which folder they are started from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.config.load import read_yaml
from tunelab.errors import TunelabError
from tunelab.quantization.compare import WORSE_PERPLEXITY_RATIO, keeps_quality

HERE = Path(__file__).resolve().parent
ROUTER_CONFIG = HERE / "configs" / "ticket_router.yaml"
DRAFTER_CONFIG = HERE / "configs" / "ticket_drafter.yaml"
# The drafter trains with the settings of tunelab's SmolLM2 demo; ticket_drafter.yaml holds only its differences.
REFERENCE_CONFIG = HERE.parents[1] / "configs" / "support-replies-smollm2.yaml"
MODELS = HERE / "models"
DATA = MODELS / "data"
ROUTER = MODELS / "ticket-router"
DRAFTER = MODELS / "ticket-drafter"
TIMINGS = MODELS / "timings.json"
README = HERE / "README.md"
PARTS = ("router", "drafter")


def config(overrides: list[str] = ()):
    """The router's config: configs/ticket_router.yaml, paths under models/, then the caller's overrides."""
    tree = read_yaml(ROUTER_CONFIG)
    test = DATA / "test.jsonl"  # absent when the data came as one file: prepare then splits test off train
    tree["data"].update(train=str(DATA / "train.jsonl"), test=str(test) if test.exists() else None)
    tree["output"] = {"dir": str(ROUTER), "overwrite": True}
    return from_dict(tree, overrides, name="ticket-router", source=str(ROUTER_CONFIG))


def drafter_config(overrides: list[str] = ()):
    """The drafter's config: the repository's configs/support-replies-smollm2.yaml with each section of
    configs/ticket_drafter.yaml laid over its own (key by key), the run under models/, then the overrides."""
    tree = read_yaml(REFERENCE_CONFIG)
    for section, settings in read_yaml(DRAFTER_CONFIG).items():
        shared = tree.get(section)
        tree[section] = {**shared, **settings} if isinstance(shared, dict) and isinstance(settings, dict) else settings
    tree["output"] = {"dir": str(DRAFTER), "overwrite": True}
    return from_dict(tree, overrides, name="ticket-drafter", source=f"{REFERENCE_CONFIG} + {DRAFTER_CONFIG}")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """KEY=VALUE settings for the router (positional) and for the drafter (--drafter-set, repeatable)."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="router config settings, e.g. lora.r=16 train.epochs=6 (see `tunelab config schema`)")
    parser.add_argument("--drafter-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a drafter config setting, e.g. --drafter-set train.max_steps=10; repeat it for more")


def add_only(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--only", choices=PARTS, help=f"{verb} only the router or only the drafter (default: both)")


def chosen(args: argparse.Namespace) -> list[str]:
    """The parts ``--only`` picks, in pipeline order; overrides for a part left out are refused."""
    parts = [args.only] if args.only else list(PARTS)
    if "router" not in parts and getattr(args, "overrides", None):
        sys.exit(f"{' '.join(args.overrides)}: router settings, but --only drafter leaves the router out; "
                 "pass drafter settings with --drafter-set KEY=VALUE")
    if "drafter" not in parts and getattr(args, "drafter_set", None):
        sys.exit("--drafter-set: drafter settings, but --only router leaves the drafter out")
    return parts


def run_folder(part: str) -> Path:
    return ROUTER if part == "router" else DRAFTER


def require(path: Path, step: str, hint: str = "") -> None:
    """Stop with a clear message when an earlier step has not been run."""
    if not path.exists():
        sys.exit(f"{path} is missing: run `python {step}` first{hint}")


def require_runs(parts: list[str], step: str, file: str = "COMPLETE") -> None:
    """Stop with a clear message when ``step`` has not written ``file`` for one of ``parts`` yet."""
    missing = [part for part in parts if not (run_folder(part) / file).exists()]
    if not missing:
        return
    command = step if len(missing) == len(PARTS) else f"{step} --only {missing[0]}"
    rest = [part for part in parts if part not in missing]
    hint = f" (or pass --only {rest[0]} to go on with the {rest[0]} alone)" if rest else ""
    sys.exit(f"{run_folder(missing[0]) / file} is missing: run `python {command}` first{hint}")


def main_guard(body) -> int:
    """Run ``body()``; a user error (bad data, bad setting) prints its problems and exits with code 2."""
    try:
        body()
    except TunelabError as err:
        report_problems(err)
        return 2
    return 0


@contextmanager
def timed(step: str):
    """Record how long ``step`` took in models/timings.json (results.py shows the table), once it succeeds."""
    started = time.perf_counter()
    yield
    seconds = round(time.perf_counter() - started, 1)
    MODELS.mkdir(parents=True, exist_ok=True)
    times = json.loads(TIMINGS.read_text(encoding="utf-8")) if TIMINGS.exists() else {}
    times[step] = seconds
    TIMINGS.write_text(json.dumps(times, indent=1) + "\n", encoding="utf-8")


def drafter_copy(report: dict | None) -> dict:
    """Which copy of the drafter writes the drafts, from quantize.py's measurements (``quantization.json``).

    The fastest copy for one reply (batch 1) among the quantized ones and the bf16 cast whose perplexity
    stays within ``WORSE_PERPLEXITY_RATIO`` times fp32's (tunelab's bar: `tunelab quantize --compare` warns
    above it); the merged fp32 model when none does; the adapter as trained before quantize.py has run.
    Returns {"variant" (for load_run), "precision", "name", "why"}.
    """
    from tunelab.evaluation.measure import TIMED_NEW_TOKENS

    if report is None:
        return {"variant": None, "precision": "fp32", "name": "adapter",
                "why": "quantize.py has not measured the CPU copies yet"}
    rows = [r for r in report["rows"] if "error" not in r]
    fp32 = next((r for r in rows if r["variant"] == report["reference"]), None)
    candidates = [r for r in rows if r["variant"] not in ("merged", "model", "adapter") and fp32 is not None
                  and keeps_quality(r, fp32)]
    if not candidates:
        return {"variant": "merged", "precision": "fp32", "name": "merged",
                "why": f"no quantized copy kept perplexity within {WORSE_PERPLEXITY_RATIO:g}x of fp32's"}
    best = min(candidates, key=lambda r: r["latency_ms"]["1"])
    why = (f"of the copies whose perplexity stays within {WORSE_PERPLEXITY_RATIO:g}x of fp32's, the fastest for one "
           f"reply: {best['latency_ms']['1']:.0f} ms for {TIMED_NEW_TOKENS} tokens, perplexity "
           f"{best['metric_value']:.3f} vs {fp32['metric_value']:.3f}")
    if fp32["latency_ms"]["1"] < best["latency_ms"]["1"]:
        why += f"; the merged fp32 model was faster still on this machine ({fp32['latency_ms']['1']:.0f} ms)"
    if best["variant"] == "bf16":
        return {"variant": "merged", "precision": "bf16", "name": "bf16", "why": why}
    return {"variant": best["variant"], "precision": "fp32", "name": best["variant"], "why": why}


def ticket_of(prompt: str) -> str:
    """The customer's message in a drafter prompt (the instruction, a blank line, then the message)."""
    return prompt.split("\n\n", 1)[-1]


def house_style(predictions: list[dict]) -> dict | None:
    """How many base and tuned drafts open and close as every reference reply does (the opening and closing
    the references share, found in them: nothing typed here); None when the references share neither."""
    references = [p["reference"].strip() for p in predictions]
    opening = os.path.commonprefix(references)
    opening = opening[: opening.rfind(".") + 1] if "." in opening else opening.strip()
    closing = os.path.commonprefix([r[::-1] for r in references])[::-1].lstrip(" .!?,;:")
    opening, closing = (part if len(part) >= 8 else "" for part in (opening, closing))  # too short to be a style
    if not opening and not closing:
        return None

    def styled(text: str) -> bool:
        text = text.strip()
        return text.startswith(opening) and text.endswith(closing)

    return {"opening": opening, "closing": closing, "examples": len(predictions),
            "base": sum(styled(p["base_output"]) for p in predictions),
            "tuned": sum(styled(p["tuned_output"]) for p in predictions)}
