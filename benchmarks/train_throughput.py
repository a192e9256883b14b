"""Training throughput: tunelab against the code users would write instead, side by side, medians of 3 runs.

    python benchmarks/train_throughput.py [--cases classification,causal] [--rows 1000] [--repeats 3] [--quick]

Same data, model, LoRA settings, epochs and learning rate for every contestant; each run in its own process. Run k
of every contestant trains with seed k (0, 1, 2 by default): the speed counted is the median run's, the quality
metric the median over the seeds, so one lucky or unlucky draw does not decide the quality check.

classification: the first --rows rows of SST-2 (../shared/data/sst2/train.tsv), accuracy on dev.tsv,
  MiniLM (all-MiniLM-L6-v2), LoRA r=8 (alpha 16, dropout 0.1) on query/key/value/dense, learning rate 5e-4.
  (a) tutorial baseline: HF Trainer + PEFT as the tutorials write it, every example padded to max_length 128,
      batch 16, everything else at its default (fp32 on a CPU).
  (b) a plain PyTorch loop over length-sorted batches of 16 with the precision tunelab picks, and nothing else
      (no warm-up, clipping, evaluation, logging or checkpoint): what tunelab's own loop is set against.
  (c) tunelab: `tunelab train` with its defaults (dynamic padding, length-grouped batches, measured threads
      and precision, an evaluation and best checkpoint every epoch), given the baseline's LoRA settings.
causal: SmolLM2-135M-Instruct (builtin:smollm2-135m), the first 160 reply pairs of tunelab's built-in
  support_instructions (rendered with the model's chat template, at most 256 tokens), batch 8, LoRA r=8
  (alpha 16) on every linear layer, learning rate 2e-4, 1 epoch.
  (b) TRL SFTTrainer with its defaults plus use_cpu=True, which a CPU user must add (it then trains under
      bf16 autocast, with gradient checkpointing on by default); the loss on the completion only.
  (c) tunelab with its defaults (measured precision, its own labelled loss, no checkpointing).
  (d) tunelab full fine-tuning, same batch: the memory LoRA saves.
  (e) tunelab LoRA and full fine-tuning, both with train.gradient_checkpointing: the memory LoRA saves once
      activations no longer dominate (one run each).
  Tokens/s count every non-padding token of the rendered conversation (prompt and reply alike), the same
  count for every contestant; the metric is the mean training loss of the epoch (trainer's training_loss).

Samples/s and tokens/s are over the whole training call (tunelab's evaluations during training included),
the median of --repeats runs. Model FLOPs utilisation (MFU) counts only non-padding tokens, over the training
loop (the time of those evaluations, from train_log.jsonl, left out). Per token, a matmul weight costs
2 FLOPs forward and 2 backward for the input gradient, plus 2 more when it is trained (its weight gradient):
4 N_frozen + 6 N_trained, where N counts weights applied per token (embedding lookups and per-sequence heads
left out). Attention adds 12 L d T per token in a T-token sequence (QK^T and AV, 4 L d T forward, twice that
backward). MFU = achieved FLOP/s / the matmul peak, measured at the start of the same run, of the precision
tunelab used (metrics.json's precision). Prints a table; writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from flops import flops_per_token, training_flops
from train_verdicts import middle, verdicts
from common import (
    RESULTS,
    WORK,
    machine,
    matmul_peak,
    ratio,
    run_worker,
    serve_worker,
    shared_file,
    worker_arguments,
    write_result,
)

SCRIPT = Path(__file__).resolve()
# 5e-4: the LoRA paper's rate for RoBERTa-base on SST-2 (arXiv 2106.09685, table 9). At 2e-4 with a linear decay,
# 1,000 rows in 2 epochs left the baseline, tunelab and the plain loop near chance (0.51-0.54 accuracy on dev), and
# the accuracy check compared noise.
CLASSIFICATION_LR, CAUSAL_LR = 5e-4, 2e-4
# The tutorial's LoRA, given to tunelab too (``dense`` matches BERT's attention output, intermediate and output).
CLASSIFICATION_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["query", "key", "value", "dense"]}
CAUSAL_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}


# ---- the contestants (each runs in its own process) ----

def baseline_classification(spec: dict) -> dict:
    """The tutorial: pad everything to 128, Trainer defaults, PEFT LoRA on query/key/value/dense."""
    import numpy as np
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    set_seed(spec["seed"])  # before the model, as transformers' run_glue.py does: the seed draws the new head and LoRA
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])

    def tokenize(batch):
        return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=128)

    train = Dataset.from_list(read_jsonl(spec["train"])).map(tokenize, batched=True)
    dev = Dataset.from_list(read_jsonl(spec["dev"])).map(tokenize, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **CLASSIFICATION_LORA))
    args = TrainingArguments(output_dir=spec["dir"], per_device_train_batch_size=16, num_train_epochs=spec["epochs"],
                             learning_rate=spec["lr"], seed=spec["seed"], report_to="none")

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=train, compute_metrics=accuracy)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "metric": trainer.evaluate(dev)["eval_accuracy"]}


def plain_loop_classification(spec: dict) -> dict:
    """A straightforward PyTorch loop, what tunelab's own loop is set against: the tutorial's LoRA (torch's
    dropout, PEFT's input casts), AdamW at the same learning rate with the Trainer's default schedule (linear
    decay, no warm-up), batches of 16 length-sorted rows in a new order each epoch, and the threads, precision
    and weight dtypes tunelab's ``auto`` picks; no clipping, evaluation, logging or checkpoint."""
    import math
    import random

    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.machine import choose_device, set_threads, with_precision

    threads, bf16 = set_threads(None), with_precision(choose_device("auto")).bf16
    torch.manual_seed(spec["seed"])
    random.seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])

    def forward(batch: list):
        inputs = tokenizer.pad({"input_ids": [ids for ids, _ in batch]}, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(**inputs, labels=torch.tensor([label for _, label in batch]))

    # tunelab's weights: a bf16 frozen base where it computes in bf16, every trained weight in fp32
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=2,
                                                               dtype=torch.bfloat16 if bf16 else torch.float32)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **CLASSIFICATION_LORA))
    trained = [p for p in model.parameters() if p.requires_grad]
    for param in trained:
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(trained, lr=spec["lr"], weight_decay=0.0)
    train = sorted_batches(tokenizer, spec["train"])
    steps = max(1, math.ceil(spec["epochs"] * len(train)))  # as the Trainer counts a fractional epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        if step % len(train) == 0:
            random.shuffle(train)
        forward(train[step % len(train)]).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    model.eval()
    dev = sorted_batches(tokenizer, spec["dev"])
    with torch.inference_mode():
        right = sum(int((forward(b).logits.argmax(-1) == torch.tensor([label for _, label in b])).sum()) for b in dev)
    return {"train_seconds": seconds, "metric": right / sum(map(len, dev)), "threads": threads,
            "precision": "bf16" if bf16 else "fp32", "eval_seconds": 0.0,
            "flops_per_token": flops_per_token(spec["model"], causal=False)}


