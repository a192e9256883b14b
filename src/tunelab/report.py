"""One self-contained HTML (or Markdown) report of runs, bake-offs and sweeps.

    tunelab report runs/demo runs/x-bakeoff --out report.html [--markdown]

Everything is inline (SVG charts, CSS); the file makes no network request, so it opens
offline and can be attached to an email or a pull request.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.runs import read_json
from tunelab.svg import bar_chart, line_chart
from tunelab.tables import fmt, markdown_table

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#202124}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #dadce0;padding:4px 8px}"
         "th{background:#f1f3f4}h2{border-bottom:1px solid #dadce0;padding-bottom:4px}.charts{display:flex;"
         "flex-wrap:wrap;gap:12px}.changed{background:#fef7e0}")


def load_source(path: Path) -> dict:
    """Classify a folder as a run, a bake-off or a sweep and read what it holds."""
    if (path / "bakeoff.json").exists():
        return {"kind": "bakeoff", "path": path, "data": read_json(path / "bakeoff.json")}
    if (path / "sweep.json").exists():
        return {"kind": "sweep", "path": path, "data": read_json(path / "sweep.json")}
    if (path / "config.yaml").exists() and (path / "metrics.json").exists():
        return {"kind": "run", "path": path, "metrics": read_json(path / "metrics.json"),
                "eval": read_json(path / "eval.json") if (path / "eval.json").exists() else None,
                "log": _jsonl(path / "train_log.jsonl"), "predictions": _jsonl(path / "predictions.jsonl")[:20],
                "quantization": read_json(path / "quantization.json") if (path / "quantization.json").exists() else None}
    raise TunelabError(f"{path}: not a finished run, bake-off or sweep folder (no metrics.json, bakeoff.json "
                       "or sweep.json)")


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def html_table(headers: list[str], rows: list[list], highlight: list[bool] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f'<tr{" class=changed" if highlight and highlight[i] else ""}>'
                   + "".join(f"<td>{escape(fmt(v))}</td>" for v in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def run_section(source: dict) -> str:
    path, m, report = source["path"], source["metrics"], source["eval"]
    parts = [f"<h2>Run {escape(str(path))}</h2>",
             html_table(["method", "trainable params", "trainable %", "train s", "samples/s", "peak RSS MiB",
                         "artifact MiB", "final train loss"],
                        [[m["method"], m["trainable_params"], m["trainable_percent"], m["train_seconds"],
                          m["train_samples_per_second"], m["peak_rss_mb"], m["artifact_size_mb"],
                          m["final_train_loss"]]])]
    train = [(e["step"], e["loss"]) for e in source["log"] if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in source["log"] if "eval_loss" in e]
    charts = [line_chart("loss curves", {"train loss": train, "validation loss": evals})]
    if report:
        rows = [[name, r["base"], r["tuned"], r["delta"], f"[{r['ci95'][0]:+.4g}, {r['ci95'][1]:+.4g}]"]
                for name, r in report["metrics"].items()]
        parts.append(f"<p>Evaluated on {report['split']} ({report['examples']} examples); base = "
                     f"{escape(report['base'])}.</p>"
                     + html_table(["metric", "base", "tuned", "delta", "95% CI of delta"], rows))
        for name, r in report["metrics"].items():
            ci = tuple(r["tuned_ci95"]) if r.get("tuned_ci95") else None
            charts.append(bar_chart(f"{name}: base vs tuned (tuned with 95% CI)",
                                    [("base", r["base"], None), ("tuned", r["tuned"], ci)]))
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    if report and "confusion_matrix" in report:
        parts.append(confusion_html(report["confusion_matrix"]))
    if source["predictions"]:
        parts.append(examples_html(source["predictions"]))
    if source.get("quantization"):
        parts.append(quantization_html(source["quantization"]))
    return "".join(parts)


def quantization_html(report: dict) -> str:
    from tunelab.quantize_compare import COLUMNS, notes, table_cells

    rows = [r for r in report["rows"] if "error" not in r]
    charts = [bar_chart("latency at batch 8 (ms, median)", [(r["variant"], r["latency_ms"]["8"], None) for r in rows]),
              bar_chart("weights in memory (MiB)", [(r["variant"], r["weights_mb"], None) for r in rows])]
    return ("<h3>Quantized variants against fp32 (tunelab quantize --compare)</h3>"
            + "".join(f"<p>{escape(n).replace('`', '')}</p>" for n in notes(report))
            + html_table(COLUMNS, [table_cells(r) for r in report["rows"]])
            + f'<div class="charts">{"".join(charts)}</div>')


def confusion_html(confusion: dict) -> str:
    labels, matrix = confusion["labels"], confusion["tuned"]
    peak = max(max(row) for row in matrix) or 1
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = "".join(f"<tr><th>{escape(labels[i])}</th>" + "".join(
        f'<td style="background:rgba(51,103,214,{count / peak:.2f})">{count}</td>' for count in row) + "</tr>"
        for i, row in enumerate(matrix))
    return f"<h3>Confusion matrix (tuned; rows = reference, columns = prediction)</h3><table><tr><th></th>{head}</tr>{rows}</table>"


def examples_html(predictions: list[dict]) -> str:
    keys = [k for k in ("input", "reference", "base_output", "tuned_output") if k in predictions[0]]
    changed = [p.get("base_output") != p.get("tuned_output") for p in predictions]
    return ("<h3>Examples: base and tuned side by side (changed outputs highlighted)</h3>"
            + html_table(keys, [[str(p.get(k))[:300] for k in keys] for p in predictions], changed))


def bakeoff_section(source: dict) -> str:
    from tunelab.bakeoff import COLUMNS, table_cells

    data, rows = source["data"], [r for r in source["data"]["rows"] if "error" not in r]
    charts = [bar_chart(f"{rows[0]['metric'] if rows else 'metric'} by method (95% CI)",
                        [(r["method"], r["tuned"], tuple(r["tuned_ci95"])) for r in rows]),
              bar_chart("peak RSS (MiB) by method", [(r["method"], r["peak_rss_mb"], None) for r in rows]),
              bar_chart("train seconds by method", [(r["method"], r["train_seconds"], None) for r in rows])]
    return (f"<h2>Bake-off {escape(str(source['path']))}</h2>"
            + html_table(COLUMNS, [table_cells(r) for r in data["rows"]]) + f'<div class="charts">{"".join(charts)}</div>')


def sweep_section(source: dict) -> str:
    from tunelab.sweep import table_rows

    headers, rows = table_rows(source["data"])
    return (f"<h2>Sweep {escape(str(source['path']))}</h2>" + html_table(headers, rows)
            + f"<p><b>Recommendation:</b> {escape(source['data']['recommendation']['text'])}</p>")


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
                parts.append(markdown_table(["metric", "base", "tuned", "delta", "95% CI of delta"],
                                            [[k, r["base"], r["tuned"], r["delta"], f"[{r['ci95'][0]:+.4g}, "
                                              f"{r['ci95'][1]:+.4g}]"] for k, r in e["metrics"].items()]))
            if s.get("quantization"):
                from tunelab.quantize_compare import markdown_report

                parts.append("#" + markdown_report(s["quantization"]))
        elif s["kind"] == "bakeoff":
            from tunelab.bakeoff import markdown_report

            parts.append(markdown_report(s["data"]))
        else:
            from tunelab.sweep import markdown_report

            parts.append(markdown_report(s["data"]))
    return "\n\n".join(parts) + "\n"


def run(paths: list[str], out: str, markdown: bool = False) -> Path:
    """Write the report for ``paths`` to ``out``; return its path."""
    sources = [load_source(Path(p)) for p in paths]
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_markdown(sources) if markdown else render_html(sources), encoding="utf-8")
    return target
