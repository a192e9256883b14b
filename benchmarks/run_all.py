"""Run every performance benchmark, then write benchmarks/RESULTS.md and the README's results table.

    python benchmarks/run_all.py [--only train_throughput,levers,...] [--render-only] [--quick]

Each benchmark runs in its own process and writes its JSON to benchmarks/results/; RESULTS.md is
rendered from those files alone (machine, date, medians, ratios, and every target met or missed), so
`--render-only` rebuilds it without measuring anything. The README's table between the
`<!-- measured:performance -->` markers is refilled the same way, and so is the causal demo's printed
result between `<!-- measured:demo-causal-lm -->` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import QUIET_ENV, RESULTS, ROOT, WORK

from tunelab.tables import markdown_table, replace_marked

ORDER = ("train_throughput", "levers", "memory", "inference", "serve_load", "serve_load_chat", "serve_load_chat_stream",
         "demo", "demo-causal-lm", "llm")
SERVE_RUN, CHAT_RUN = WORK / "minilm-intents", WORK / "smollm2-replies"  # both trained by inference.py


def command(name: str, quick: bool) -> list[str]:
    """The script and arguments that write ``results/<name>.json``."""
    return {"train_throughput": ["train_throughput.py"] + (["--quick"] if quick else []),
            "levers": ["levers.py"] + (["--quick"] if quick else []),
            "memory": ["memory.py"] + (["--steps", "3", "--models", "minilm"] if quick else []),
            "inference": ["inference.py"] + (["--skip-gptq"] if quick else []),
            "serve_load": ["serve_load.py", str(SERVE_RUN)] + (["--requests", "64"] if quick else []),
            "serve_load_chat": ["serve_load.py", str(CHAT_RUN), "--chat", "--max-tokens", "32", "--requests",
                                "32" if quick else "96"],
            "serve_load_chat_stream": ["serve_load.py", str(CHAT_RUN), "--chat", "--stream", "--max-tokens", "32",
                                       "--requests", "32" if quick else "96"],
            "demo": ["demo.py"],
            "demo-causal-lm": ["demo.py", "--task", "causal_lm"],
            "llm": ["llm.py"] + (["--lengths", "256", "--steps", "1", "--repeats", "1"] if quick else [])}[name]


def run(name: str, quick: bool) -> None:
    script, *extra = command(name, quick)
    print(f"== {name} {' '.join(extra)}", flush=True)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra],
                          env={**os.environ, **QUIET_ENV})
    if done.returncode != 0:
        raise SystemExit(f"{script} failed (exit code {done.returncode})")


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def verdict_rows(results: dict) -> list[list]:
    rows = []
    for name in ORDER:
        for v in (results.get(name) or {}).get("verdicts", []):
            rows.append([v["target"], v["goal"], v["measured"], "met" if v["met"] else "**missed**"])
    return rows


def train_section(data: dict) -> str:
    lines = []
    for case, c in data["cases"].items():
        peaks = c.get("matmul_peak", data["matmul_peak"])
        lines.append(f"{case}: measured {c.get('date', data['machine']['date'])}; matmul peaks in the same run: " + "; ".join(
            f"**{name} {peak['gflops']} GFLOP/s** ({peak['threads']} threads; by size: "
            f"{', '.join(f'{n}: {g}' for n, g in peak['per_size'].items())})" for name, peak in peaks.items()) + ".")
    lines.append("")
    headers = ["case", "contestant", "precision", "train s (median)", "samples/s", "non-pad tokens/s", "peak RSS MiB", "metric", "x baseline", "GFLOP/s (MFU)"]
    rows = []
    for case, c in data["cases"].items():
        for r in c["rows"]:
            peak = c.get("matmul_peak", data["matmul_peak"])[r["precision"]]["gflops"]
            mfu = f"{r['gflops']} ({r['gflops'] / peak:.0%})" if "gflops" in r else ""
            runs = r["train_seconds_all"]
            seconds = f"{r['train_seconds']} ({', '.join(map(str, runs))})" if len(runs) > 1 else r["train_seconds"]
            rows.append([case, r["contestant"], r["precision"], seconds, r["samples_per_second"], r["tokens_per_second"],
                         r["peak_rss_mb"], metric_cell(c["metric"], r), r.get("speedup_samples", 1), mfu])
    lines.append(markdown_table(headers, rows))
    lines.append("\nEach contestant ran in its own process, run k with seed k where a case says so. Its speed is "
                 "the median run's (every run's seconds in brackets, seed 0 first), its metric the median over its "
                 "runs (each run's in brackets, seed 0 first), and the quality targets take the median of the "
                 "per-seed differences from the baseline. Samples/s and tokens/s cover the whole training call, "
                 "tunelab's evaluations during training included (the baselines evaluate only afterwards). MFU "
                 "counts non-padding tokens over the training loop against the matmul peak of the precision used; "
                 "the FLOP formula is in `benchmarks/train_throughput.py`.")
    for case, c in data["cases"].items():
        lines.append(f"\n{case}: {c['rows_trained']} training rows, {c['mean_tokens']} tokens each on average, "
                     f"{c['epochs']:g} epoch(s), learning rate {c['lr']:g} for every contestant, "
                     f"{seeds_phrase(c)}.")
        lines.extend(plain_loop_line(c))
    return "\n".join(lines)


def metric_cell(name: str, row: dict) -> str:
    """The metric of one contestant: the median over its seeds, each seed's value after it."""
    each = row.get("metric_all", [])
    return f"{name} {row['metric']}" + (f" ({', '.join(map(str, each))})" if len(each) > 1 else "")


