"""``tunelab quantize --compare``: every variant of a run measured against its fp32 model.

Each variant is measured in its own process (``tunelab.evaluation.measure``) on the run's test split:
size on disk, weights memory (all and transformer blocks), peak RSS, latency at batch 1 and 8
(median of repeated timed runs after warm-up), throughput, the task metric and its change,
agreement with fp32 (same label, or the share of greedy tokens that match), and how far the
outputs moved (classification: mean total-variation distance of the class probabilities;
causal LM: mean absolute change of the per-example loss, in nats).

For adapter runs the adapter itself (on the base it was trained on: 4-bit for qlora) is
measured too, so the report states how far the merged fp32 model is from what was trained. A ``bf16``
row (the fp32 model cast to bf16 at load) is added where ``quantize.precision`` asks for it: by default
only on CPUs whose bf16 matmuls measure clearly faster than fp32.
Writes ``RUN/quantization.json`` and ``RUN/quantization.md``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from tunelab import machine
from tunelab.config.schema import QuantizeSection, TunelabConfig
from tunelab.machine import cpu_description
from tunelab.rundir import RunDir, folder_size_mb, read_json, versions, write_json
from tunelab.tables import markdown_table, text_table

COLUMNS = ["variant", "disk MiB", "weights MiB", "blocks MiB", "blocks x fp32", "peak RSS MiB",
           "bs1 ms", "bs8 ms", "throughput", "metric", "change", "agreement", "output distance"]


def compare(run_dir: Path, cfg: TunelabConfig, methods: list[str], split: str | None = None,
            max_examples: int | None = None, echo: Callable[[str], None] = lambda _: None,
            trust_remote_code: bool = False) -> dict:
    """Measure the fp32 model, the adapter (if any) and ``methods``; write and return the report."""
    run = RunDir(run_dir)
    split = split or cfg.eval.split
    reference = "model" if run.full_model else "merged"
    # One thread count for every variant, chosen once, so the latencies compare like with like.
    threads = machine.apply(cfg.eval_threads())
    bf16 = machine.with_precision(machine.choose_device("cpu"), cfg.quantize.precision, "quantize.precision").precision
    variants = ([reference] + (["adapter"] if reference == "merged" else []) + (["bf16"] if bf16["used"] == "bf16" else [])
                + list(methods))
    rows = []
    for i, variant in enumerate(variants, start=1):
        echo(f"measuring {variant} ({i}/{len(variants)})")
        loads, precision = (reference, "bf16") if variant == "bf16" else (variant, "fp32")
        row = measure_in_child(run_dir, loads, split, max_examples, threads, trust_remote_code, cfg.quantize, precision)
        row["variant"] = variant
        folder = run.variant_dir(None if loads in ("model", "adapter") else loads)
        row["disk_mb"] = None if variant == "bf16" else round(folder_size_mb(folder), 2)  # nothing saved in bf16
        rows.append(row)
    ref = rows[0]
    for row in rows:
        if "error" not in row and "error" not in ref:
            row.update(relative_to(ref, row))
    for row in rows:
        row.pop("probabilities", None), row.pop("example_nll", None), row.pop("completions", None)
    report = {"run": str(run_dir), "task": cfg.task, "split": split, "reference": reference,
              "machine": cpu_description(), "threads": threads, "bf16": bf16,
              "timing": {"warmup": cfg.quantize.timing_warmup, "repeats": cfg.quantize.timing_repeats,
                         "statistic": "median"},
              "versions": versions(), "rows": rows}
    write_json(run.quantization_report_path, report)
    run.quantization_markdown_path.write_text(markdown_report(report), encoding="utf-8")
    return report


def measure_in_child(run_dir: Path, variant: str, split: str, max_examples: int | None, threads: int,
                     trust_remote_code: bool = False, timing: QuantizeSection | None = None,
                     precision: str = "fp32") -> dict:
    """Run ``tunelab.evaluation.measure`` in a fresh process; a failure becomes a row that says why.

    ``timing``: the ``quantize`` settings in force here, overrides included; the child reads only
    the run's config.yaml, so their timing settings are passed on explicitly.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "tunelab.evaluation.measure", str(run_dir), variant, "--split", split, "--out", str(out),
                   "--threads", str(threads), "--precision", precision]
        if timing is not None:
            command += ["--timing-repeats", str(timing.timing_repeats), "--timing-warmup", str(timing.timing_warmup)]
        if max_examples:
            command += ["--max-examples", str(max_examples)]
        if trust_remote_code:
            command.append("--trust-remote-code")
        child = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if child.returncode != 0 or not out.exists():
            reason = (child.stderr.strip().splitlines() or ["no output"])[-1][:300]
            return {"variant": variant, "error": reason}
        return read_json(out)


