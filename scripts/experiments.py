"""Regenerate experiments.md: every number on that page is measured here, by tunelab's own commands.

    python scripts/experiments.py                    # the full page (about an hour on a 2-core CPU)
    python scripts/experiments.py --render-only      # rewrite the page from the last measurement
    python scripts/experiments.py --quick model.name=DIR data.max_rows=60 train.epochs=1 --work /tmp/w --out /tmp/e.md

What it runs, on ``--config`` (default: the built-in support-intent data with MiniLM + LoRA):
1. ``tunelab advise``: prompting vs retrieval vs fine-tuning;
2. ``tunelab bakeoff``: full fine-tuning vs LoRA vs DoRA vs QLoRA, same data, seed and budget;
3. ``tunelab sweep``: LoRA rank, then alpha, then dropout, one axis at a time around the config's values;
4. ``tunelab quantize --compare``: the LoRA run merged, then int8, nf4, gptq and dynamic-int8.
The raw results go to ``WORK/experiments.json`` (and ``benchmarks/results/experiments.json`` for
the committed page); the page is rendered from that file, and the measured tables quoted in
``docs/concepts/*.md`` (between ``<!-- measured:... -->`` markers) are refreshed from it too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from tunelab.config import load_config, to_yaml
from tunelab.errors import TunelabError
from tunelab.machine import cpu_count, cpu_description
from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.models.quantizers import installed
from tunelab.rundir import open_run, read_json, versions, write_json
from tunelab.studies import advise, bakeoff, sweep
from tunelab.tables import fmt, markdown_table, replace_marked

ROOT = Path(__file__).resolve().parent.parent
FULL = {"methods": ["full", "lora", "dora", "qlora"], "quantize": ["int8", "nf4", "gptq", "dynamic-int8"],
        "sweep": {"lora.r": [2, 4, 8, 16], "lora.lora_alpha": [8, 32, 64], "lora.lora_dropout": [0.0, 0.1, 0.2]}}
QUICK = {"methods": ["full", "lora"], "quantize": ["dynamic-int8"],
         "sweep": {"lora.r": [2, 8], "lora.lora_alpha": [32]}}
TOLERANCE = 0.01


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides applied to every run")
    parser.add_argument("--config", default=str(ROOT / "configs/support-intents-lora.yaml"), help="the config measured")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 methods, 3 sweep points, dynamic-int8 only")
    parser.add_argument("--work", default=str(ROOT / "runs/experiments"), help="folder for the runs (default runs/experiments)")
    parser.add_argument("--out", default=str(ROOT / "experiments.md"), help="the page to write")
    parser.add_argument("--docs", default=str(ROOT / "docs/concepts"),
                        help="folder whose Markdown files get their <!-- measured:... --> blocks refreshed ('' for none)")
    parser.add_argument("--render-only", action="store_true", help="render the page from WORK/experiments.json")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    plan = QUICK if args.quick else FULL
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.overrides)
    cfg.output.dir = str(work / "run")
    config_path = work / "config.yaml"
    config_path.write_text(to_yaml(cfg), encoding="utf-8")
    shown = f"{Path(args.config).name} {' '.join(args.overrides)}".strip()
    results = {"date": datetime.date.today().isoformat(), "machine": cpu_description(), "cores": cpu_count(),
               "versions": versions(), "config": shown, "settings": cfg.model_dump(mode="json"),
               "command": "python scripts/experiments.py" + (" --quick" if args.quick else "")
               + "".join(f" {o}" for o in args.overrides)}
    print("== 1/4 advise: prompting vs retrieval vs fine-tuning", flush=True)
    results["advise"] = advise.run(str(config_path), [], out=str(work / "advise"), echo=print)
    print("== 2/4 bakeoff: " + ", ".join(plan["methods"]), flush=True)
    results["bakeoff"] = bakeoff.run(str(config_path), [], plan["methods"], out=str(work / "bakeoff"), echo=print)
    print("== 3/4 sweeps: " + ", ".join(plan["sweep"]), flush=True)
    results["sweeps"] = {
        key: sweep.run(str(config_path), [f"{key}={','.join(map(str, values))}"], tolerance=TOLERANCE,
                       out=str(work / f"sweep-{key.split('.')[-1]}"), echo=print)
        for key, values in plan["sweep"].items()}
    print("== 4/4 quantize --compare", flush=True)
    results["quantization"] = quantization(work / "bakeoff" / "lora", plan["quantize"])
    serve_load = ROOT / "benchmarks/results/serve_load.json"
    results["serve_load"] = read_json(serve_load) if serve_load.exists() else None
    write_json(work / "experiments.json", results)
    return results


def quantization(run_dir: Path, methods: list[str]) -> dict:
    available = installed(methods)
    quantize.run(run_dir, available, echo=print)
    run_dir, cfg = open_run(run_dir)
    return quantize_compare.compare(run_dir, cfg, available, echo=print)


# --- rendering -------------------------------------------------------------------------------------------------

def render(results: dict) -> str:
    s = results["settings"]
    sections = [
        "# Experiments: what fine-tuning bought, measured\n",
        f"Every number on this page was measured by `{results['command']}` on {results['date']} "
        f"({results['machine']}, {results['cores']} cores, torch {results['versions'].get('torch')}, "
        f"transformers {results['versions'].get('transformers')}, peft {results['versions'].get('peft')}). "
        "The script runs tunelab's own commands; the command behind each table is shown above it. "
        "Regenerate the page with `python scripts/experiments.py`"
        + (f" (this run took {results['minutes']:.0f} minutes)." if results.get("minutes") else ".") + "\n",
        f"**Setup.** Config `{results['config']}`: task {s['task']}, model `{s['model']['name']}`, data "
        f"`{s['data']['train']}` (validation split off train, test `{s['data']['test']}`), max length "
        f"{s['data']['max_length']}, {s['train']['epochs']:g} epochs, batch {s['train']['batch_size']}, learning "
        f"rate {s['train']['learning_rate']:g}, seed {s['train']['seed']}; LoRA r={s['lora']['r']}, "
        f"alpha={s['lora']['lora_alpha']:g}, dropout={s['lora']['lora_dropout']:g} on {s['lora']['target_modules']}.\n",
        approach_section(results["advise"]),
        methods_section(results["bakeoff"]),
        lora_section(results["sweeps"], s, results.get("validation_examples")),
        quantization_section(results["quantization"]),
        practices_section(results),
        production_section(results),
    ]
    return "\n".join(sections)


def approach_section(report: dict) -> str:
    headers, rows = advise.table_rows(report)
    rec = report["recommendation"]
    return (f"## 1. Approach comparison: prompting vs retrieval vs fine-tuning\n\n"
            f"`tunelab advise CONFIG` on the {report['split']} split ({report['examples']} examples). Prompting is "
            "zero-shot (the text against each label's name, embedded by the base encoder), retrieval a 5-nearest-"
            "neighbour vote over the embedded training set, fine-tuning a LoRA run. Setup is the time to build "
            "each one (for fine-tuning, the training).\n\n"
            f"{markdown_table(headers, rows)}\n\n**Recommendation:** {rec['approach']}: {rec['reason']} "
            f"(rule: {rec['rule']}).\n")


def methods_section(report: dict) -> str:
    return (f"## 2. Fine-tuning methods side by side\n\n"
            f"`tunelab bakeoff CONFIG --methods {','.join(r['method'] for r in report['rows'])}`: each method in its own "
            f"process (so peak RSS is its own), scored on the {report['split']} split with a 95% bootstrap CI. Full "
            f"fine-tuning runs at {bakeoff.FULL_WEIGHT_LEARNING_RATE:g}, the usual rate for updating every weight.\n\n"
            + markdown_table(bakeoff.COLUMNS, [bakeoff.table_cells(r) for r in report["rows"]]) + "\n")


def sweep_rows(sweeps: dict, settings: dict) -> dict[str, list[dict]]:
    """Each axis's points, plus the config's own point (measured in the rank sweep) where the axis lacks it."""
    centre = next((r for r in sweeps.get("lora.r", {}).get("results", [])
                   if r["setting"]["lora.r"] == settings["lora"]["r"]), None)
    axes = {}
    for key, report in sweeps.items():
        rows = [dict(r, value=r["setting"][key]) for r in report["results"]]
        own = settings["lora"][key.split(".")[-1]]
        if centre and all(r["value"] != own for r in rows):
            rows.append(dict(centre, value=own))
        axes[key] = sorted(rows, key=lambda r: r["value"])
    return axes


def lora_section(sweeps: dict, settings: dict, validation_examples: int | None) -> str:
    resolution = (f" The validation split has {validation_examples} examples, so one example moves accuracy by "
                  f"{1 / validation_examples:.4f}: differences of one or two examples are noise."
                  if validation_examples else "")
    parts = ["## 3. LoRA configuration: rank, alpha, dropout\n",
             "`tunelab sweep CONFIG lora.r=...` (then `lora.lora_alpha=...`, then `lora.lora_dropout=...`): one axis at "
             "a time, the others at the config's values, each point a full training run scored on the validation "
             "split. The point at the config's own values is measured once, in the rank sweep." + resolution + "\n"]
    for key, rows in sweep_rows(sweeps, settings).items():
        report = sweeps[key]
        table = [[r["value"], r["validation"], r["trainable_params"], r["train_seconds"]] for r in rows]
        parts.append(f"**{key}** (`tunelab sweep CONFIG {key}={','.join(fmt(r['value']) for r in rows)}`)\n\n"
                     + markdown_table([key, report["metric"], "trainable params", "train s"], table) + "\n\n"
                     + axis_verdict(key, rows, report["metric"]) + "\n")
    return "\n".join(parts)


def axis_verdict(key: str, rows: list[dict], metric: str) -> str:
    scored = [r for r in rows if r["validation"] is not None]
    if not scored:
        return "No point produced a validation score."
    best = max(scored, key=lambda r: r["validation"])
    worst = min(scored, key=lambda r: r["validation"])
    if best["validation"] == worst["validation"]:
        return (f"Every value scored {metric} {best['validation']:.4f}: on this validation split the setting made "
                "no measurable difference.")
    close = [r for r in scored if best["validation"] - r["validation"] <= TOLERANCE]
    text = (f"Best {key}={fmt(best['value'])} ({metric} {best['validation']:.4f}); the spread over the axis is "
            f"{best['validation'] - worst['validation']:.4f}. Within {TOLERANCE} of the best: "
            f"{', '.join(fmt(r['value']) for r in close)}.")
    if len({r["trainable_params"] for r in close}) > 1:
        cheapest = min(close, key=lambda r: r["trainable_params"])
        text += (f" The cheapest of those is {key}={fmt(cheapest['value'])} "
                 f"({cheapest['trainable_params']:,} trainable parameters).")
    return text


def quantization_section(report: dict) -> str:
    return ("## 4. Quantization for deployment\n\n"
            "`tunelab quantize RUN --method " + ",".join(r["variant"] for r in report["rows"][2:])
            + " --compare` on the LoRA run of section 2 (merged into fp32 first). 'blocks x fp32' is the memory of "
            "the transformer blocks' weights relative to fp32 (embeddings and head stay in fp32 in every variant).\n\n"
            + "\n\n".join(quantize_compare.notes(report)) + "\n\n"
            + markdown_table(quantize_compare.COLUMNS, [quantize_compare.table_cells(r) for r in report["rows"]]) + "\n")


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "error" not in r]


def practices_section(results: dict) -> str:
    facts = []
    rec = results["advise"]["recommendation"]
    facts.append(f"- **Measure before you train.** On this data `advise` recommended {rec['approach']}: {rec['reason']}.")
    rows = {r["method"]: r for r in _ok(results["bakeoff"]["rows"])}
    if "full" in rows and "lora" in rows:
        full, lora = rows["full"], rows["lora"]
        facts.append(
            f"- **LoRA vs full fine-tuning.** LoRA trained {lora['trainable_percent']:.2f}% of the parameters "
            f"(full: {full['trainable_percent']:.0f}%), peaked at {lora['peak_rss_mb'] / full['peak_rss_mb']:.0%} of "
            f"full fine-tuning's RSS, wrote a {lora['artifact_size_mb']:.2f} MiB adapter instead of "
            f"{full['artifact_size_mb']:.1f} MiB, and scored {lora['tuned']:.4f} vs {full['tuned']:.4f} "
            f"{lora['metric']} (train time {lora['train_seconds']:.0f} s vs {full['train_seconds']:.0f} s).")
    for name in ("dora", "qlora"):
        if name in rows and "lora" in rows:
            r, lora = rows[name], rows["lora"]
            facts.append(f"- **{name}** scored {r['tuned']:.4f} {r['metric']} vs LoRA's {lora['tuned']:.4f}, in "
                         f"{r['train_seconds'] / lora['train_seconds']:.1f}x LoRA's training time and "
                         f"{r['peak_rss_mb'] / lora['peak_rss_mb']:.2f}x its peak RSS on this CPU.")
    facts.extend(rank_fact(results))
    if "full" in rows and "lora" in rows and rows["full"]["eval_loss"] and rows["lora"]["eval_loss"]:
        full, lora = rows["full"], rows["lora"]
        facts.append(f"- **Learning rates differ by method.** Full fine-tuning ran at {full['learning_rate']:g} (the usual rate "
                     f"for updating every weight, BERT's arXiv 1810.04805) and LoRA at {lora['learning_rate']:g}; "
                     f"after the same epochs full fine-tuning's validation loss was {full['eval_loss']:.3g} against "
                     f"LoRA's {lora['eval_loss']:.3g}, so at this budget it was still the less confident of the two.")
    facts.extend(saturation_fact(results))
    return "## 5. Best practices these runs support\n\n" + "\n".join(facts) + "\n"


def rank_fact(results: dict) -> list[str]:
    ranks = [r for r in sweep_rows(results["sweeps"], results["settings"]).get("lora.r", []) if r["validation"] is not None]
    if len(ranks) < 2:
        return []
    best, worst = max(ranks, key=lambda r: r["validation"]), min(ranks, key=lambda r: r["validation"])
    spread, n = best["validation"] - worst["validation"], results.get("validation_examples")
    noise = 2 / n if n else TOLERANCE
    ranks_text = ", ".join(fmt(r["value"]) for r in ranks)
    if spread == 0:  # every rank scored the same: saturation_fact says why the sweep cannot rank them
        return []
    if spread <= noise:
        return [f"- **Rank was not the lever here.** Ranks {ranks_text} spanned {spread:.4f} validation score, within "
                f"two validation examples: the smallest rank that reaches the best is the one to keep "
                f"({min(r['trainable_params'] for r in ranks):,} to {max(r['trainable_params'] for r in ranks):,} "
                "trainable parameters across the axis)."]
    return [f"- **Rank mattered here.** Ranks {ranks_text} spanned {spread:.4f} validation score; the best was "
            f"r={fmt(best['value'])}, the worst r={fmt(worst['value'])}."]


def saturation_fact(results: dict) -> list[str]:
    """Say so when the validation split could not rank the sweep's points (every point at the same score)."""
    tied = [key for key, report in results["sweeps"].items()
            if len({r["validation"] for r in report["results"]}) == 1]
    if not tied:
        return []
    score = results["sweeps"][tied[0]]["results"][0]["validation"]
    n = results.get("validation_examples")
    return [f"- **A saturated validation split cannot choose settings.** Every {', '.join(tied)} point scored "
            f"{score:.4g} on {n or 'the'} validation examples, so the sweep could not rank them; sweep on a larger or "
            "harder validation split, and keep the test split for the final number only."]


