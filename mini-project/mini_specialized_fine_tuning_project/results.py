"""Step 6: write the measured results of both models and the router's error analysis into README.md.

    python results.py              # rewrites the part of README.md between the results markers
    python results.py --print      # print it instead

Everything in that section is computed from the run folders models/ticket-router/ and
models/ticket-drafter/ (data_report.json, metrics.json, eval.json, predictions.jsonl, quantization.json)
and from models/timings.json, where each script records how long its steps took: nothing is typed in, so
rerunning the pipeline and this script keeps the README true. The drafter's sections say which step to
run when its files are missing.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections import Counter
from pathlib import Path

from project import DRAFTER, README, ROUTER, TIMINGS, drafter_copy, house_style, require, ticket_of

from tunelab.evaluation.measure import TIMED_NEW_TOKENS
from tunelab.machine import cpu_description
from tunelab.rundir import read_json, read_jsonl
from tunelab.tables import markdown_table, replace_marked

THRESHOLDS = (0.5, 0.7, 0.9)
SHOWN_DRAFTS = 2
STEPS = ("data_prep.py", "train.py: router", "train.py: drafter", "evaluate.py: router", "evaluate.py: drafter",
         "quantize.py: router", "quantize.py: drafter", "inference.py")


def load(folder: Path = ROUTER) -> dict:
    run = {name: read_json(folder / f"{name}.json") for name in ("data_report", "metrics", "eval")}
    run["predictions"] = read_jsonl(folder / "predictions.jsonl")
    quantization = folder / "quantization.json"
    run["quantization"] = read_json(quantization) if quantization.exists() else None
    return run


def data_and_training(run: dict) -> str:
    d, m = run["data_report"], run["metrics"]
    splits = ", ".join(f"{s['examples']:,} {name}" for name, s in d["splits"].items())
    counts = d["splits"]["train"]["label_distribution"]
    low, high = min(counts.values()), max(counts.values())
    per_queue = f"{low} each" if low == high else f"{low} to {high}"
    return (f"**Data:** {splits} tickets, {len(d['labels'])} queues (training tickets per queue: {per_queue}); "
            f"{d['leakage'].get('test_in_train', 0)} test tickets also occur in train.\n\n"
            f"**Training** (`python train.py`): {m['method']} on {d['tokenizer']}, {m['trainable_params']:,} of "
            f"{m['total_params']:,} parameters trained ({m['trainable_percent']:.2f}%), {m['train_seconds']:.0f} s on "
            f"{m['device']}, peak RSS {m['peak_rss_mb']:.0f} MiB, adapter {m['artifact_size_mb']:.2f} MiB; best "
            f"validation accuracy {m['best_eval_metric']:.4f}.")


def metric_rows(report: dict) -> list[list]:
    """One row per metric of an eval report: base, tuned, and the difference with its 95% CI."""
    return [[name, r["base"], r["tuned"], f"{r['delta']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"]
            for name, r in report["metrics"].items()]


def scores(run: dict) -> str:
    e = run["eval"]
    rows = metric_rows(e)
    return (f"**Base vs fine-tuned** (`python evaluate.py`, {e['examples']:,} test tickets; base: {e['base']}):\n\n"
            + markdown_table(["metric", "base", "fine-tuned router", "difference [95% CI]"], rows))


def threads(report: dict) -> str:
    return f"{report['threads']} thread" + ("" if report["threads"] == 1 else "s")


def deployment(run: dict) -> str:
    q = run["quantization"]
    if q is None:
        return "**Deployment:** run `python quantize.py` to measure the quantized copies."
    rows = [[r["variant"], r["disk_mb"], r["latency_ms"]["1"], r["latency_ms"]["8"], r["metric_value"],
             r.get("agreement")] for r in q["rows"] if "error" not in r]
    return (f"**Deployment** (`python quantize.py`; median latency on {q['machine']}, {threads(q)}):\n\n"
            + markdown_table(["copy", "disk MiB", "1 ticket ms", "8 tickets ms", "accuracy", "routes like fp32"], rows))


def errors(run: dict) -> tuple[str, dict]:
    preds = run["predictions"]
    wrong = [p for p in preds if p["reference"] != p["tuned_output"]]
    pairs = Counter((p["reference"], p["tuned_output"]) for p in wrong)
    example = {pair: next(p["input"] for p in wrong if (p["reference"], p["tuned_output"]) == pair) for pair in pairs}
    rows = [[true, routed, n, example[(true, routed)][:80]] for (true, routed), n in pairs.most_common(5)]
    per_class = run["eval"]["per_class"]["tuned"]
    weakest = sorted(per_class, key=lambda name: (per_class[name]["recall"], name))[:3]
    verb = "goes" if len(wrong) == 1 else "go"
    text = (f"**Errors:** {len(wrong)} of {len(preds)} test tickets {verb} to the wrong queue. The most frequent "
            "confusions:\n\n" + (markdown_table(["true queue", "routed to", "tickets", "example"], rows) if rows
                                 else "(none)")
            + "\n\nLowest recall: " + ", ".join(f"{n} {per_class[n]['recall']:.3f}" for n in weakest) + ".")
    return text, {"wrong": wrong, "pairs": pairs, "total": len(preds)}


def confidence(run: dict) -> tuple[str, list[dict]]:
    preds = run["predictions"]
    table = []
    for t in THRESHOLDS:
        kept = [p for p in preds if p["tuned_probability"] >= t]
        correct = sum(p["reference"] == p["tuned_output"] for p in kept)
        table.append({"threshold": t, "coverage": len(kept) / len(preds),
                      "accuracy": correct / len(kept) if kept else None})
    rows = [[r["threshold"], f"{r['coverage']:.1%}", r["accuracy"]] for r in table]
    return ("**Confidence:** routing automatically only when the router's probability reaches a threshold, and "
            "sending the rest to a person:\n\n"
            + markdown_table(["threshold", "tickets routed automatically", "accuracy on those"], rows)), table


def next_steps(run: dict, err: dict, conf: list[dict]) -> str:
    tips = []
    if err["wrong"]:
        top = err["pairs"].most_common(3)
        share = sum(n for _, n in top) / len(err["wrong"])
        names = "; ".join(f"{a} -> {b}" for (a, b), _ in top)
        which = (f"The {len(top)} most frequent confusions ({names}) hold" if len(top) > 1
                 else f"One confusion ({names}) holds")
        tips.append(f"- {which} {share:.0%} of the errors: read those tickets, add training tickets that separate "
                    "the queues, and check whether their definitions overlap (if the business treats them alike, "
                    "merge them).")
    overall = 1 - len(err["wrong"]) / err["total"]
    helpful = [c for c in conf if c["accuracy"] is not None and c["accuracy"] > overall and c["coverage"] < 1]
    if helpful:
        best = max(helpful, key=lambda c: (c["accuracy"], c["coverage"]))
        tips.append(f"- A confidence threshold pays: at {best['threshold']} the router handles {best['coverage']:.1%} "
                    f"of tickets automatically at {best['accuracy']:.1%} accuracy (vs {overall:.1%} for all); the "
                    "rest go to a person.")
    elif err["wrong"]:
        tips.append(f"- A confidence threshold would not help: the router is as accurate on its confident answers "
                    f"as on all of them ({overall:.1%}), so its mistakes are confident ones; fix them with data.")
    validation = run["metrics"]["best_eval_metric"]
    test = run["eval"]["metrics"]["accuracy"]["tuned"]
    validation_rows = run["data_report"]["splits"]["validation"]["examples"]
    if validation - test > max(0.01, 1 / validation_rows):  # more than one validation ticket's worth
        tips.append(f"- Validation accuracy ({validation:.4f}) is above test ({test:.4f}): the validation split is "
                    "easier or too small to choose settings with; enlarge it before sweeping settings.")
    counts = run["data_report"]["splits"]["train"]["label_distribution"]
    weakest = min(run["eval"]["per_class"]["tuned"].items(), key=lambda item: (item[1]["recall"], item[0]))[0]
    tips.append(f"- The weakest queue by recall ({weakest}) has {counts.get(weakest, 0)} training tickets; more real "
                "tickets for it, especially ones like the misrouted examples above, are the likeliest next gain.")
    q = run["quantization"]
    if q:
        rows = [r for r in q["rows"] if "error" not in r and r["variant"] != "adapter"]
        fastest = min(rows, key=lambda r: r["latency_ms"]["8"])
        if fastest["variant"] in ("merged", "model"):
            single = min(rows, key=lambda r: r["latency_ms"]["1"])
            alone = ("" if single["variant"] == fastest["variant"] else
                     f" ({single['variant']} was faster for a single ticket: {single['latency_ms']['1']:.1f} vs "
                     f"{fastest['latency_ms']['1']:.1f} ms)")
            tips.append(f"- For CPU serving, the merged fp32 model was the fastest copy for batches of 8 "
                        f"tickets{alone}; the quantized copies mainly save memory.")
        else:
            tips.append(f"- For CPU serving, {fastest['variant']} was the fastest copy "
                        f"({fastest['latency_ms']['8']:.1f} ms for 8 tickets) and routes "
                        f"{fastest.get('agreement', 1):.1%} of tickets like fp32, at "
                        f"{fastest.get('metric_change', 0):+.4f} accuracy.")
    return "**What would help next** (derived from the numbers above):\n\n" + "\n".join(tips)


def drafter_training(run: dict) -> str:
    d, m = run["data_report"], run["metrics"]
    splits = ", ".join(f"{s['examples']:,} {name}" for name, s in d["splits"].items())
    return (f"**Drafter training** (`python train.py`): {m['method']} on {d['tokenizer']}, {splits} messages with "
            f"their replies; {m['trainable_params']:,} of {m['total_params']:,} parameters trained "
            f"({m['trainable_percent']:.2f}%), {m['steps']} steps in {m['train_seconds']:.0f} s on {m['device']}, "
            f"peak RSS {m['peak_rss_mb']:.0f} MiB, adapter {m['artifact_size_mb']:.2f} MiB; final training loss "
            f"{m['final_train_loss']:.4f}.")


def drafter_scores(run: dict) -> str:
    e = run["eval"]
    rows = metric_rows(e)
    style = house_style(run["predictions"])
    style_text = "" if style is None else (
        f"\n\nHouse style: {style['tuned']} of {style['examples']} fine-tuned drafts open with "
        f"\"{style['opening']}\" and end with \"{style['closing']}\" as every reference reply does, against "
        f"{style['base']} of the base model's.")
    return (f"**Drafter: base vs fine-tuned** (`python evaluate.py`, {e['examples']:,} held-out messages; base: "
            f"{e['base']}; greedy drafts of at most {e['settings']['max_new_tokens']} tokens scored against the "
            "reference replies, perplexity of those replies; lower is better for perplexity and mean_loss):\n\n"
            + markdown_table(["metric", "base", "fine-tuned drafter", "difference [95% CI]"], rows) + style_text)


def one_line(text: str) -> str:
    return " ".join(text.split())


def drafts(run: dict) -> str:
    shown = run["predictions"][:SHOWN_DRAFTS]
    blocks = [f"{i}. Ticket: _{one_line(ticket_of(p['input']))}_\n   - reference: {one_line(p['reference'])}\n"
              f"   - base: {one_line(p['base_output'])}\n   - fine-tuned drafter: {one_line(p['tuned_output'])}"
              for i, p in enumerate(shown, start=1)]
    return (f"**Drafts side by side** (the first {len(shown)} test messages; all {len(run['predictions'])} are in "
            "models/ticket-drafter/predictions.jsonl):\n\n" + "\n".join(blocks))


def drafter_pick(q: dict | None) -> str:
    """Which copy `python inference.py` drafts with by default, and why: project.drafter_copy, the choice
    inference.py itself makes, applied to the drafter run's quantization.json."""
    pick = drafter_copy(q)
    return f"`python inference.py` drafts with **{pick['name']}**: {pick['why']}."


