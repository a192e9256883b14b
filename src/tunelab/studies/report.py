"""One self-contained HTML (or Markdown) report of runs, bake-offs and sweeps.

    tunelab report runs/demo runs/x-bakeoff --out report.html [--markdown]
    tunelab report runs/demo              # writes runs/demo/report.html

Everything read from a run folder is HTML-escaped: the app also puts these sections into its page.

Everything is inline (SVG charts, CSS); the file makes no network request, so it opens
offline and can be attached to an email or a pull request.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.evaluation.metrics import eval_findings, lower_is_better, worse_sentence, worse_than_base
from tunelab.rundir import (
    RunDir,
    eval_path,
    predictions_path,
    read_json,
    read_jsonl,
    read_optional,
    study_kind,
    study_path,
)
from tunelab.studies.charts import COLORS, WORSE_COLOR, bar_chart, line_chart
from tunelab.tables import fmt, interval, is_number, markdown_table, signed

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#202124}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #dadce0;padding:4px 8px;"
         "vertical-align:top}th{background:#f1f3f4}h2{border-bottom:1px solid #dadce0;padding-bottom:4px}"
         "h2,h3,p{overflow-wrap:anywhere}.charts{display:flex;flex-wrap:wrap;gap:12px}.changed{background:#fef7e0}"
         ".scroll{overflow:auto;max-width:100%}.worse{color:#c5221f}")
# The sections are also shown inside the app's page, without STYLE: what matters is inline too.
SCROLL_STYLE = "overflow:auto;max-width:100%"
WORSE_ROW = 'class="worse" style="background:#fce8e6"'
WORSE_TEXT = {True: 'class="worse significant" style="color:#c5221f;font-weight:bold"',
              False: 'class="worse" style="color:#c5221f"'}
CONFUSION_HEADER_CHARS, CONFUSION_ROW_CHARS = 16, 28
OTHER_COLORS = [c for c in COLORS if c != WORSE_COLOR]  # red means worse than base, and only that


def _e(value) -> str:
    """Any value read from a run folder, as HTML text."""
    return escape(str(value))


def _short(text, chars: int) -> str:
    text = str(text)
    return text if len(text) <= chars else text[:chars - 1] + "\u2026"


def bakeoff_findings(data: dict) -> list[tuple[str, dict]]:
    """(method, finding) for every bake-off method whose tuned score is worse than its base."""
    found = []
    for row in data.get("rows", []):
        if "error" in row:
            continue
        finding = worse_than_base(row.get("metric"), row.get("delta"), row.get("delta_ci95"),
                                  lower_is_better(str(row.get("metric"))))
        if finding:
            found.append((row["method"], finding))
    return found


def worse_html(finding: dict, who: str = "tuned") -> str:
    return f"<p {WORSE_TEXT[finding['significant']]}>Warning: {_e(worse_sentence(finding, who))}</p>"


def load_source(path: Path) -> dict:
    """Classify a folder as a run, a bake-off or a sweep and read what it holds."""
    kind = study_kind(path)
    if kind in ("bakeoff", "sweep"):
        return {"kind": kind, "path": path, "data": read_json(study_path(path, kind))}
    run = RunDir(path)
    if run.is_run and run.metrics_path.exists():
        return {"kind": "run", "path": path, "metrics": run.metrics(), "eval": read_optional(eval_path(path)),
                "log": read_jsonl(run.train_log_path), "predictions": read_jsonl(predictions_path(path))[:20],
                "quantization": read_optional(run.quantization_report_path)}
    raise TunelabError(f"{path}: not a finished run, bake-off or sweep folder (no metrics.json, bakeoff.json "
                       "or sweep.json)")


def html_table(headers: list[str], rows: list[list], highlight: list[bool] | None = None,
               worse: list[bool] | None = None) -> str:
    """A table in a container that scrolls sideways when the table is wider than the page."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)

    def opening(i: int) -> str:
        if worse and worse[i]:
            return f"<tr {WORSE_ROW}>"
        return "<tr class=changed>" if highlight and highlight[i] else "<tr>"

    body = "".join(opening(i) + "".join(f"<td>{_e(fmt(v))}</td>" for v in row) + "</tr>" for i, row in enumerate(rows))
    return f'<div class="scroll" style="{SCROLL_STYLE}"><table><tr>{head}</tr>{body}</table></div>'