def production_section(results: dict) -> str:
    report = results["quantization"]
    rows = _ok(report["rows"])
    lines = ["## 6. Production considerations\n"]
    lines += [f"- **{line.split(':')[0].capitalize()}:**{line.split(':', 1)[1]}."
              for line in quantize_compare.tradeoffs(report)]
    ref, adapter = rows[0], next((r for r in rows if r["variant"] == "adapter"), None)
    if adapter:
        lines.append(f"- **Merge before serving:** the unmerged adapter took {adapter['latency_ms']['1']:.1f} ms at batch 1 vs "
                     f"{ref['latency_ms']['1']:.1f} ms merged; keep the adapter (its folder, tokenizer included, "
                     f"takes {adapter['disk_mb']:.2f} MiB) to ship many tasks over one base.")
    load = results.get("serve_load")
    if load:
        lines.append("- **Serving:** `python benchmarks/serve_load.py RUN` (`benchmarks/results/serve_load.json`): "
                     + serve_load_sentence(load))
    lines.append("- **Guard the input:** `tunelab serve` rejects prompts longer than the context, oversized batches "
                 "and bad parameters with a 400 before they reach the model, and times out slow requests (504).")
    return "\n".join(lines) + "\n"


def serve_load_sentence(load: dict) -> str:
    one = next((r for r in load.get("rows", []) if r["max_batch_size"] == 1), None)
    many = max(load.get("rows", []), key=lambda r: r["max_batch_size"], default=None)
    if one is None or many is None or many is one:
        return "see `benchmarks/results/serve_load.json`."
    return (f"{one['requests_per_second']:.1f} requests/s one at a time vs {many['requests_per_second']:.1f} "
            f"micro-batched in batches of up to {many['max_batch_size']} "
            f"({many['requests_per_second'] / one['requests_per_second']:.2f}x) with "
            f"{load['clients']} concurrent clients on the {load['task']} run; p99 latency {one['p99_ms']:.0f} -> "
            f"{many['p99_ms']:.0f} ms.")