def relative_to(ref: dict, row: dict) -> dict:
    """The row's change against the fp32 reference."""
    extra = {"metric_change": row["metric_value"] - ref["metric_value"],
             "block_weights_ratio": round(row["block_weights_mb"] / ref["block_weights_mb"], 4),
             "speedup_bs8": round(ref["latency_ms"]["8"] / row["latency_ms"]["8"], 3)}
    if "probabilities" in row:
        labels_ref = [max(range(len(p)), key=p.__getitem__) for p in ref["probabilities"]]
        labels = [max(range(len(p)), key=p.__getitem__) for p in row["probabilities"]]
        extra["agreement"] = sum(a == b for a, b in zip(labels_ref, labels)) / len(labels)
        extra["output_distance"] = sum(0.5 * sum(abs(x - y) for x, y in zip(p, q))
                                       for p, q in zip(ref["probabilities"], row["probabilities"])) / len(labels)
        extra["output_distance_unit"] = "mean total-variation distance of class probabilities"
    else:
        extra["agreement"] = token_agreement(ref["completions"], row["completions"])
        extra["output_distance"] = sum(abs(a - b) for a, b in zip(ref["example_nll"], row["example_nll"])) / max(
            len(ref["example_nll"]), 1)
        extra["output_distance_unit"] = "mean absolute change of per-example loss (nats)"
    return extra


def token_agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Share of the reference's greedy tokens that the other model produced at the same position."""
    total = sum(max(len(a), len(b)) for a, b in zip(reference, other))
    same = sum(x == y for a, b in zip(reference, other) for x, y in zip(a, b))
    return same / total if total else 1.0


def table_cells(row: dict) -> list:
    if "error" in row:
        return [row["variant"]] + ["-"] * (len(COLUMNS) - 2) + [f"failed: {row['error']}"]
    change = row.get("metric_change")
    return [row["variant"], row["disk_mb"], row["weights_mb"], row["block_weights_mb"], row.get("block_weights_ratio"),
            row["peak_rss_mb"], row["latency_ms"]["1"], row["latency_ms"]["8"],
            f"{row['throughput']:.4g} {row['throughput_unit']}", f"{row['metric']} {row['metric_value']:.4f}",
            None if change is None else f"{change:+.4f}", row.get("agreement"), row.get("output_distance")]


def summary_text(report: dict) -> str:
    return "\n".join([text_table(COLUMNS, [table_cells(r) for r in report["rows"]]), *quality_warnings(report)])


def markdown_report(report: dict) -> str:
    return (f"# Quantization: {report['run']}\n\n" + "\n\n".join(notes(report)) + "\n\n"
            + markdown_table(COLUMNS, [table_cells(r) for r in report["rows"]]) + "\n")


def notes(report: dict) -> list[str]:
    """How the table was measured, and how far the merged model is from the adapter as trained."""
    rows = [r for r in report["rows"] if "error" not in r]
    distance = next((r["output_distance_unit"] for r in rows if "output_distance_unit" in r), "")
    threads = f"{report['threads']} threads" if isinstance(report["threads"], int) else report["threads"]
    paragraphs = [f"Measured on {report['machine']} ({threads}), {report['task']} on the "
             f"{report['split']} split, each variant in its own process. Latency: median of "
             f"{report['timing']['repeats']} timed calls after {report['timing']['warmup']} warm-up calls. "
             f"Change, agreement and output distance are against `{report['reference']}` (fp32); "
             f"output distance is the {distance}."]
    adapter = next((r for r in rows if r["variant"] == "adapter"), None)
    if adapter and "agreement" in adapter:
        paragraphs.append(f"The adapter as trained (on its training-time base) vs the merged fp32 model: agreement "
                     f"{adapter['agreement']:.4f}, output distance {adapter['output_distance']:.4g}, metric change "
                     f"{adapter['metric_change']:+.4f}.")
    return paragraphs + bf16_note(report.get("bf16")) + quality_warnings(report)


def bf16_note(record: dict | None) -> list[str]:
    """Why the table has a bf16 row or not (``record``: ``with_precision``'s, for ``quantize.precision``)."""
    if not record:
        return []
    speeds = (f" (bf16 matmuls at {record['bf16_gflops']:g} GFLOP/s, fp32 at {record['fp32_gflops']:g})"
              if "bf16_gflops" in record else "")
    if record["used"] == "bf16":
        return [f"`bf16`: the fp32 model with its weights cast to bf16 when loaded; nothing is saved in bf16 "
                f"(quantize.precision={record['setting']}{speeds})."]
    return [f"No bf16 row: quantize.precision={record['setting']}{speeds}; quantize.precision=bf16 adds it "
            f"anyway."]


# dynamic-int8 quantizes each layer's input per tensor as it runs, so a layer whose inputs carry a few
# huge outlier features rounds all the others to zero: in SmolLM2-135M the inputs of mlp.down_proj reach
# |x| ~3000 where most are below 1, and test perplexity went 21 -> 65 (26.7 with those layers kept fp32).
WORSE_PERPLEXITY_RATIO = 1.25   # perplexity above 1.25x fp32's
WORSE_ACCURACY_POINTS = 0.02    # accuracy more than 2 points below fp32's
# quantize.keep_full_precision patterns for the layers with such inputs.
KEEP_LLAMA, KEEP_BERT = r"mlp\.down_proj", r"layer\.\d+\.output\.dense"


