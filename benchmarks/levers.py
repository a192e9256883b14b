"""Each speed lever on its own: MiniLM LoRA training steps on the same SST-2 examples, one setting changed at a time.

    python benchmarks/levers.py [--rows 256] [--quick] [--no-compile]

Every row trains the same --rows examples (one pass, batch 16 unless the lever is the batch size)
from a fresh LoRA model (r=8, all linear layers) and reports the seconds for the pass and examples/s;
the ratio compares settings within one lever. The settings tunelab uses by default are marked, and
the table says whether each is the fastest measured. Levers: padding (to 128, per batch, per batch
with length-grouped batches), threads (1, all cores, measured), lora_dropout, batch size, attention
kernel (eager, SDPA), torch.compile, and for inference torch.no_grad vs torch.inference_mode.
Prints a table; writes benchmarks/results/levers.json.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
from pathlib import Path

from common import RESULTS, machine, shared_file, write_result

BATCH = 16


def examples(path: Path, rows: int) -> tuple[list[str], list[int]]:
    with path.open(encoding="utf-8") as f:
        found = list(csv.DictReader(f, delimiter="\t"))[:rows]
    return [r["sentence"].strip() for r in found], [int(r["label"]) for r in found]


def batches(tokenizer, texts, labels, batch_size: int, padding: str) -> list[dict]:
    """Shuffled batches; ``grouped`` sorts shuffled groups of 50 batches by length (as the Trainer's sampler)."""
    import torch

    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    if padding == "grouped":
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        group = 50 * batch_size
        order = [i for g in range(0, len(order), group)
                 for i in sorted(order[g:g + group], key=lambda i: -lengths[i])]
    found = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in chunk], truncation=True, max_length=128, return_tensors="pt",
                        padding="max_length" if padding == "max_length" else True)
        found.append({**enc, "labels": torch.tensor([labels[i] for i in chunk])})
    return found


def lora_model(model_path: str, dropout: float = 0.0, attention: str = "sdpa"):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2, attn_implementation=attention)
    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=dropout,
                                            target_modules="all-linear")).train()


def train_pass(model, data: list[dict], threads: int, compile_model: bool = False) -> dict:
    """Seconds for one pass over ``data`` (after two untimed warm-up steps, or compilation)."""
    import torch

    torch.set_num_threads(threads)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    forward = torch.compile(model, dynamic=True) if compile_model else model

    def step(batch):
        forward(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    started = time.perf_counter()
    for batch in data[:2]:
        step(batch)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    for batch in data:
        step(batch)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "warmup_seconds": round(warmup, 1),
            "examples_per_second": round(sum(len(b["labels"]) for b in data) / seconds, 1)}