def seeds_phrase(case: dict) -> str:
    """Which seeds a case's runs trained with (runs measured before seeds varied all used seed 0)."""
    seeds = case.get("seeds", [0])
    if len(seeds) < 2:
        return f"seed {seeds[0]} in every run"
    once = any(r.get("runs", len(seeds)) == 1 for r in case["rows"])
    return (f"run k with seed k (seeds {', '.join(map(str, seeds))}"
            + ("; the rows measured once ran with seed 0)" if once else ")"))


def plain_loop_line(case: dict) -> list[str]:
    """tunelab's own training loop set against a straightforward PyTorch loop, where the case measured one."""
    rows = {r["contestant"]: r for r in case["rows"]}
    plain = next((r for label, r in rows.items() if label.startswith("plain PyTorch loop")), None)
    ours = rows.get("tunelab defaults")
    if plain is None or ours is None:
        return []
    same = ("the same precision" if plain["precision"] == ours["precision"]
            else f"{plain['precision']} where tunelab's own measurement chose {ours['precision']}")
    return [f"A plain PyTorch loop (the same model, LoRA, weight dtypes and batch size, {same}, over length-sorted "
            f"batches; no warm-up, clipping, evaluation, logging or checkpoints) ran at {plain['samples_per_second']} "
            f"samples/s, {plain['speedup_samples']}x the tutorial baseline. tunelab's training loop ran at "
            f"{ours['loop_samples_per_second']} samples/s with its {ours['eval_seconds']} s of evaluations "
            f"left out ({ours['loop_samples_per_second'] / plain['samples_per_second']:.2f}x the plain loop), and "
            f"its whole call, evaluations included, at {ours['samples_per_second']}."]


def levers_section(data: dict) -> str:
    headers = ["lever", "setting (* tunelab's default)", "seconds per pass", "examples/s (inference: ms)",
               "x the first setting", "warm-up s (2 steps, or compiling)"]
    rows = [[r["lever"], r["setting"] + (" *" if r["tunelab_default"] else ""), r.get("seconds", ""),
             r.get("examples_per_second", r.get("ms", "")), r["ratio"], r.get("warmup_seconds", "")]
            for r in data["rows"]]
    return (f"{data['description']}\n\n" + markdown_table(headers, rows)
            + "\n\ntunelab's defaults:\n" + "\n".join(f"- {line}" for line in data["kept"]))


def memory_section(data: dict) -> str:
    headers = ["model", "method", "trainable params", "peak RSS MiB", "RSS after imports MiB", "method MiB",
               "peak vs full", "method MiB vs full"]
    rows = [[name, r["method"], f"{r['trainable_params']:,}", r["peak_rss_mb"], r["rss_after_imports_mb"],
             r["method_mb"], r.get("peak_vs_full", ""), r.get("method_mb_vs_full", "")]
            for name, m in data["models"].items() for r in m["rows"]]
    return ("Peak RSS of the whole training process; \"method MiB\" is the peak minus the RSS once torch, "
            "transformers and PEFT are imported (the same for every method).\n\n" + markdown_table(headers, rows))


