"""Step 6: write the measured results and the error analysis into README.md.

    python results.py              # rewrites the part of README.md between the results markers
    python results.py --print      # print it instead

Everything in that section is computed from the run folder (data_report.json, metrics.json, eval.json,
predictions.jsonl, quantization.json): nothing is typed in, so rerunning the pipeline and this script
keeps the README true.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter

from project import README, RUN, require

from tunelab.machine import cpu_description
from tunelab.rundir import read_json
from tunelab.tables import markdown_table, replace_marked

THRESHOLDS = (0.5, 0.7, 0.9)


def load() -> dict:
    run = {name: read_json(RUN / f"{name}.json") for name in ("data_report", "metrics", "eval")}
    run["predictions"] = [json.loads(line) for line in (RUN / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    quantization = RUN / "quantization.json"
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


def scores(run: dict) -> str:
    e = run["eval"]
    rows = [[name, r["base"], r["tuned"], f"{r['delta']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"]
            for name, r in e["metrics"].items()]
    return (f"**Base vs fine-tuned** (`python evaluate.py`, {e['examples']:,} test tickets; base: {e['base']}):\n\n"
            + markdown_table(["metric", "base", "fine-tuned router", "difference [95% CI]"], rows))


def deployment(run: dict) -> str:
    q = run["quantization"]
    if q is None:
        return "**Deployment:** run `python quantize.py` to measure the quantized copies."
    rows = [[r["variant"], r["disk_mb"], r["latency_ms"]["1"], r["latency_ms"]["8"], r["metric_value"],
             r.get("agreement")] for r in q["rows"] if "error" not in r]
    return (f"**Deployment** (`python quantize.py`; median latency on {q['machine']}, {q['threads']} threads):\n\n"
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
    if validation - test > 0.01:
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
            tips.append(f"- For CPU serving, the merged fp32 model was the fastest copy for batches of 8 tickets{alone}; "
                        "the quantized copies mainly save memory.")
        else:
            tips.append(f"- For CPU serving, {fastest['variant']} was the fastest copy ({fastest['latency_ms']['8']:.1f} "
                        f"ms for 8 tickets) and routes {fastest.get('agreement', 1):.1%} of tickets like fp32, at "
                        f"{fastest.get('metric_change', 0):+.4f} accuracy.")
    return "**What would help next** (derived from the numbers above):\n\n" + "\n".join(tips)


def section() -> str:
    run = load()
    error_text, err = errors(run)
    conf_text, conf = confidence(run)
    stamp = (f"_Generated by `python results.py` on {datetime.date.today().isoformat()} ({cpu_description()}) "
             "from models/ticket-router/._")
    return "\n\n".join([stamp, data_and_training(run), scores(run), deployment(run), error_text, conf_text,
                        next_steps(run, err, conf)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the section instead of writing README.md")
    args = parser.parse_args(argv)
    require(RUN / "eval.json", "evaluate.py")
    text = section()
    if args.print:
        print(text)
    else:
        README.write_text(replace_marked(README.read_text(encoding="utf-8"), "results", text), encoding="utf-8")
        print(f"updated the results section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