def run_section(source: dict) -> str:
    path, m, report = source["path"], source["metrics"], source["eval"]
    parts = [f"<h2>Run {_e(path)}</h2>",
             html_table(["method", "trainable params", "trainable %", "train s", "samples/s", "peak RSS MiB",
                         "artifact MiB", "final train loss"],
                        [[m["method"], m["trainable_params"], m["trainable_percent"], m["train_seconds"],
                          m["train_samples_per_second"], m["peak_rss_mb"], m["artifact_size_mb"],
                          m["final_train_loss"]]])]
    train = [(e["step"], e["loss"]) for e in source["log"] if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in source["log"] if "eval_loss" in e]
    charts = [line_chart("loss curves", {"train loss": train, "validation loss": evals})]
    if report:
        metrics = report["metrics"]
        findings = {f["metric"]: f for f in eval_findings(report)}
        rows = [[name, r["base"], r["tuned"], signed(r["delta"]), interval(r["ci95"]),
                 "lower" if lower_is_better(name, r) else "higher"] for name, r in metrics.items()]
        parts.append(f"<p>Evaluated on {_e(report['split'])} ({_e(report['examples'])} examples); base = "
                     f"{_e(report['base'])}.</p>"
                     + html_table(["metric", "base", "tuned", "delta", "95% CI of delta", "better"], rows,
                                  worse=[name in findings for name in metrics])
                     + "".join(worse_html(f) for f in findings.values()))
        for name, r in metrics.items():
            ci = tuple(r["tuned_ci95"]) if r.get("tuned_ci95") else None
            worse = name in findings
            charts.append(bar_chart(f"{name}: base vs tuned (tuned with 95% CI)" + (", tuned worse" if worse else ""),
                                    [("base", r["base"], None), ("tuned", r["tuned"], ci)],
                                    colors=[COLORS[0], WORSE_COLOR if worse else COLORS[1]]))
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    if report and "confusion_matrix" in report:
        parts.append(confusion_html(report["confusion_matrix"]))
    if source["predictions"]:
        parts.append(examples_html(source["predictions"]))
    if source.get("quantization"):
        parts.append(quantization_html(source["quantization"]))
    return "".join(parts)


def quantization_html(report: dict) -> str:
    from tunelab.quantization.compare import COLUMNS, notes, table_cells

    rows = [r for r in report["rows"] if "error" not in r]
    charts = [bar_chart("latency at batch 8 (ms, median)", [(r["variant"], r["latency_ms"]["8"], None) for r in rows]),
              bar_chart("weights in memory (MiB)", [(r["variant"], r["weights_mb"], None) for r in rows])]
    return ("<h3>Quantized variants against fp32 (tunelab quantize --compare)</h3>"
            + "".join(f"<p>{_e(n).replace('`', '')}</p>" for n in notes(report))
            + html_table(COLUMNS, [table_cells(r) for r in report["rows"]])
            + f'<div class="charts">{"".join(charts)}</div>')


def confusion_html(confusion: dict) -> str:
    """The matrix in its own scrolling box; long labels shortened (in full on hover), column heads upright."""
    labels, matrix = confusion["labels"], confusion["tuned"]
    counts = [c for row in matrix for c in row if is_number(c)]
    peak = max(counts, default=0) or 1
    # Many or long labels: column heads written bottom to top, so a column is as narrow as its numbers.
    upright = len(labels) > 6 or any(len(str(label)) > 6 for label in labels)
    turn = ' style="writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap"' if upright else ""
    head = "".join(f'<th title="{_e(label)}" style="vertical-align:bottom;padding:4px 2px;font-weight:normal">'
                   f"<div{turn}>{_e(_short(label, CONFUSION_HEADER_CHARS))}</div></th>" for label in labels)

    def cell(count) -> str:
        share = count / peak if is_number(count) else 0.0
        ink = ";color:#fff" if share > 0.6 else ""
        return (f'<td style="background:rgba(51,103,214,{share:.2f}){ink};text-align:right;padding:2px 4px">'
                f"{_e(count)}</td>")

    rows = "".join(f'<tr><th title="{_e(labels[i])}" style="text-align:left;white-space:nowrap;font-weight:normal">'
                   f"{_e(_short(labels[i], CONFUSION_ROW_CHARS))}</th>" + "".join(cell(c) for c in row) + "</tr>"
                   for i, row in enumerate(matrix))
    return ("<h3>Confusion matrix (tuned; rows = reference, columns = prediction)</h3>"
            f'<div class="scroll" style="{SCROLL_STYLE};max-height:80vh">'
            '<table class="confusion" style="font-size:12px">'
            f"<tr><th></th>{head}</tr>{rows}</table></div>")


