"""Regenerate experiments.md: every number on that page is measured here, by tunelab's own commands.

    python scripts/experiments.py                          # every section (about 80 minutes on a 2-core CPU)
    python scripts/experiments.py --only sweeps,precision  # measure these again, keep the others' last results
    python scripts/experiments.py --render-only            # rewrite the page from the last measurement (or the committed one)
    python scripts/experiments.py --quick --chat C.yaml --classifier K.yaml --work /tmp/w --out /tmp/e.md

Two configs are measured:
- ``--chat`` (default ``configs/support-replies-smollm2.yaml``): SmolLM2-135M-Instruct, a real chat
  model, learning the built-in support replies;
- ``--classifier`` (default ``configs/support-tickets-lora.yaml``): MiniLM on the built-in 32-intent
  tickets, whose 320 validation rows can tell settings apart.
Sections (``--only`` takes their names):
- approaches: ``tunelab advise`` on both (zero-shot, few-shot, retrieval, fine-tuning), and the
  classifier's linear probe from ``tunelab evaluate``;
- methods: ``tunelab bakeoff`` of full fine-tuning, LoRA, DoRA and QLoRA on the chat model;
- memory: where a training step's memory goes, full fine-tuning vs LoRA (``tunelab.studies.memory``);
- sweeps: ``tunelab sweep`` of the seed (the noise), then LoRA rank, alpha, dropout and the learning
  rate, one axis at a time around the classifier config's values;
- quantization: ``tunelab quantize --compare`` on the chat model's LoRA run (int8, nf4, gptq, dynamic-int8);
- precision: the chat model's LoRA trained in fp32, against the methods section's run in the precision
  ``auto`` chose.
Raw results go to ``WORK/experiments.json`` (and ``benchmarks/results/experiments.json`` for the
committed page); the page is rendered from that file by ``experiments_page.py``, and the measured tables
quoted in ``docs/concepts/*.md`` (between ``<!-- measured:... -->`` markers) are refreshed from it too.
``--only`` refuses to mix sections measured with different settings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

from tunelab.config import load_config, to_yaml
from tunelab.errors import TunelabError
from tunelab.evaluation import evaluate
from tunelab.machine import cpu_count, cpu_description, matmul_speeds
from tunelab.models.quantizers import installed
from tunelab.quantization import compare as quantize_compare
from tunelab.quantization import quantize
from tunelab.rundir import open_run, read_json, versions, write_json
from tunelab.studies import advise, bakeoff, memory, sweep

import experiments_page as page
from tunelab.tables import markdown_table, replace_marked

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks/results/experiments.json"
BLOCK_SECTIONS = {"measured:lora-vs-full": "methods", "measured:lora-memory": "memory",
                  "measured:quantization": "quantization", "measured:advise": "approaches",
                  "measured:advise-llm": "approaches"}   # the concept guides' measured blocks and their sections
SERVE_LOAD = ROOT / "benchmarks/results/serve_load.json"
SECTIONS = ("approaches", "methods", "memory", "sweeps", "quantization", "precision")
FULL = {"methods": ["full", "lora", "dora", "qlora"], "quantize": ["int8", "nf4", "gptq", "dynamic-int8"],
        "sweep": {"train.seed": [0, 1, 2], "lora.r": [2, 32], "lora.lora_alpha": [4, 64], "lora.lora_dropout": [0.3],
                  "train.learning_rate": [3e-4, 6e-3]}}
QUICK = {"methods": ["full", "lora"], "quantize": ["dynamic-int8"],
         "sweep": {"train.seed": [0, 1], "lora.r": [2], "train.learning_rate": [1e-4]}}
TOLERANCE = 0.01
EVERY_EXAMPLE = 100_000   # eval.max_examples above any test split here
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--chat", default=str(ROOT / "configs/support-replies-smollm2.yaml"),
                        help="the causal-LM config (approaches, methods, memory, quantization, precision)")
    parser.add_argument("--classifier", default=str(ROOT / "configs/support-tickets-lora.yaml"),
                        help="the classification config (approaches, sweeps)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for both configs, e.g. train.epochs=1 (shown on the page)")
    parser.add_argument("--only", help=f"comma-separated sections to measure again: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 methods, 3 sweep points, dynamic-int8 only")
    parser.add_argument("--work", default=str(ROOT / "runs/experiments"), help="folder for the runs (default runs/experiments)")
    parser.add_argument("--out", default=str(ROOT / "experiments.md"), help="the page to write")
    parser.add_argument("--docs", default=str(ROOT / "docs/concepts"),
                        help="folder whose Markdown files get their <!-- measured:... --> blocks refreshed ('' for none)")
    parser.add_argument("--render-only", action="store_true", help="render the page from WORK/experiments.json")
    args = parser.parse_args(argv)
    args.sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    return args


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in CPU_FLAGS if f in flags]


def prepared(path: str, overrides: list[str], work: Path, name: str) -> tuple[Path, dict]:
    """The config with the overrides applied, written into WORK (every study reads it from there)."""
    cfg = load_config(path, overrides)
    cfg.output.dir = str(work / name / "run")
    target = work / f"{name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(to_yaml(cfg), encoding="utf-8")
    return target, {"config": f"{Path(path).name} {' '.join(overrides)}".strip(), "settings": cfg.model_dump(mode="json")}


def measure(args: argparse.Namespace) -> dict:
    plan = QUICK if args.quick else FULL
    work = Path(args.work)
    last = work / "experiments.json"
    results = read_json(last) if args.only and last.exists() else {"sections": {}, "seconds": {}, "measured": {}}
    chat, chat_setup = prepared(args.chat, args.set, work, "chat")
    classifier, classifier_setup = prepared(args.classifier, args.set, work, "classifier")
    for name, setup in (("chat", chat_setup), ("classifier", classifier_setup)):
        if results.get(name, setup)["settings"] != setup["settings"]:
            raise TunelabError(f"--only: the {name} config's settings differ from the last measurement's in {last}; "
                               "measure every section again (leave out --only)")
        results[name] = {**results.get(name, {}), **setup}
    command = ("python scripts/experiments.py" + (" --quick" if args.quick else "")
               + (f" --set {' '.join(args.set)}" if args.set else ""))
    results.update({"date": datetime.date.today().isoformat(), "machine": cpu_description(), "cores": cpu_count(),
                    "cpu_flags": cpu_flags(), "matmul_gflops": matmul_speeds(), "matmul_measured_with": [],
                    "versions": versions(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "command": command})
    steps = {
        "approaches": lambda: approaches(chat, classifier, work),
        "methods": lambda: with_precision_used(bakeoff.run(str(chat), [], plan["methods"], out=str(work / "methods"),
                                                           echo=print)),
        "memory": lambda: {"rows": [memory.parts(load_config(chat), m) for m in ("full", "lora")]},
        "sweeps": lambda: {key: sweep.run(str(classifier), [f"{key}={','.join(map(str, values))}"], tolerance=TOLERANCE,
                                          out=str(work / f"sweep-{key.split('.')[-1]}"), echo=print)
                           for key, values in plan["sweep"].items()},
        "quantization": lambda: quantization(work / "methods" / "lora", plan["quantize"]),
        "precision": lambda: with_precision_used(bakeoff.run(str(chat), ["train.precision=fp32"], ["lora"],
                                                             out=str(work / "precision-fp32"), echo=print)),
    }
    for i, name in enumerate(args.sections, start=1):
        print(f"== {i}/{len(args.sections)} {name}", flush=True)
        started = time.perf_counter()
        results["sections"][name] = steps[name]()
        results["seconds"][name] = round(time.perf_counter() - started)
        results.setdefault("measured", {})[name] = {"date": results["date"], "command": command}
        results["matmul_measured_with"].append(name)
        results["classifier"]["data"] = classifier_data(results) or results["classifier"].get("data")
        write_json(last, json.loads(json.dumps(results, default=str)))   # a crash later keeps what was measured
    return results


def with_precision_used(report: dict) -> dict:
    """Each trained row with the precision ``train.precision`` chose for it and the matmul speeds it chose by
    (from its metrics.json)."""
    for row in report["rows"]:
        if "error" not in row:
            precision = read_json(Path(row["run_dir"]) / "metrics.json").get("precision", {})
            row["precision_used"] = precision.get("used")
            row["precision_gflops"] = {k: v for k, v in precision.items() if k.endswith("_gflops")}
    return report


def classifier_data(results: dict) -> dict | None:
    """Labels and split sizes of the classifier's data, from the data report of a run that prepared it."""
    sections = results["sections"]
    runs = [r["run_dir"] for report in sections.get("sweeps", {}).values() for r in report["results"]]
    if "approaches" in sections:
        runs.append(str(Path(sections["approaches"]["classifier"]["dir"]) / "fine-tuning"))
    report_path = next((Path(r) / "data_report.json" for r in runs if (Path(r) / "data_report.json").exists()), None)
    if report_path is None:
        return None
    report = read_json(report_path)
    return {"labels": len(report.get("labels") or []),
            **{split: report["splits"][split]["examples"] for split in ("train", "validation", "test")}}