def docs_blocks(results: dict) -> dict[str, str]:
    """The measured tables quoted by the concept guides, keyed by their marker name."""
    rows = _ok(results["bakeoff"]["rows"])
    metric = rows[0]["metric"] if rows else "metric"
    lora = markdown_table(["method", "trainable %", "peak RSS MiB", "train s", "adapter/model MiB", f"test {metric}"],
                          [[r["method"], r["trainable_percent"], r["peak_rss_mb"], r["train_seconds"],
                            r["artifact_size_mb"], r["tuned"]] for r in rows])
    quant = markdown_table(quantize_compare.COLUMNS, [quantize_compare.table_cells(r)
                                                      for r in results["quantization"]["rows"]])
    advice = results["advise"]
    approaches = markdown_table(*advise.table_rows(advice))
    approaches += f"\n\nRecommendation: **{advice['recommendation']['approach']}**: {advice['recommendation']['reason']}."
    stamp = f"\n\nMeasured by `{results['command']}` on {results['date']} ({results['machine']}); see experiments.md."
    return {"measured:lora-vs-full": lora + stamp, "measured:quantization": quant + stamp,
            "measured:advise": approaches + stamp}


def refresh_docs(folder: Path, results: dict) -> list[Path]:
    changed = []
    for page in sorted(folder.glob("*.md")):
        text = original = page.read_text(encoding="utf-8")
        for name, body in docs_blocks(results).items():
            if f"<!-- {name} -->" in text:
                text = replace_marked(text, name, body)
        if text != original:
            page.write_text(text, encoding="utf-8")
            changed.append(page)
    return changed


