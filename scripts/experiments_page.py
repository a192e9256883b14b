"""experiments.md from the measurements ``scripts/experiments.py`` wrote: one function per section.

Everything on the page comes from the results dict: settings, counts and verdicts are read or computed
from it, so the page stays true when the configs or the machine change.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from tunelab.machine import BF16_CLEARLY_FASTER
from tunelab.quantization import compare as quantize_compare
from tunelab.studies import advise, bakeoff
from experiments_header import header
from tunelab.tables import fmt, markdown_table

SECTION_ORDER = ("approaches", "methods", "memory", "sweeps", "quantization", "precision")
SECTION_TITLES = {"approaches": "1. Approach comparison: prompting, few-shot, retrieval or fine-tuning",
                  "methods": "2. Fine-tuning methods side by side, on the chat model",
                  "memory": "3. Where training memory goes: full fine-tuning vs LoRA",
                  "sweeps": "4. LoRA settings: rank, alpha, dropout and learning rate, on the harder task",
                  "quantization": "5. Quantization for deployment, on the chat model",
                  "precision": "6. Precision: fp32 vs bf16 on this CPU"}
METHOD_HEADERS = ["method", "learning rate", "precision", "trainable %", "peak RSS MiB", "train s", "samples/s",
                  "artifact MiB", "test ROUGE-L [95% CI]", "test perplexity [95% CI]", "perplexity, base"]
ROOT = Path(__file__).resolve().parents[1]
MEMORY_PARTS = ("weights_mb", "gradients_mb", "optimizer_mb", "weight_copies_mb", "activations_mb")


def render(results: dict, tolerance: float, serve_load: dict | None = None) -> str:
    writers = {"approaches": approach_section, "methods": methods_section, "memory": memory_section,
               "sweeps": lambda r: sweeps_section(r, tolerance), "quantization": quantization_section,
               "precision": precision_section}
    parts = [header(results, SECTION_ORDER)]
    parts += [writers[name](results) for name in SECTION_ORDER if name in results["sections"]]
    parts += [transfer_section(results, tolerance), production_section(results, serve_load)]
    return "\n".join(parts)


def ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "error" not in r]


# --- 1. approaches -----------------------------------------------------------------------------------------------

def advise_table(report: dict) -> str:
    headers, rows = advise.table_rows(report)
    rec = report["recommendation"]
    return (f"{markdown_table(headers, rows)}\n\n**Recommendation:** {rec['approach']}: {rec['reason']} "
            f"(rule: {rec['rule']}).")


def approach_section(results: dict) -> str:
    found = results["sections"]["approaches"]
    chat, cls, probe = found["chat"], found["classifier"], found.get("classifier_probe")
    text = [f"## {SECTION_TITLES['approaches']}\n",
            f"**The chat model.** `tunelab advise CHAT` on the {chat['split']} split ({chat['examples']} examples), "
            f"scored by {chat['metric']} against the reference reply. Zero-shot prompting asks the base model; few-shot "
            f"puts the same {advise.SHOTS} training pairs before every message; retrieval puts the {advise.SHOTS} "
            "training pairs nearest to the message (found with MiniLM) there; fine-tuning is a LoRA run answering "
            "with no examples. Setup is the time to build each one (for fine-tuning, the training); prompt tokens "
            "are paid at every request.\n", advise_table(chat) + "\n",
            "**The classifier.** An encoder has no prompt, so its cheap approaches are its embeddings: zero-shot "
            "label-name similarity (the text against each label's name, both embedded by the base encoder) and a "
            f"5-nearest-neighbour vote over the embedded training set. `tunelab advise CLASSIFIER "
            f"eval.max_examples=...` on every example of the {cls['split']} split ({cls['examples']}):\n",
            advise_table(cls) + "\n"]
    if probe and "accuracy" in probe["metrics"]:
        acc = probe["metrics"]["accuracy"]
        text.append(f"`tunelab evaluate` on the same fine-tuned run compares it with a **linear probe**: a logistic "
                    "regression trained on the frozen encoder's embeddings of the training set: what a trained "
                    f"classifier reaches while the encoder stays as it was. Test accuracy: probe {acc['base']:.4f}, fine-tuned "
                    f"{acc['tuned']:.4f}, difference {acc['delta']:+.4f} with a 95% bootstrap CI of "
                    f"[{acc['ci95'][0]:+.4f}, {acc['ci95'][1]:+.4f}] over the {probe['examples']} test examples.\n")
    return "\n".join(text)


# --- 2. methods ----------------------------------------------------------------------------------------------

def with_ci(score: dict) -> str:
    low, high = score["tuned_ci95"]
    return f"{score['tuned']:.4g} [{low:.4g}, {high:.4g}]"


def method_cells(row: dict) -> list:
    if "error" in row:
        return [row["method"], row["learning_rate"]] + ["-"] * (len(METHOD_HEADERS) - 3) + [f"failed: {row['error']}"]
    scores = row.get("scores", {})
    rouge, ppl = scores.get("rougeL"), scores.get("perplexity")
    return [row["method"], row["learning_rate"], row.get("precision_used", "-"), row["trainable_percent"],
            row["peak_rss_mb"], row["train_seconds"], row["train_samples_per_second"], row["artifact_size_mb"],
            with_ci(rouge) if rouge else "-", with_ci(ppl) if ppl else "-", fmt(ppl["base"]) if ppl else "-"]


def methods_section(results: dict) -> str:
    report = results["sections"]["methods"]
    methods = ",".join(r["method"] for r in report["rows"])
    return (f"## {SECTION_TITLES['methods']}\n\n"
            f"`tunelab bakeoff CHAT --methods {methods}`: each method in its own process (so peak RSS is its own), the "
            f"same data, seed and epochs, scored on the {report['split']} split with 95% bootstrap CIs. Full-weight "
            f"methods run at most at {bakeoff.FULL_WEIGHT_LEARNING_RATE:g}, the usual rate for updating every weight; "
            "the adapters at the config's rate.\n\n"
            + markdown_table(METHOD_HEADERS, [method_cells(r) for r in report["rows"]]) + "\n\n"
            + methods_reading(report["rows"]) + "\n")


def methods_reading(rows: list[dict]) -> str:
    scored = {r["method"]: r for r in ok(rows) if r.get("scores", {}).get("rougeL")}
    if "lora" not in scored:
        return ""
    lora = scored["lora"]
    lines = []
    for name, row in scored.items():
        if name == "lora":
            continue
        mine, theirs = row["scores"]["rougeL"], lora["scores"]["rougeL"]
        overlap = mine["tuned_ci95"][0] <= theirs["tuned_ci95"][1] and theirs["tuned_ci95"][0] <= mine["tuned_ci95"][1]
        lines.append(f"{name} {mine['tuned']:.3f} vs LoRA {theirs['tuned']:.3f} ROUGE-L ("
                     + ("the CIs overlap: no measurable difference" if overlap else "the CIs do not overlap")
                     + f"), {row['train_seconds'] / lora['train_seconds']:.2f}x LoRA's training time and "
                     f"{row['peak_rss_mb'] / lora['peak_rss_mb']:.2f}x its peak RSS")
    return "Reading it: " + "; ".join(lines) + "." if lines else ""


# --- 3. memory -----------------------------------------------------------------------------------------------

def memory_section(results: dict) -> str:
    rows = results["sections"]["memory"]["rows"]
    return (f"## {SECTION_TITLES['memory']}\n\n"
            "`tunelab.studies.memory.parts(CHAT, method)`: one training step on the most expensive batch the run can "
            "see (the config's batch size of max-length rows, every position labelled), with the loss tunelab trains "
            "with, each part counted as the bytes of the tensors that hold it. Weight copies are the low-precision "
            "copies of weights that autocast keeps for the backward pass; activations are everything else autograd "
            "keeps. Peak RSS is the bake-off's, for the whole run, with real (shorter, prompt-masked) batches.\n\n"
            + memory_table(rows, peaks(results)) + "\n\n" + memory_reading(rows) + "\n")


def peaks(results: dict) -> dict:
    return {r["method"]: r["peak_rss_mb"] for r in ok(results["sections"].get("methods", {}).get("rows", []))}


def total(row: dict) -> float:
    return sum(row.get(part, 0.0) for part in MEMORY_PARTS)


def memory_table(rows: list[dict], peak: dict) -> str:
    return markdown_table(
        ["method", "precision", "batch", "trainable params", "weights MiB", "gradients MiB", "optimizer state MiB",
         "weight copies MiB", "activations MiB", "sum MiB", "peak RSS MiB (bake-off)"],
        [[r["method"], r["precision"], r["batch"], r["trainable_params"], r["weights_mb"], r["gradients_mb"],
          r["optimizer_mb"], r.get("weight_copies_mb", "-"), r["activations_mb"], round(total(r), 1),
          peak.get(r["method"], "-")] for r in rows])


def memory_reading(rows: list[dict]) -> str:
    by = {r["method"]: r for r in rows}
    if not {"full", "lora"} <= set(by):
        return ""
    full, lora = by["full"], by["lora"]
    trained = full["gradients_mb"] + full["optimizer_mb"] - lora["gradients_mb"] - lora["optimizer_mb"]
    acts = lora["activations_mb"] / full["activations_mb"] if full["activations_mb"] else float("nan")
    text = (f"Full fine-tuning keeps {full['gradients_mb']:,.0f} MiB of gradients and {full['optimizer_mb']:,.0f} MiB "
            f"of AdamW moments, one gradient and two moments for every weight; LoRA keeps "
            f"{lora['gradients_mb'] + lora['optimizer_mb']:,.0f} MiB for its adapters, {trained:,.0f} MiB less. ")
    if lora["weights_mb"] < full["weights_mb"]:
        text += (f"Its weights take {lora['weights_mb']:,.0f} vs {full['weights_mb']:,.0f} MiB because its frozen base "
                 f"is held in {lora['precision']}, a precision choice rather than LoRA itself. ")
    text += (f"The activations are {lora['activations_mb']:,.0f} vs {full['activations_mb']:,.0f} MiB ({acts:.2f}x): "
             "every layer's inputs are kept for the backward pass whether its weights train or not. In all, LoRA's "
             f"counted total is {total(lora) / total(full):.2f}x full fine-tuning's at this batch. ")
    saved, share = 1 - total(lora) / total(full), full["activations_mb"] / total(full)
    text += (f"LoRA saves {saved:.0%} of full fine-tuning's counted bytes here, while the activations, which every "
             f"method keeps, are {share:.0%} of them: the saving is a fixed number of bytes, a smaller share with "
             "longer sequences and bigger batches and a larger one on bigger models at small batches. Gradient checkpointing "
             "(`train.gradient_checkpointing`) is the lever for the activations.")
    return text


# --- 4. sweeps -----------------------------------------------------------------------------------------------

def sweep_axes(sweeps: dict, settings: dict) -> dict[str, list[dict]]:
    """Each axis's points plus the config's own point (the seed sweep's run at the config's seed)."""
    seeds = sweeps.get("train.seed", {}).get("results", [])
    centre = next((r for r in seeds if r["setting"]["train.seed"] == settings["train"]["seed"]), None)
    axes = {}
    for key, report in sweeps.items():
        if key == "train.seed":
            continue
        section, name = key.split(".")
        rows = [dict(r, value=r["setting"][key]) for r in report["results"]]
        own = settings[section][name]
        if centre and all(r["value"] != own for r in rows):
            rows.append(dict(centre, value=own, centre=True))
        axes[key] = sorted(rows, key=lambda r: r["value"])
    return axes


def noise(results: dict) -> dict | None:
    """The two noises a sweep point carries: seed to seed, and the validation split's sampling."""
    seeds = [r["validation"] for r in results["sections"]["sweeps"].get("train.seed", {}).get("results", [])
             if r["validation"] is not None]
    n = (results["classifier"].get("data") or {}).get("validation")
    if len(seeds) < 2 or not n:
        return None
    p = statistics.mean(seeds)
    sd, sampling = statistics.stdev(seeds), (p * (1 - p) / n) ** 0.5
    return {"seeds": seeds, "seed_spread": max(seeds) - min(seeds), "seed_sd": sd, "sampling_sd": sampling, "n": n,
            "margin": 2 * max(sd, sampling)}