def approaches(chat: Path, classifier: Path, work: Path) -> dict:
    # every test ticket, so the probe below and advise score the same rows
    found = {"chat": advise.run(str(chat), [], out=str(work / "advise-chat"), echo=print),
             "classifier": advise.run(str(classifier), [f"eval.max_examples={EVERY_EXAMPLE}"],
                                      out=str(work / "advise-classifier"), echo=print)}
    found["classifier_probe"] = evaluate.run(Path(found["classifier"]["dir"]) / "fine-tuning")
    return found


def quantization(run_dir: Path, methods: list[str]) -> dict:
    available = installed(methods)
    quantize.run(run_dir, available, echo=print)
    run_dir, cfg = open_run(run_dir)
    return quantize_compare.compare(run_dir, cfg, available, echo=print)


def docs_blocks(results: dict) -> dict[str, str]:
    """The measured tables quoted by the concept guides, keyed by their marker name (those whose sections exist)."""
    sections = results["sections"]
    stamp = f"\n\nMeasured by `{results['command']}` on {results['date']} ({results['machine']}); see experiments.md."
    blocks = {}
    if "methods" in sections:
        blocks["measured:lora-vs-full"] = markdown_table(page.METHOD_HEADERS,
                                                         [page.method_cells(r) for r in sections["methods"]["rows"]])
    if "memory" in sections:
        rows = sections["memory"]["rows"]
        blocks["measured:lora-memory"] = page.memory_table(rows, page.peaks(results)) + "\n\n" + page.memory_reading(rows)
    if "quantization" in sections:
        blocks["measured:quantization"] = markdown_table(
            quantize_compare.COLUMNS, [quantize_compare.table_cells(r) for r in sections["quantization"]["rows"]])
    if "approaches" in sections:
        blocks["measured:advise"] = page.advise_table(sections["approaches"]["classifier"])
        blocks["measured:advise-llm"] = page.advise_table(sections["approaches"]["chat"])
    blocks = {name: body + stamp for name, body in blocks.items()}
    for name, section in BLOCK_SECTIONS.items():  # never leave a block showing another setup's numbers
        blocks.setdefault(name, f"Not measured by the last run of `scripts/experiments.py`, which left out its "
                                f"{section} section: `python scripts/experiments.py --only {section}` measures it.")
    return blocks