def keeps_quality(row: dict, ref: dict) -> bool:
    """Whether a copy stays within tunelab's quality bar against fp32: perplexity at most WORSE_PERPLEXITY_RATIO
    times fp32's; accuracy (any other metric) at most WORSE_ACCURACY_POINTS below it."""
    if row.get("metric_value") is None or ref.get("metric_value") is None:
        return True  # nothing measured to judge it by
    if row["metric"] == "perplexity":
        return row["metric_value"] <= WORSE_PERPLEXITY_RATIO * ref["metric_value"]
    return row["metric_value"] >= ref["metric_value"] - WORSE_ACCURACY_POINTS


def quality_bar(metric: str) -> str:
    if metric == "perplexity":
        return f"perplexity at most {WORSE_PERPLEXITY_RATIO:g}x fp32's"
    return f"{metric} at most {100 * WORSE_ACCURACY_POINTS:g} points below fp32's"


def quality_warnings(report: dict) -> list[str]:
    """A line of advice when dynamic-int8 lost much of fp32's quality (its activation outliers have a cure)."""
    rows = {r["variant"]: r for r in report["rows"] if "error" not in r}
    ref, row = rows.get(report["reference"]), rows.get("dynamic-int8")
    if ref is None or row is None or keeps_quality(row, ref):
        return []
    return [f"warning: dynamic-int8 lost much of fp32's quality ({row['metric']} {row['metric_value']:.4g} vs "
            f"{ref['metric_value']:.4g}): it quantizes each layer's input per tensor at run time, and layers whose "
            "inputs carry outlier features lose the most. Keep them in fp32 and measure again: tunelab quantize "
            f"{report['run']} --method dynamic-int8 --compare \"quantize.keep_full_precision=['{KEEP_LLAMA}']\" "
            f"(Llama-style models; BERT: '{KEEP_BERT}')"]


def fastest_kept(report: dict) -> dict | None:
    """The quantized copy or bf16 cast that is fastest at batch 8 among those faster than fp32 and within the
    quality bar (``keeps_quality``); None when no copy is both."""
    rows = [r for r in report["rows"] if "error" not in r]
    ref = next((r for r in rows if r["variant"] == report["reference"]), None)
    if ref is None:
        return None
    kept = [r for r in rows if r["variant"] not in ("model", "merged", "adapter") and keeps_quality(r, ref)
            and r["latency_ms"]["8"] < ref["latency_ms"]["8"]]
    return min(kept, key=lambda r: r["latency_ms"]["8"], default=None)


def tradeoffs(report: dict) -> list[str]:
    """What the table says, in sentences: the fastest, the smallest and the most accurate variant vs fp32
    (quantized copies and the bf16 cast; only saved copies compete for the smallest), and, when the fastest
    breaks the quality bar, the fastest that keeps it."""
    rows = [r for r in report["rows"] if "error" not in r]
    ref = next((r for r in rows if r["variant"] == report["reference"]), None)
    quantized = [r for r in rows if r["variant"] not in ("model", "merged", "adapter")]
    saved = [r for r in quantized if r.get("disk_mb") is not None]
    if ref is None or not quantized:
        return []

    def change(row: dict) -> str:
        return f"{row['metric']} {row.get('metric_change', 0.0):+.4f}, agreement {row.get('agreement', 1.0):.1%}"

    fastest = min(quantized, key=lambda r: r["latency_ms"]["8"])
    closest = max(quantized, key=lambda r: (r.get("agreement", 0.0), -r.get("output_distance", 0.0)))
    speedup = ref["latency_ms"]["8"] / fastest["latency_ms"]["8"]
    lines = [f"fastest at batch 8: {fastest['variant']}, {speedup:.2f}x fp32's speed "
             f"({fastest['latency_ms']['8']:.1f} vs {ref['latency_ms']['8']:.1f} ms; {change(fastest)})"]
    if not keeps_quality(fastest, ref):
        bar = quality_bar(fastest["metric"])
        best = fastest_kept(report)
        if best:
            lines.append(f"fastest within the quality bar ({bar}) at batch 8: {best['variant']}, "
                         f"{ref['latency_ms']['8'] / best['latency_ms']['8']:.2f}x fp32's speed ({change(best)})")
        else:
            lines.append(f"within the quality bar ({bar}) at batch 8: no copy is faster than fp32")
    if saved:
        smallest = min(saved, key=lambda r: r["block_weights_mb"])
        lines.append(f"smallest: {smallest['variant']}, transformer blocks at {smallest['block_weights_ratio']:.2f}x of "
                     f"fp32's memory, {smallest['disk_mb']:.1f} vs {ref['disk_mb']:.1f} MiB on disk ({change(smallest)})")
    lines.append(f"closest to fp32: {closest['variant']} ({change(closest)})")
    slower = [r["variant"] for r in quantized if r["latency_ms"]["8"] > ref["latency_ms"]["8"]]
    if slower:
        it = "they save" if len(slower) > 1 else "it saves"
        lines.append(f"slower than fp32 on this machine: {', '.join(slower)} ({it} memory, not time, here)")
    return lines