def inference_section() -> str:
    path = RESULTS / "inference.md"
    return path.read_text(encoding="utf-8").replace("## ", "### ") if path.exists() else ""


def serve_section(data: dict) -> str:
    streamed = data.get("stream", False)
    headers = ["server", "requests/s", "p50 ms", "p95 ms", "p99 ms", *(["first text p50 ms"] if streamed else []),
               "server peak RSS MiB", "responses by status"]
    rows = [[r["server"], r["requests_per_second"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
             *([r.get("first_text_p50_ms")] if streamed else []), r["server_peak_rss_mb"],
             ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))] for r in data["rows"]]
    tokens = f", each asking for {data['max_tokens']} tokens" if data.get("endpoint", "").endswith("completions") else ""
    how = " streamed (latency: to `[DONE]`)" if streamed else ""
    return (f"{data['requests']} requests to `{data.get('endpoint', '/v1/classify')}`{how} from {data['clients']} "
            f"concurrent clients, {data['bad_share']:.0%} of them malformed or oversized{tokens}, against "
            f"`tunelab serve` on `{Path(data['run']).name}`.\n\n"
            + markdown_table(headers, rows) + f"\n\nMicro-batching: **{data['batching_speedup']}x** the requests/s.")


def demo_section(data: dict) -> str:
    task = data.get("task", "classification")
    if task == "classification":
        what, score = "models already cached", "accuracy"
    else:
        what, score = "an empty model cache: the download of SmolLM2 and its conversion included", "rougeL"
    rows = [[i + 1, r["seconds"], r.get("base", r.get("base_accuracy")), r.get("tuned", r.get("tuned_accuracy"))]
            for i, r in enumerate(data["runs"])]
    return (f"`tunelab demo --task {task}` in a fresh process ({what}), as the README runs it.\n\n"
            + markdown_table(["run", "seconds", f"base {score}", f"tuned {score}"], rows)
            + f"\n\nMedian: **{data['median_seconds']:g} s**.")


def demo_printed(data: dict | None) -> str | None:
    """The README's quote of the causal demo: what it printed, in a code block."""
    if not data or not data["runs"][-1].get("printed"):
        return None
    run = data["runs"][-1]
    return ("```\n" + "\n".join(run["printed"]) + "\n```\n\n"
            f"_Printed {data['machine']['date']} on {data['machine']['cpu']} ({data['machine']['cores']} cores), "
            f"{run['seconds'] / 60:.1f} min in all, the download and conversion of SmolLM2 included "
            f"(`python benchmarks/demo.py --task causal_lm`)._")


def llm_section(data: dict) -> str:
    baseline = {m["length"]: m["peak_rss_mb"] for m in data["memory"] if m["variant"] == "model-loss"}
    rows = [[m["variant"], m["length"], round(m["peak_rss_mb"]), f"{m['peak_rss_mb'] / baseline[m['length']]:.2f}x"
             if m["length"] in baseline else "", round(m["seconds_per_step"], 1), m["final_train_loss"]]
            for m in data["memory"]]
    parts = [f"LoRA on {data['model']} at batch {data['batch_size']}, packed sequences of exactly the given "
             f"length, {data['steps']} optimizer steps per process; peak RSS includes loading the model.\n",
             markdown_table(["variant", "length", "peak RSS MiB", "vs model-loss", "s/step", "train loss"], rows)]
    if "generation" in data:
        from llm import generation_table

        parts += ["\nGreedy generation (KV cache, left padding, `inference_mode`) after a 2-step LoRA run, "
                  f"{data.get('new_tokens', 64)} new tokens per request; the contestants take turns on the same "
                  "prompts. \"Merged\": the adapter folded into the weights at load, as `tunelab evaluate` and "
                  "`tunelab serve` load a LoRA run:\n", generation_table(data["generation"])]
    return "\n".join(parts)