def validation_examples(results: dict) -> int | None:
    """How many examples every sweep point was scored on (from the first point's data report)."""
    points = next(iter(results["sweeps"].values()), {}).get("results", [])
    report = Path(points[0]["run_dir"]) / "data_report.json" if points else None
    return read_json(report)["splits"]["validation"]["examples"] if report and report.exists() else None


def minutes(work: Path) -> float | None:
    """How long the measurement took: from the config it wrote first to the results it wrote last."""
    first, last = work / "config.yaml", work / "experiments.json"
    if not (first.exists() and last.exists()):
        return None
    return (last.stat().st_mtime - first.stat().st_mtime) / 60


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.render_only:
            results = read_json(Path(args.work) / "experiments.json")
        else:
            results = measure(args)
        results.setdefault("validation_examples", validation_examples(results))
        results.setdefault("minutes", minutes(Path(args.work)))
    except (TunelabError, FileNotFoundError) as err:
        print(f"experiments: {err}", file=sys.stderr)
        return 2
    Path(args.out).write_text(render(results), encoding="utf-8")
    print(f"wrote {args.out}")
    if Path(args.out).resolve() == (ROOT / "experiments.md").resolve() and not args.quick:
        write_json(ROOT / "benchmarks/results/experiments.json", json.loads(json.dumps(results, default=str)))
    for page in refresh_docs(Path(args.docs), results) if args.docs else []:
        print(f"refreshed {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