def sweeps_section(results: dict, tolerance: float) -> str:
    sweeps, settings = results["sections"]["sweeps"], results["classifier"]["settings"]
    spread = noise(results)
    seeds = sweeps.get("train.seed", {}).get("results", [])
    n = (results["classifier"].get("data") or {}).get("validation")
    parts = [f"## {SECTION_TITLES['sweeps']}\n",
             "`tunelab sweep CLASSIFIER KEY=V1,V2,...`: one axis at a time, the others at the config's values, each "
             f"point a full training run scored on the {n or 'the'} validation examples (the test split is kept for "
             f"section 1). The config's own point is the seed sweep's run at seed {settings['train']['seed']}.\n"]
    if spread:
        parts.append(
            f"**The noise first.** The config trained with seeds {', '.join(fmt(r['setting']['train.seed']) for r in seeds)} "
            f"scored {', '.join(f'{v:.4f}' for v in spread['seeds'])}: a spread of {spread['seed_spread']:.4f} "
            f"(standard deviation {spread['seed_sd']:.4f}) from the seed alone (initialisation, dropout, data order). "
            f"Sampling {spread['n']} validation examples adds a standard error of {spread['sampling_sd']:.4f} at this "
            f"accuracy; one example is {1 / spread['n']:.4f}. Below, a difference counts as real only when it exceeds "
            f"{spread['margin']:.4f}, twice the larger of the two; with {n_points(sweeps)} points compared, a difference "
            "near that line can still be chance.\n")
    for key, rows in sweep_axes(sweeps, settings).items():
        table = [[fmt(r["value"]) + (" (config)" if r.get("centre") else ""), r["validation"], r["trainable_params"]]
                 for r in rows]
        parts.append(f"**{key}** (`tunelab sweep CLASSIFIER {key}={','.join(fmt(r['value']) for r in rows)}`)\n\n"
                     + markdown_table([key, sweeps[key]["metric"], "trainable params"], table) + "\n\n"
                     + axis_verdict(key, rows, sweeps[key]["metric"], spread["margin"] if spread else tolerance) + "\n")
    return "\n".join(parts)