def inference_rows(model, tokenizer, texts, threads: int, repeats: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    model.eval()
    batch = tokenizer(texts[:8], padding=True, return_tensors="pt")
    rows = []
    for name, context in (("torch.no_grad", torch.no_grad), ("torch.inference_mode", torch.inference_mode)):
        times = []
        for _ in range(repeats + 2):
            with context():
                started = time.perf_counter()
                model(**batch)
                times.append(time.perf_counter() - started)
        rows.append({"setting": name, "ms": round(1000 * statistics.median(times[2:]), 2)})
    return rows


def measure(args) -> dict:
    from transformers import AutoTokenizer

    from tunelab import machine
    from tunelab.machine import cpu_count
    from tunelab.models.resolve import resolve_model

    model_path = resolve_model("builtin:minilm")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts, labels = examples(Path(args.sst2) / "train.tsv", args.rows)
    cores, measured = cpu_count(), machine.pick()
    grouped = batches(tokenizer, texts, labels, BATCH, "grouped")
    plan = [  # (lever, setting, tunelab default?, how to run it)
        ("padding", "to max_length 128", False,
         lambda: train_pass(lora_model(model_path), batches(tokenizer, texts, labels, BATCH, "max_length"), measured)),
        ("padding", "per batch, random batches", False,
         lambda: train_pass(lora_model(model_path), batches(tokenizer, texts, labels, BATCH, "random"), measured)),
        ("padding", "per batch, length-grouped", True, lambda: train_pass(lora_model(model_path), grouped, measured)),
        ("threads", "1", False, lambda: train_pass(lora_model(model_path), grouped, 1)),
        ("threads", f"{cores} (all cores)", False, lambda: train_pass(lora_model(model_path), grouped, cores)),
        ("threads", f"measured ({measured})", True, lambda: train_pass(lora_model(model_path), grouped, measured)),
        ("lora_dropout", "0.1", False, lambda: train_pass(lora_model(model_path, 0.1), grouped, measured)),
        ("lora_dropout", "0.05", False, lambda: train_pass(lora_model(model_path, 0.05), grouped, measured)),
        ("lora_dropout", "0", True, lambda: train_pass(lora_model(model_path, 0.0), grouped, measured)),
        ("attention", "eager", False, lambda: train_pass(lora_model(model_path, attention="eager"), grouped, measured)),
        ("attention", "sdpa", True, lambda: train_pass(lora_model(model_path), grouped, measured)),
    ]
    for size in (16, 32, 64):
        plan.append(("batch size", str(size), size == BATCH,
                     lambda size=size: train_pass(lora_model(model_path),
                                                  batches(tokenizer, texts, labels, size, "grouped"), measured)))
    if not args.no_compile:
        plan += [("torch.compile", "off", True, lambda: train_pass(lora_model(model_path), grouped, measured)),
                 ("torch.compile", "on (dynamic shapes)", False,
                  lambda: train_pass(lora_model(model_path), grouped, measured, compile_model=True))]
    rows = []
    for lever, setting, default, call in plan:
        print(f"{lever}: {setting} ...", flush=True)
        rows.append({"lever": lever, "setting": setting, "tunelab_default": default, **call()})
    rows += [{"lever": "inference (batch 8)", "tunelab_default": r["setting"] == "torch.inference_mode", **r}
             for r in inference_rows(lora_model(model_path), tokenizer, texts, measured, args.repeats)]
    return {"rows": rows, "examples": len(texts), "cores": cores, "measured_threads": measured}


def summarize(result: dict) -> None:
    """Ratios within each lever (to its first setting), and whether tunelab's default is the fastest."""
    by_lever: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_lever.setdefault(row["lever"], []).append(row)
    for rows in by_lever.values():
        key = "examples_per_second" if "examples_per_second" in rows[0] else "ms"
        first = rows[0][key]
        for row in rows:
            row["ratio"] = round(row[key] / first if key == "examples_per_second" else first / row[key], 2)
    kept = []
    for lever, rows in by_lever.items():
        default = next(r for r in rows if r["tunelab_default"])
        best = max(rows, key=lambda r: r["ratio"])
        kept.append(f"{lever}: {default['setting']} ({default['ratio']}x"
                    + (", the fastest measured" if best is default else f"; fastest measured: {best['setting']} "
                       f"{best['ratio']}x") + ")")
    result["kept"] = kept


def table(result: dict) -> str:
    from tunelab.tables import text_table

    rows = [[r["lever"], r["setting"] + (" *" if r["tunelab_default"] else ""), r.get("seconds", ""),
             r.get("examples_per_second", r.get("ms", "")), r["ratio"], r.get("warmup_seconds", "")]
            for r in result["rows"]]
    return text_table(["lever", "setting (* tunelab default)", "s per pass", "examples/s (ms)", "x first", "warm-up s"],
                      rows) + "\n\n" + "\n".join(result["kept"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="SST-2 examples per pass (default 256)")
    parser.add_argument("--repeats", type=int, default=20, help="timed inference calls (median reported; default 20)")
    parser.add_argument("--sst2", default=None, help="folder with SST-2 train.tsv (default ../shared/data/sst2)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    parser.add_argument("--quick", action="store_true", help="64 examples, no torch.compile: checks the script runs")
    parser.add_argument("--out", default=None, help="folder for levers.json (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.no_compile, args.repeats = min(args.rows, 64), True, 3
    args.sst2 = args.sst2 or str(shared_file("sst2"))
    result = {"machine": machine(), **measure(args)}
    summarize(result)
    result["description"] = (f"MiniLM LoRA (r=8, all linear layers), one pass over the same {result['examples']} SST-2 "
                             f"examples per row, batch {BATCH} unless the lever is the batch size, "
                             f"{result['measured_threads']} threads (measured) unless the lever is threads. Training "
                             "rows: examples/s; inference rows: ms per batch-8 forward pass (median). "
                             "Ratios: against the lever's first setting, higher is faster.")
    print(table(result))
    print(f"wrote {write_result('levers', result, Path(args.out) if args.out else RESULTS)}")
    return result


if __name__ == "__main__":
    main()