def sorted_batches(tokenizer, path: str, size: int = 16) -> list[list]:
    """The (token ids, label) pairs of a classification file, sorted by length, in batches of ``size``."""
    rows = read_jsonl(path)
    ids = tokenizer([r["text"] for r in rows], truncation=True, max_length=128)["input_ids"]
    ordered = sorted(zip(ids, (r["label"] for r in rows)), key=lambda pair: len(pair[0]))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def trl_causal(spec: dict) -> dict:
    """TRL's SFTTrainer with its defaults plus use_cpu=True (bf16 autocast, gradient checkpointing), PEFT LoRA."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=spec["dir"], num_train_epochs=spec["epochs"], learning_rate=spec["lr"],
                     per_device_train_batch_size=spec["batch_size"], max_length=spec["max_length"],
                     seed=spec["seed"], report_to="none", use_cpu=True)
    rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in read_jsonl(spec["conversations"])]
    trainer = SFTTrainer(model=spec["model"], args=args, train_dataset=Dataset.from_list(rows),
                         peft_config=LoraConfig(task_type="CAUSAL_LM", **CAUSAL_LORA))
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "metric": result.training_loss, "precision": "bf16" if args.bf16 else "fp32"}


def tunelab_run(spec: dict, method: str = "lora", checkpointing: bool = False) -> dict:
    """`tunelab train` with its defaults, apart from what every contestant shares."""
    from tunelab.config import from_dict
    from tunelab.rundir import read_json
    from tunelab.training import train

    causal = spec["case"] == "causal"
    tree = {"task": "causal_lm" if causal else "classification",
            "data": {"train": spec["train"], "validation": spec["dev"], "test": spec["dev"]},
            "method": {"name": method}, "lora": CAUSAL_LORA if causal else CLASSIFICATION_LORA,
            "train": {"epochs": spec["epochs"], "learning_rate": spec["lr"], "seed": spec["seed"]},
            "output": {"dir": spec["dir"], "overwrite": True}}
    if causal:  # TRL does not evaluate while training, so neither does tunelab here
        tree["model"] = {"name": spec["model"]}
        tree["data"].update(format="instruction", max_length=spec["max_length"])
        tree["train"].update(batch_size=spec["batch_size"], eval_strategy="no", gradient_checkpointing=checkpointing)
    run_dir = train.run(from_dict(tree, name=f"bench-{spec['case']}"))
    metrics = read_json(run_dir / "metrics.json")
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"train_seconds": metrics["train_seconds"],
            "metric": metrics["mean_train_loss"] if causal else metrics["eval"]["accuracy"],
            "threads": metrics["threads"], "precision": metrics["precision"]["used"],
            "eval_seconds": evaluations_while_training(log),
            "flops_per_token": flops_per_token(spec["model"], causal, full=method == "full"),
            "peak_rss_mb": metrics["peak_rss_mb"]}


def evaluations_while_training(log: list[dict]) -> float:
    """Seconds of the evaluations logged before the training call ended (the Trainer's summary entry, the one
    with ``total_flos``); the evaluation of the best checkpoint after it is not part of the call's time."""
    seconds = 0.0
    for entry in log:
        if "total_flos" in entry:
            break
        seconds += entry.get("eval_runtime", 0.0)
    return seconds


