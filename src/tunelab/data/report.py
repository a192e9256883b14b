"""The data report: what preparation did to the data, as JSON and as a printed summary."""

from __future__ import annotations

from collections import Counter

from tunelab.data.tokenize import IGNORE_INDEX, EncodeStats


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return int(ordered[int(rank) - 1])


def split_report(rows: int, records: list[dict], stats: EncodeStats, duplicates: int,
                 labels: list[str] | None) -> dict:
    """Counts for one split."""
    lengths = stats.lengths or [0]
    report = {
        "rows": rows,
        "examples": len(records),
        "duplicates_removed": duplicates,
        "truncated": stats.truncated,
        "dropped_too_long": stats.dropped_too_long,
        "dropped_no_target": stats.dropped_no_target,
        "split_into_chunks": stats.chunked,
        "tokens": {"p50": percentile(lengths, 50), "p95": percentile(lengths, 95), "max": max(lengths),
                   "total": sum(len(r["input_ids"]) for r in records)},
    }
    if labels is not None:
        report["label_distribution"] = dict(sorted(Counter(labels).items()))
    return report


def render_sample(record: dict, tokenizer, label_names: list[str] | None) -> list[dict]:
    """The first training example as text spans marked as in or out of the loss."""
    if label_names is not None:
        return [{"text": tokenizer.decode(record["input_ids"]), "in_loss": False},
                {"text": f"label: {label_names[record['labels']]}", "in_loss": True}]
    spans: list[dict] = []
    for token, label in zip(record["input_ids"], record["labels"]):
        in_loss = label != IGNORE_INDEX
        if spans and spans[-1]["in_loss"] == in_loss:
            spans[-1]["ids"].append(token)
        else:
            spans.append({"ids": [token], "in_loss": in_loss})
    return [{"text": tokenizer.decode(s["ids"]), "in_loss": s["in_loss"]} for s in spans]


def summary_text(report: dict) -> str:
    """The summary `tunelab prepare` prints."""
    lines = [f"prepared {report['task']} data ({report['format']} format) with {report['tokenizer']}",
             f"{'split':<11}{'rows':>7}{'examples':>10}{'dupes':>7}{'truncated':>11}{'dropped':>9}"
             f"{'tok p50':>9}{'p95':>6}{'max':>7}"]
    for split, s in report["splits"].items():
        dropped = s["dropped_too_long"] + s["dropped_no_target"]
        lines.append(f"{split:<11}{s['rows']:>7}{s['examples']:>10}{s['duplicates_removed']:>7}{s['truncated']:>11}"
                     f"{dropped:>9}{s['tokens']['p50']:>9}{s['tokens']['p95']:>6}{s['tokens']['max']:>7}")
    if report["split_from_train"]:
        lines.append(f"split from train (seed {report['seed']}): {', '.join(report['split_from_train'])}")
    for split, count in report["leakage"].items():
        if count:
            lines.append(f"warning: {count} {split.replace('_in_train', '')} rows have an input that also occurs "
                         "in train; scores on that split will look better than they are")
    if "labels" in report:
        train_dist = report["splits"]["train"]["label_distribution"]
        lines.append(f"labels ({len(report['labels'])}): " + ", ".join(f"{k} {v}" for k, v in train_dist.items()))
    if report.get("chat_template"):
        lines.append(f"chat template: {report['chat_template']}")
    lines.append("training example ([no loss] is masked with -100; [loss] is what the model learns):")
    for span in report["sample"]:
        tag = "[loss]   " if span["in_loss"] else "[no loss]"
        text = span["text"].replace("\n", "\n" + " " * 12)
        lines.append(f"  {tag} {text}")
    return "\n".join(lines)