def examples_html(predictions: list[dict]) -> str:
    keys = [k for k in ("input", "reference", "base_output", "tuned_output") if k in predictions[0]]
    changed = [p.get("base_output") != p.get("tuned_output") for p in predictions]
    return ("<h3>Examples: base and tuned side by side (changed outputs highlighted)</h3>"
            + html_table(keys, [[str(p.get(k))[:300] for k in keys] for p in predictions], changed))


def bakeoff_section(source: dict) -> str:
    from tunelab.studies.bakeoff import COLUMNS, table_cells

    data, rows = source["data"], [r for r in source["data"]["rows"] if "error" not in r]
    findings = bakeoff_findings(data)
    worse = {method for method, _ in findings}
    charts = [bar_chart(f"{rows[0]['metric'] if rows else 'metric'} by method (95% CI)",
                        [(r["method"], r["tuned"], tuple(r["tuned_ci95"])) for r in rows],
                        colors=[WORSE_COLOR if r["method"] in worse else OTHER_COLORS[i % len(OTHER_COLORS)]
                                for i, r in enumerate(rows)]),
              bar_chart("peak RSS (MiB) by method", [(r["method"], r["peak_rss_mb"], None) for r in rows]),
              bar_chart("train seconds by method", [(r["method"], r["train_seconds"], None) for r in rows])]
    return (f"<h2>Bake-off {_e(source['path'])}</h2>"
            + html_table(COLUMNS, [table_cells(r) for r in data["rows"]],
                         worse=[r.get("method") in worse and "error" not in r for r in data["rows"]])
            + "".join(worse_html(f, f"{method} (tuned)") for method, f in findings)
            + f'<div class="charts">{"".join(charts)}</div>')


def sweep_section(source: dict) -> str:
    from tunelab.studies.sweep import table_rows

    headers, rows = table_rows(source["data"])
    return (f"<h2>Sweep {_e(source['path'])}</h2>" + html_table(headers, rows)
            + f"<p><b>Recommendation:</b> {_e(source['data']['recommendation']['text'])}</p>")


SECTIONS = {"run": run_section, "bakeoff": bakeoff_section, "sweep": sweep_section}


def render_html(sources: list[dict]) -> str:
    body = "".join(SECTIONS[s["kind"]](s) for s in sources)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>tunelab report</title>"
            f"<style>{STYLE}</style></head><body><h1>tunelab report</h1>{body}</body></html>\n")


def render_markdown(sources: list[dict]) -> str:
    parts = ["# tunelab report\n"]
    for s in sources:
        if s["kind"] == "run":
            m, e = s["metrics"], s["eval"]
            parts.append(f"## Run {s['path']}\n\n" + markdown_table(
                ["method", "trainable params", "train s", "peak RSS MiB", "artifact MiB"],
                [[m["method"], m["trainable_params"], m["train_seconds"], m["peak_rss_mb"], m["artifact_size_mb"]]]))
            if e:
                parts.append(markdown_table(["metric", "base", "tuned", "delta", "95% CI of delta", "better"],
                                            [[k, r["base"], r["tuned"], signed(r["delta"]), interval(r["ci95"]),
                                              "lower" if lower_is_better(k, r) else "higher"]
                                             for k, r in e["metrics"].items()]))
                parts += [f"**Warning:** {worse_sentence(f)}" for f in eval_findings(e)]
            if s.get("quantization"):
                from tunelab.quantization.compare import markdown_report

                parts.append("#" + markdown_report(s["quantization"]))
        elif s["kind"] == "bakeoff":
            from tunelab.studies.bakeoff import markdown_report

            parts.append(markdown_report(s["data"]))
            parts += [f"**Warning:** {worse_sentence(f, f'{method} (tuned)')}"
                      for method, f in bakeoff_findings(s["data"])]
        else:
            from tunelab.studies.sweep import markdown_report

            parts.append(markdown_report(s["data"]))
    return "\n\n".join(parts) + "\n"


def default_out(paths: list[str], markdown: bool = False) -> Path:
    """Where a report goes without --out: into the one folder it is about."""
    if len(paths) != 1:
        raise TunelabError(f"{len(paths)} folders given: say where their report goes with --out FILE "
                           "(without --out, the report of one folder is written into that folder)")
    return RunDir(paths[0]).report_path(markdown)


def run(paths: list[str], out: str | None = None, markdown: bool = False) -> Path:
    """Write the report for ``paths`` to ``out`` (default: inside the one folder given); return its path."""
    sources = [load_source(Path(p)) for p in paths]
    target = Path(out) if out else default_out(paths, markdown)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_markdown(sources) if markdown else render_html(sources), encoding="utf-8")
    return target