def drafter_deployment(run: dict) -> str:
    q = run["quantization"]
    if q is None:
        return ("**Drafter deployment:** run `python quantize.py` to measure the drafter's CPU copies.\n\n"
                + drafter_pick(q))
    rows = [[r["variant"], r["disk_mb"], r["weights_mb"], r["latency_ms"]["1"], r["latency_ms"]["8"],
             r["throughput"], r["metric_value"], r.get("agreement")] for r in q["rows"] if "error" not in r]
    failed = [f"{r['variant']} ({r['error']})" for r in q["rows"] if "error" in r]
    examples = f"the first {q['examples']}" if "examples" in q else "the"
    return (f"**Drafter deployment** (`python quantize.py`; median latency of {TIMED_NEW_TOKENS} generated tokens "
            f"on {q['machine']}, {threads(q)}; perplexity on {examples} test messages; bf16 is the fp32 "
            "model cast when loaded, nothing saved):\n\n"
            + markdown_table(["copy", "disk MiB", "weights MiB", "1 reply ms", "8 replies ms", "tokens/s at 8",
                              "perplexity", "tokens like fp32"], rows)
            + (f"\n\nFailed to measure: {'; '.join(failed)}." if failed else "")
            + "\n\n" + drafter_pick(q))


def drafter_sections() -> list[str]:
    if not (DRAFTER / "eval.json").exists():
        trained = (DRAFTER / "COMPLETE").exists()
        step = "evaluate.py --only drafter" if trained else "train.py --only drafter"
        missing = f"**Drafter:** run `python {step}` (and the steps after it) to measure the reply drafter."
        if not trained:
            return [missing]
        q = DRAFTER / "quantization.json"  # a trained drafter already writes drafts: say with which copy
        return [missing, drafter_pick(read_json(q) if q.exists() else None)]
    run = load(DRAFTER)
    return [drafter_training(run), drafter_scores(run), drafts(run), drafter_deployment(run)]