def n_points(sweeps: dict) -> int:
    return sum(len(report["results"]) for report in sweeps.values())


def spread_of(rows: list[dict]) -> float:
    scored = [r["validation"] for r in rows if r["validation"] is not None]
    return max(scored) - min(scored) if scored else 0.0


def axis_verdict(key: str, rows: list[dict], metric: str, margin: float) -> str:
    scored = [r for r in rows if r["validation"] is not None]
    if not scored:
        return "No point produced a validation score."
    best = max(scored, key=lambda r: r["validation"])
    worst = min(scored, key=lambda r: r["validation"])
    gap = best["validation"] - worst["validation"]
    if gap <= margin:
        return (f"The spread over the axis, {gap:.4f}, is within the noise ({margin:.4f}): on this task and budget "
                f"{key} made no measurable difference over {', '.join(fmt(r['value']) for r in rows)}.")
    close = [r for r in scored if best["validation"] - r["validation"] <= margin]
    text = (f"Best {key}={fmt(best['value'])} ({metric} {best['validation']:.4f}), worst {key}={fmt(worst['value'])} "
            f"({worst['validation']:.4f}): a spread of {gap:.4f}, more than the noise ({margin:.4f}). Within the noise "
            f"of the best: {', '.join(fmt(r['value']) for r in close)}.")
    if len({r["trainable_params"] for r in close}) > 1:
        cheapest = min(close, key=lambda r: r["trainable_params"])
        text += f" The cheapest of those is {key}={fmt(cheapest['value'])} ({cheapest['trainable_params']:,} trainable parameters)."
    return text