def tunelab_full(spec: dict) -> dict:
    return tunelab_run(spec, method="full")


def tunelab_lora_checkpointed(spec: dict) -> dict:
    return tunelab_run(spec, checkpointing=True)


def tunelab_full_checkpointed(spec: dict) -> dict:
    return tunelab_run(spec, method="full", checkpointing=True)


WORKERS = {"baseline": baseline_classification, "plain": plain_loop_classification, "trl": trl_causal,
           "tunelab": tunelab_run, "tunelab-full": tunelab_full,
           "tunelab-ckpt": tunelab_lora_checkpointed, "tunelab-full-ckpt": tunelab_full_checkpointed}
# One run each, after the timed contestants: what LoRA saves in memory, with and without checkpointing.
MEMORY_ROWS = {"tunelab full fine-tuning": "tunelab-full",
               "tunelab LoRA, gradient checkpointing": "tunelab-ckpt",
               "tunelab full fine-tuning, gradient checkpointing": "tunelab-full-ckpt"}


# ---- shared measurements ----

def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---- the cases ----

def classification_case(args, work: Path) -> dict:
    from transformers import AutoTokenizer

    from tunelab.models.resolve import resolve_model

    def rows(path: Path, limit: int | None) -> list[dict]:
        with path.open(encoding="utf-8") as f:
            found = [{"text": r["sentence"].strip(), "label": int(r["label"])} for r in csv.DictReader(f, delimiter="\t")]
        return found[:limit] if limit else found

    train = rows(Path(args.sst2) / "train.tsv", args.rows)
    dev = rows(Path(args.sst2) / "dev.tsv", 200 if args.quick else None)
    model = resolve_model("builtin:minilm")
    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = [len(ids) for ids in tokenizer([r["text"] for r in train], truncation=True, max_length=128)["input_ids"]]
    spec = {"case": "classification", "model": model, "epochs": args.epochs, "lr": CLASSIFICATION_LR,
            "train": write_jsonl(work / "sst2-train.jsonl", train),
            "dev": write_jsonl(work / "sst2-dev.jsonl", dev)}
    contestants = {"tutorial baseline (Trainer + PEFT, pad 128)": "baseline",
                   "plain PyTorch loop (length-sorted, no evaluation)": "plain", "tunelab defaults": "tunelab"}
    return measure_case(spec, contestants, lengths, "accuracy", work, args.repeats)