def timings() -> str | None:
    if not TIMINGS.exists():
        return None
    times = read_json(TIMINGS)
    steps = [s for s in STEPS if s in times] + sorted(set(times) - set(STEPS))
    rows = [[step, f"{times[step]:.0f}", f"{times[step] / 60:.1f}"] for step in steps]
    rows.append(["all", f"{sum(times[s] for s in steps):.0f}", f"{sum(times[s] for s in steps) / 60:.1f}"])
    return ("**Time per step** (the last run of each on this machine, Python start-up excluded; a first run also "
            "holds SmolLM2's download):\n\n" + markdown_table(["step", "seconds", "minutes"], rows))


def section() -> str:
    run = load()
    error_text, err = errors(run)
    conf_text, conf = confidence(run)
    stamp = (f"_Generated by `python results.py` on {datetime.date.today().isoformat()} ({cpu_description()}) "
             "from models/ticket-router/ and models/ticket-drafter/._")
    router = ["### The router", data_and_training(run), scores(run), deployment(run), error_text, conf_text,
              next_steps(run, err, conf)]
    return "\n\n".join([stamp, *router, "### The drafter", *drafter_sections(), *filter(None, [timings()])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the section instead of writing README.md")
    args = parser.parse_args(argv)
    require(ROUTER / "eval.json", "evaluate.py")
    text = section()
    if args.print:
        print(text)
    else:
        README.write_text(replace_marked(README.read_text(encoding="utf-8"), "results", text), encoding="utf-8")
        print(f"updated the results section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