def quantization_readme_table(data: dict | None) -> str | None:
    """The README's short quantization table: the classifier's rows of inference.json."""
    if not data or "minilm_intents" not in data:
        return None
    report = data["minilm_intents"]
    rows = [[("fp32 (merged)" if r["variant"] == report["reference"] else r["variant"]), r["disk_mb"],
             f"{r['block_weights_ratio']:.2f}x", f"{r['latency_ms']['1']:.1f} / {r['latency_ms']['8']:.1f}",
             f"{r['metric_value']:.3f}", f"{r['agreement']:.1%}"]
            for r in report["rows"] if "error" not in r and r["variant"] != "adapter"]
    return (markdown_table(["variant", "disk MiB", "transformer blocks vs fp32", "latency bs1 / bs8 (ms)",
                            "accuracy", "same label as fp32"], rows)
            + f"\n\n_Measured {data['machine']['date']} on {data['machine']['cpu']}._")


def measured_when(data: dict | None) -> str:
    """When and where a benchmark's JSON was measured (benchmarks can be rerun one at a time)."""
    found = (data or {}).get("machine") or {}
    return f"_Measured {found['date']} on {found['cpu']}._\n" if "date" in found else ""


def render(results: dict) -> str:
    header = next((results[n]["machine"] for n in ORDER if results.get(n) and "machine" in results[n]), {})
    parts = ["# Performance results", "",
             "Written by `python benchmarks/run_all.py` from the JSON files in `benchmarks/results/`; nothing here "
             "is typed in. Every ratio compares contestants measured one after another in the same run.", ""]
    if header:
        parts += [f"Machine: {header['cpu']}, {header['cores']} usable cores, {header['memory_gib']} GiB; "
                  f"Python {header['python']}, torch {header.get('torch')}, transformers {header.get('transformers')}, "
                  f"peft {header.get('peft')}. Each section says when it was measured.", ""]
    parts += ["## Targets", "", markdown_table(["target", "goal", "measured", "result"], verdict_rows(results)), ""]
    sections = {"train_throughput": ("Training throughput (`train_throughput.py`)", train_section),
                "levers": ("Each lever on its own (`levers.py`)", levers_section),
                "memory": ("Training memory (`memory.py`)", memory_section),
                "serve_load": ("Serving under load (`serve_load.py`)", serve_section),
                "serve_load_chat": ("Serving chat completions under load (`serve_load.py --chat`)", serve_section),
                "serve_load_chat_stream": ("Streamed chat completions under load (`serve_load.py --chat --stream`)",
                                           serve_section),
                "demo": ("The README's demo, timed (`demo.py`)", demo_section),
                "demo-causal-lm": ("The README's causal demo, timed (`demo.py --task causal_lm`)", demo_section),
                "llm": ("A real LLM on the CPU: LoRA memory and generation speed (`llm.py`)", llm_section)}
    for name in ORDER:
        if name == "inference" and (RESULTS / "inference.md").exists():
            parts += ["## Inference: fp32 vs quantized (`inference.py`)", "", measured_when(results.get(name)),
                      inference_section(), ""]
        elif name in sections and results.get(name):
            title, build = sections[name]
            parts += [f"## {title}", "", measured_when(results[name]), build(results[name]), ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ORDER), help=f"comma-separated benchmarks (default all: {', '.join(ORDER)})")
    parser.add_argument("--render-only", action="store_true", help="rebuild RESULTS.md and the README table from the JSON")
    parser.add_argument("--quick", action="store_true", help="small settings that check every script runs (numbers meaningless)")
    args = parser.parse_args(argv)
    if not args.render_only:
        for name in args.only.split(","):
            run(name, args.quick)
    results = {name: load(name) for name in ORDER}
    (ROOT / "benchmarks" / "RESULTS.md").write_text(render(results), encoding="utf-8")
    readme = ROOT / "README.md"
    table = markdown_table(["target", "goal", "measured", "result"], verdict_rows(results))
    text = replace_marked(readme.read_text(encoding="utf-8"), "measured:performance", table)
    for marker, body in (("measured:quantization", quantization_readme_table(results["inference"])),
                         ("measured:demo-causal-lm", demo_printed(results["demo-causal-lm"]))):
        if body:
            text = replace_marked(text, marker, body)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {ROOT / 'benchmarks' / 'RESULTS.md'} and the README's measured sections")


if __name__ == "__main__":
    main()