def axes_beyond_noise(results: dict, tolerance: float) -> tuple[list[str], list[str]]:
    """(axes whose spread exceeded the noise, axes whose spread did not)."""
    sweeps = results["sections"].get("sweeps", {})
    spread = noise(results) if sweeps else None
    margin = spread["margin"] if spread else tolerance
    axes = sweep_axes(sweeps, results["classifier"]["settings"])
    moved = [key for key, rows in axes.items() if spread_of(rows) > margin]
    return moved, [key for key in axes if key not in moved]


# --- 5. quantization, 6. precision ----------------------------------------------------------------------------

def shown_path(path: str) -> str:
    """A path under the repository as the page's reader would type it (relative), others as they are."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def markdown_note(line: str) -> str:
    """A note of `quantize --compare` in Markdown: backslashes kept as written, a warning in bold."""
    line = line.replace("\\", "\\\\")
    return "**Warning:** " + line[len("warning: "):] if line.startswith("warning: ") else line


def quantization_section(results: dict) -> str:
    report = dict(results["sections"]["quantization"])
    report["run"] = shown_path(report["run"])
    methods = [r["variant"] for r in report["rows"] if r["variant"] not in ("merged", "model", "adapter", "bf16")]
    gptq = "" if "gptq" in methods else (
        " There is no GPTQ row: it runs only where its extra is installed (`pip install -e \".[gptq]\" "
        "torch==2.13.0`), and it was not installed where this page was measured.")
    return (f"## {SECTION_TITLES['quantization']}\n\n"
            f"`tunelab quantize RUN --method {','.join(methods)} --compare` on the LoRA run of section 2 (merged into "
            "fp32 first). 'blocks x fp32' is the memory of the transformer blocks' weights relative to fp32 (embeddings "
            "and head stay in fp32 in every variant). Latency is the median of timed greedy generations; the metric is "
            f"on the {report.get('split', 'test')} split. Section 2 scored the runs as `tunelab evaluate` does "
            "(`eval.precision: auto`, so bf16 where bf16 is fast); here every copy is scored in its own precision "
            "against the merged fp32 model, so the LoRA run's perplexity can differ in the third decimal. Agreement "
            "is the share of fp32's greedy tokens a copy produced at the same position: one different token shifts "
            f"everything after it, so agreement falls much faster than perplexity rises.{gptq}\n\n"
            + "\n\n".join(markdown_note(line) for line in quantize_compare.notes(report)) + "\n\n"
            + markdown_table(quantize_compare.COLUMNS, [quantize_compare.table_cells(r) for r in report["rows"]]) + "\n")


def precision_section(results: dict) -> str:
    fp32 = ok(results["sections"]["precision"]["rows"])
    auto = [r for r in ok(results["sections"].get("methods", {}).get("rows", [])) if r["method"] == "lora"]
    title = f"## {SECTION_TITLES['precision']}\n\n"
    if not fp32 or not auto:
        return title + "One of the two runs is missing or failed; see experiments.json.\n"
    # auto's own measurement in that run; the page-wide one (older pages) may be from a later --only run
    speeds = auto[0].get("precision_gflops") or results.get("matmul_gflops", {})
    chat, used = results["chat"]["settings"], auto[0].get("precision_used", "?")
    a, b = dict(fp32[0], method="lora, fp32"), dict(auto[0], method=f"lora, {chat['train']['precision']} ({used})")
    return (title + f"`tunelab bakeoff CHAT --methods lora train.precision=fp32` against section 2's LoRA run, trained "
            f"with `train.precision: {chat['train']['precision']}`, which chose **{used}** here: a layer-shaped matmul ran "
            f"at {speeds.get('fp32_gflops')} GFLOP/s in fp32 and {speeds.get('bf16_gflops')} in bf16, and `auto` takes "
            f"bf16 on a CPU only when it measures at least {BF16_CLEARLY_FASTER}x fp32.\n\n"
            + markdown_table(METHOD_HEADERS, [method_cells(a), method_cells(b)]) + "\n\n"
            f"The {used} run took {b['train_seconds'] / a['train_seconds']:.2f}x the fp32 run's training time at "
            f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x its peak RSS. bf16 keeps fp32's exponent range, so the same "
            "learning rate works without loss scaling; its 7-bit mantissa (about 3 significant digits) is why tunelab "
            "keeps the trained weights (adapters, heads) in fp32.\n")


# --- 7. transfer, 8. production ------------------------------------------------------------------------------

def transfer_section(results: dict, tolerance: float = 0.01) -> str:
    chat = results["chat"]["settings"]
    ratio = chat["train"]["learning_rate"] / bakeoff.FULL_WEIGHT_LEARNING_RATE
    lines = ["## 7. What carries over to GPUs and larger models\n",
             "- **Carries over:** measuring the cheap approaches before training; that full fine-tuning needs a lower "
             f"learning rate than an adapter (here {bakeoff.FULL_WEIGHT_LEARNING_RATE:g} against "
             f"{chat['train']['learning_rate']:g}, {ratio:.0f}x); that a setting's effect means nothing until it is "
             "compared with the seed-to-seed noise; and the bytes LoRA saves on gradients and optimizer state (12 per "
             "frozen parameter with fp32 AdamW)."]
    if "sweeps" in results["sections"]:
        moved, flat = axes_beyond_noise(results, tolerance)
        found = (f"{', '.join(moved)} moved validation accuracy beyond the noise" if moved else
                 "no setting moved validation accuracy beyond the noise")
        if moved and flat:
            found += f" and {', '.join(flat)} did not"
        lines.append(f"- **Carries over with care:** which settings mattered. Here {found}; that depends on the "
                     "task, the budget (epochs) and the model, so sweep again on yours.")
    lines.append("- **Does not carry over:** the times and speed ratios. A GPU runs bf16 at full speed and NF4 through "
                 "bitsandbytes' CUDA kernels; on a GPU QLoRA trades step speed for memory, and CPU dynamic int8 has no "
                 "GPU counterpart in tunelab. Memory shares change with model size: at 7B parameters the weights and "
                 "optimizer state dwarf a small batch's activations, so LoRA and QLoRA save a far larger share than on "
                 "a 135M model (`docs/concepts/quantization.md` has the worksheet).")
    lines.append("- **Scale with care:** small test splits give wide CIs (see the tables); a larger model may need "
                 "fewer epochs and a lower learning rate, and more test examples to separate methods.\n")
    return "\n".join(lines)


def production_section(results: dict, serve_load: dict | None = None) -> str:
    lines = ["## 8. Production considerations\n"]
    report = results["sections"].get("quantization")
    rows = ok(report["rows"]) if report else []
    if rows:
        lines += [f"- **{line.split(':')[0].capitalize()}:**{line.split(':', 1)[1]}."
                  for line in quantize_compare.tradeoffs(report)]
        reference = next((r for r in rows if r["variant"] in ("merged", "model")), None)
        adapter = next((r for r in rows if r["variant"] == "adapter"), None)
        if adapter and reference:
            lines.append(f"- **Merge before serving:** the unmerged adapter took {adapter['latency_ms']['1']:.1f} ms at "
                         f"batch 1 vs {reference['latency_ms']['1']:.1f} ms merged; keep the adapter (its folder, "
                         f"tokenizer included, takes {adapter['disk_mb']:.2f} MiB) to ship many tasks over one base.")
    if serve_load:
        lines.append("- **Serving:** `python benchmarks/serve_load.py` (`benchmarks/results/serve_load.json`): "
                     + serve_load_sentence(serve_load))
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
            f"{load['clients']} concurrent clients on the {load['task']} run; p95 latency {one['p95_ms']:.0f} -> "
            f"{many['p95_ms']:.0f} ms.")