def refresh_docs(folder: Path, results: dict) -> list[Path]:
    changed = []
    for doc in sorted(folder.glob("*.md")):
        text = original = doc.read_text(encoding="utf-8")
        for name, body in docs_blocks(results).items():
            if f"<!-- {name} -->" in text:
                text = replace_marked(text, name, body)
        if text != original:
            doc.write_text(text, encoding="utf-8")
            changed.append(doc)
    return changed


def last_measurement(work: Path) -> dict:
    """WORK/experiments.json, else the committed copy; refuse one written before the page had sections."""
    for path in (work / "experiments.json", COMMITTED):
        if path.exists():
            results = read_json(path)
            if "sections" not in results:
                raise TunelabError(f"{path} was written by an older version of this script; measure again")
            return results
    raise TunelabError(f"no measurement to render: neither {work / 'experiments.json'} nor {COMMITTED} exists")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = last_measurement(Path(args.work)) if args.render_only else measure(args)
        load = read_json(SERVE_LOAD) if SERVE_LOAD.exists() else None
        text = page.render(results, TOLERANCE, load)
    except (TunelabError, KeyError) as err:
        print(f"experiments: {err}", file=sys.stderr)
        return 2
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    if Path(args.out).resolve() == (ROOT / "experiments.md").resolve() and not args.quick:
        write_json(COMMITTED, json.loads(json.dumps(results, default=str)))
    for doc in refresh_docs(Path(args.docs), results) if args.docs else []:
        print(f"refreshed {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