def causal_case(args, work: Path) -> dict:
    from transformers import AutoTokenizer

    from tunelab.data.builtin import support_instruction_splits
    from tunelab.data.tokenize import to_messages
    from tunelab.models.resolve import resolve_model

    model = resolve_model(args.causal_model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    splits = support_instruction_splits()
    pairs = splits["train"][: args.pairs]
    conversations = [to_messages(r) for r in pairs]
    lengths = [min(len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]), 256)
               for m in conversations]
    spec = {"case": "causal", "model": model, "epochs": 1, "lr": CAUSAL_LR, "batch_size": 8,
            "max_length": 256, "train": write_jsonl(work / "support-train.jsonl", pairs),
            "dev": write_jsonl(work / "support-dev.jsonl", splits["test"][:8]),
            "conversations": write_jsonl(work / "support-conversations.jsonl", conversations)}
    contestants = {"TRL SFTTrainer defaults (use_cpu=True)": "trl", "tunelab defaults": "tunelab"}
    result = measure_case(spec, contestants, lengths, "mean train loss", work, args.repeats)
    for label, worker in MEMORY_ROWS.items():
        row = measure_case(spec, {label: worker}, lengths, "mean train loss", work, 1)["rows"][0]
        row["speedup_samples"] = ratio(row["samples_per_second"], result["rows"][0]["samples_per_second"])
        result["rows"].append(row)
    return result


def measure_case(spec: dict, contestants: dict, lengths: list[int], metric: str, work: Path, repeats: int) -> dict:
    rows = []
    for label, worker in contestants.items():
        runs = []
        for seed in range(repeats):  # run k trains with seed k
            print(f"[{spec['case']}] {label}, run {seed + 1} of {repeats} (seed {seed}) ...", flush=True)
            runs.append(run_worker(SCRIPT, worker, {**spec, "seed": seed, "dir": str(work / f"{spec['case']}-{worker}")}))
        result = middle(runs, key=lambda r: r["train_seconds"])  # the median run
        seconds = result["train_seconds"]
        loop = seconds - result.get("eval_seconds", 0.0)  # the baselines do not evaluate while training
        row = {"contestant": label, "runs": len(runs), "train_seconds": round(seconds, 1),
               "train_seconds_all": [round(r["train_seconds"], 1) for r in runs],
               "samples_per_second": round(len(lengths) * spec["epochs"] / seconds, 2),
               "loop_samples_per_second": round(len(lengths) * spec["epochs"] / loop, 2),
               "tokens_per_second": round(sum(lengths) * spec["epochs"] / seconds, 1),
               "peak_rss_mb": middle([r["peak_rss_mb"] for r in runs]),
               "metric": round(middle([r["metric"] for r in runs]), 4),
               "metric_all": [round(r["metric"], 4) for r in runs], "precision": result.get("precision", "fp32")}
        if "flops_per_token" in result:  # tunelab and the plain loop: MFU over the loop, evaluations left out
            row.update(threads=result["threads"], eval_seconds=round(result["eval_seconds"], 1),
                       gflops=round(training_flops(result["flops_per_token"], lengths, spec["epochs"]) / loop / 1e9, 1))
        rows.append(row)
    base, ours = rows[0], rows[-1]  # the first contestant is the baseline, the last is tunelab
    for row in rows[1:]:
        row["speedup_samples"] = ratio(row["samples_per_second"], base["samples_per_second"])
    ours["speedup_loop_samples"] = ratio(ours["loop_samples_per_second"], base["loop_samples_per_second"])
    ours["speedup_tokens"] = ratio(ours["tokens_per_second"], base["tokens_per_second"])
    return {"metric": metric, "seeds": list(range(repeats)), "rows_trained": len(lengths), "epochs": spec["epochs"],
            "lr": spec["lr"], "mean_tokens": round(sum(lengths) / len(lengths), 1), "rows": rows}


def table(result: dict) -> str:
    from tunelab.tables import text_table

    parts = [", ".join(f"{name} matmul peak: {peak['gflops']} GFLOP/s ({peak['threads']} threads)"
                       for name, peak in result["matmul_peak"].items())]
    headers = ["case", "contestant", "s", "samples/s", "tokens/s", "peak RSS MiB", "metric", "vs baseline", "GFLOP/s"]
    rows = []
    for case, data in result["cases"].items():
        for r in data["rows"]:
            rows.append([case, r["contestant"], r["train_seconds"], r["samples_per_second"], r["tokens_per_second"],
                         r["peak_rss_mb"], f"{data['metric']} {r['metric']}", r.get("speedup_samples", 1),
                         r.get("gflops", "")])
    parts.append(text_table(headers, rows))
    parts.append(text_table(["target", "goal", "measured", "met"],
                            [[v["target"], v["goal"], v["measured"], "yes" if v["met"] else "NO"]
                             for v in result["verdicts"]]))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="classification,causal", help="comma-separated: classification, causal")
    parser.add_argument("--rows", type=int, default=1000, help="classification training rows (default 1000)")
    parser.add_argument("--epochs", type=float, default=2, help="classification epochs (default 2; causal runs 1)")
    parser.add_argument("--pairs", type=int, default=160, help="causal training pairs (default 160)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per contestant, run k with seed k; the median counts (default 3)")
    parser.add_argument("--sst2", default=None, help="folder with SST-2 train.tsv and dev.tsv (default ../shared/data/sst2)")
    parser.add_argument("--causal-model", default="builtin:smollm2-135m",
                        help="causal model (default builtin:smollm2-135m; a folder or hub id works too)")
    parser.add_argument("--quick", action="store_true",
                        help="200 rows, 1 epoch, 32 pairs, 1 run each, small eval sets: checks the script runs")
    parser.add_argument("--work", default=str(WORK / "train_throughput"), help="folder for data and runs")
    parser.add_argument("--out", default=None, help="folder for train_throughput.json (default benchmarks/results)")
    parser.add_argument("--keep-other-cases", action="store_true",
                        help="measure only --cases again and keep the other cases of the last train_throughput.json "
                             "(each case records its own date and matmul peaks)")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, WORKERS):
        return {}
    if args.quick:
        args.rows, args.epochs, args.pairs, args.repeats = min(args.rows, 200), 1, min(args.pairs, 32), 1
    args.sst2 = args.sst2 or str(shared_file("sst2"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS
    result = {"machine": machine(), "matmul_peak": {name: matmul_peak(dtype=name) for name in ("fp32", "bf16")},
              "cases": {}}
    cases = {"classification": classification_case, "causal": causal_case}
    wanted = args.cases.split(",")
    if args.keep_other_cases and (out / "train_throughput.json").exists():  # each case keeps its own date and peaks
        earlier = json.loads((out / "train_throughput.json").read_text(encoding="utf-8"))
        for name, case in earlier["cases"].items():
            if name not in wanted:
                result["cases"][name] = {"matmul_peak": earlier["matmul_peak"], "date": earlier["machine"]["date"],
                                         **case}
    for name in wanted:
        result["cases"][name] = {"matmul_peak": result["matmul_peak"], "date": result["machine"]["date"],
                                 **cases[name](args, work)}
    result["cases"] = {name: result["cases"][name] for name in cases if name in result["cases"]}
    result["verdicts"] = verdicts(result, checkpointed=tuple(MEMORY_ROWS)[1:])
    print(table(result))
    path = write_result("train_throughput", result, out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
