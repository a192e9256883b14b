"""Training throughput: tunelab's defaults against the code users would write instead, side by side.

    python benchmarks/train_throughput.py [--cases classification,causal] [--rows 2000] [--quick]

Same data, model, epochs, learning rate and seed for every contestant; each runs in its own process.

classification: the first --rows rows of SST-2 (../shared/data/sst2/train.tsv), accuracy on dev.tsv,
  MiniLM (all-MiniLM-L6-v2), LoRA r=8, 3 epochs, learning rate 2e-4.
  (a) tutorial baseline: HF Trainer + PEFT LoRA as the PEFT tutorials write it (PEFT's default target
      modules, lora_dropout 0.1), every example padded to max_length 128, batch 16, everything else
      at its default. The learning rate is tunelab's (the Trainer's 5e-5 would leave LoRA undertrained
      and make the accuracy comparison meaningless).
  (c) tunelab: `tunelab train` with its defaults (LoRA on all linear layers, dynamic padding,
      length-grouped batches, measured thread count, evaluation and best checkpoint every epoch).
causal: Dolly open QA (../shared/data/dolly_open_qa), rows of at most 256 tokens, a tiny Llama-style
  model (random init), full fine-tuning, batch 8 (TRL's default), learning rate 1e-3, 1 epoch;
  eval loss (mean token NLL) computed the same way for both on held-out rows.
  (b) TRL SFTTrainer with its defaults, in fp32 (its default bf16=True refuses to start on a CPU);
      its default gradient checkpointing stays on, and a third row turns it off to show its share.
  (c) tunelab with its defaults.

Samples/s and non-padding tokens/s are over the whole training call (tunelab's evaluations during
training included). Model FLOPs utilisation (MFU) counts only non-padding tokens, over the training
loop (the time of those evaluations, from train_log.jsonl, left out). Per token, a matmul weight
costs 2 FLOPs forward and 2 backward for the input gradient, plus 2 more when it is trained (its
weight gradient): 4 N_frozen + 6 N_trained, where N counts weights applied per token (embedding
lookups and per-sequence heads left out). Attention adds 12 L d T per token in a T-token sequence
(QK^T and AV, 4 L d T forward, twice that backward). MFU = achieved FLOP/s / the fp32 matmul peak
measured at the start of the same run. Prints a table; writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

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
CLASSIFICATION_LR, CAUSAL_LR = 2e-4, 1e-3


# ---- the contestants (each runs in its own process) ----

def baseline_classification(spec: dict) -> dict:
    """The tutorial: pad everything to 128, Trainer defaults, PEFT defaults."""
    import numpy as np
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])

    def tokenize(batch):
        return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=128)

    train = Dataset.from_list(read_jsonl(spec["train"])).map(tokenize, batched=True)
    dev = Dataset.from_list(read_jsonl(spec["dev"])).map(tokenize, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1))
    args = TrainingArguments(output_dir=spec["dir"], per_device_train_batch_size=16, num_train_epochs=spec["epochs"],
                             learning_rate=spec["lr"], seed=spec["seed"], report_to="none")

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=train, compute_metrics=accuracy)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "metric": trainer.evaluate(dev)["eval_accuracy"]}


def trl_causal(spec: dict, **changes) -> dict:
    """TRL's SFTTrainer with its defaults (batch 8, padding per batch, gradient checkpointing, per-step
    token metrics), in fp32: its default bf16=True refuses to start on a CPU."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=spec["dir"], num_train_epochs=spec["epochs"], learning_rate=spec["lr"],
                     per_device_train_batch_size=spec["batch_size"], max_length=spec["max_length"],
                     seed=spec["seed"], report_to="none", bf16=False, **changes)
    trainer = SFTTrainer(model=spec["model"], args=args, train_dataset=Dataset.from_list(read_jsonl(spec["train"])))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(Path(spec["dir"]) / "final"))
    return {"train_seconds": seconds, "metric": eval_loss(Path(spec["dir"]) / "final", spec)}


def tunelab_run(spec: dict) -> dict:
    """`tunelab train` with its defaults, apart from what every contestant shares."""
    from tunelab.config import from_dict
    from tunelab.rundir import read_json
    from tunelab.training import train

    causal = spec["case"] == "causal"
    tree = {"task": "causal_lm" if causal else "classification",
            "data": {"train": spec["train"], "validation": spec["dev"], "test": spec["dev"]},
            "train": {"epochs": spec["epochs"], "learning_rate": spec["lr"], "seed": spec["seed"]},
            "output": {"dir": spec["dir"], "overwrite": True}}
    if causal:
        tree["model"] = {"name": spec["model"]}
        tree["method"] = {"name": "full"}
        tree["data"].update(format="text", max_length=spec["max_length"])
        tree["train"]["batch_size"] = spec["batch_size"]
    run_dir = train.run(from_dict(tree, name=f"bench-{spec['case']}"))
    metrics = read_json(run_dir / "metrics.json")
    metric = eval_loss(run_dir / "model", spec) if causal else metrics["eval"]["accuracy"]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"train_seconds": metrics["train_seconds"], "metric": metric, "threads": metrics["threads"],
            "eval_seconds": sum(entry.get("eval_runtime", 0.0) for entry in log),
            "flops_per_token": flops_per_token(spec["model"], causal), "peak_rss_mb": metrics["peak_rss_mb"]}


def trl_causal_no_checkpointing(spec: dict) -> dict:
    """TRL as above with gradient checkpointing off: shows how much of the gap that default alone makes."""
    return trl_causal(spec, gradient_checkpointing=False)


WORKERS = {"baseline": baseline_classification, "trl": trl_causal, "trl-no-ckpt": trl_causal_no_checkpointing,
           "tunelab": tunelab_run}


# ---- shared measurements ----

def eval_loss(model_dir: Path, spec: dict) -> float:
    """Mean next-token NLL over the held-out rows (each text + EOS, at most max_length tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for row in read_jsonl(spec["dev"]):
            ids = causal_ids(tokenizer, row["text"])[: spec["max_length"]]
            logits = model(torch.tensor([ids])).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
            count += len(ids) - 1
    return total / count


def causal_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def flops_per_token(model_path: str, full: bool, rank: int = 8) -> dict:
    """Matmul FLOPs per token (see the module docstring) for tunelab's method on this model."""
    import torch.nn as nn
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    model = (AutoModelForCausalLM if full else AutoModel).from_pretrained(model_path)
    per_token = [m for name, m in model.named_modules()
                 if isinstance(m, nn.Linear) and not any(k in name for k in ("pooler", "classifier", "score"))]
    weights = sum(m.in_features * m.out_features for m in per_token)
    if full:
        linear = 6 * weights
    else:  # LoRA r on every linear layer: frozen weights plus trained A (r x in) and B (out x r)
        linear = 4 * weights + 6 * sum(rank * (m.in_features + m.out_features) for m in per_token)
    return {"linear": linear, "attention_per_position": 12 * config.num_hidden_layers * config.hidden_size,
            "matmul_weights": weights}


def training_flops(flops: dict, lengths: list[int], epochs: float) -> float:
    return epochs * sum(flops["linear"] * n + flops["attention_per_position"] * n * n for n in lengths)


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
            "seed": 0, "train": write_jsonl(work / "sst2-train.jsonl", train),
            "dev": write_jsonl(work / "sst2-dev.jsonl", dev)}
    contestants = {"tutorial baseline (Trainer + PEFT, pad 128)": "baseline", "tunelab defaults": "tunelab"}
    return measure_case(spec, contestants, lengths, "accuracy", work)


def causal_case(args, work: Path) -> dict:
    from transformers import AutoTokenizer

    from tunelab.models.tiny import make_tiny_model

    model = str(make_tiny_model("llama", work / "tiny-llama-256", hidden=256, layers=4, heads=4))
    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [r["text"] for r in read_jsonl(str(Path(args.dolly) / "chinkara-open_qa.jsonl"))]
    short = [t for t in texts if len(causal_ids(tokenizer, t)) <= 256]  # nobody truncates or chunks
    n_dev = 50 if args.quick else 200
    train, dev = short[: args.rows], short[args.rows: args.rows + n_dev]
    lengths = [len(causal_ids(tokenizer, t)) for t in train]
    spec = {"case": "causal", "model": model, "epochs": 1, "lr": CAUSAL_LR, "seed": 0, "batch_size": 8,
            "max_length": 256, "train": write_jsonl(work / "dolly-train.jsonl", [{"text": t} for t in train]),
            "dev": write_jsonl(work / "dolly-dev.jsonl", [{"text": t} for t in dev])}
    contestants = {"TRL SFTTrainer defaults": "trl", "TRL, gradient checkpointing off": "trl-no-ckpt",
                   "tunelab defaults": "tunelab"}
    return measure_case(spec, contestants, lengths, "eval loss", work)


def measure_case(spec: dict, contestants: dict, lengths: list[int], metric: str, work: Path) -> dict:
    rows = []
    for label, worker in contestants.items():
        print(f"[{spec['case']}] {label} ...", flush=True)
        result = run_worker(SCRIPT, worker, {**spec, "dir": str(work / f"{spec['case']}-{worker}")})
        seconds = result["train_seconds"]
        loop = seconds - result.get("eval_seconds", 0.0)  # the baselines do not evaluate while training
        row = {"contestant": label, "train_seconds": round(seconds, 1),
               "samples_per_second": round(len(lengths) * spec["epochs"] / seconds, 2),
               "loop_samples_per_second": round(len(lengths) * spec["epochs"] / loop, 2),
               "tokens_per_second": round(sum(lengths) * spec["epochs"] / seconds, 1),
               "peak_rss_mb": result["peak_rss_mb"], "metric": round(result["metric"], 4)}
        if "flops_per_token" in result:  # tunelab: MFU over the training loop, its evaluations left out
            row.update(threads=result["threads"], eval_seconds=round(result["eval_seconds"], 1),
                       gflops=round(training_flops(result["flops_per_token"], lengths, spec["epochs"]) / loop / 1e9, 1))
        rows.append(row)
    base, ours = rows[0], rows[-1]  # the first contestant is the baseline, the last is tunelab
    for row in rows[1:-1]:
        row["speedup_samples"] = ratio(row["samples_per_second"], base["samples_per_second"])
    ours["speedup_samples"] = ratio(ours["samples_per_second"], base["samples_per_second"])
    ours["speedup_loop_samples"] = ratio(ours["loop_samples_per_second"], base["loop_samples_per_second"])
    ours["speedup_tokens"] = ratio(ours["tokens_per_second"], base["tokens_per_second"])
    return {"metric": metric, "rows_trained": len(lengths), "epochs": spec["epochs"], "lr": spec["lr"],
            "mean_tokens": round(sum(lengths) / len(lengths), 1), "rows": rows}


def verdicts(result: dict) -> list[dict]:
    """Each target of the performance goals: met or missed, and by how much."""
    found = []
    cls = result["cases"].get("classification")
    if cls:
        base, ours = cls["rows"][0], cls["rows"][-1]
        found.append(target("classification LoRA samples/s vs tutorial baseline", ours["speedup_samples"], 10.0, "x"))
        found.append(target("the same, training loop only (tunelab's per-epoch evaluations left out)",
                            ours["speedup_loop_samples"], 10.0, "x"))
        found.append(target("classification accuracy change (points)", round(100 * (ours["metric"] - base["metric"]), 2),
                            -1.0, " pt"))
        found.append(target("tunelab MFU (share of the matmul peak)",
                            round(ours["gflops"] / result["matmul_peak"]["gflops"], 3), 0.40, ""))
    causal = result["cases"].get("causal")
    if causal:
        base, ours = causal["rows"][0], causal["rows"][-1]
        found.append(target("causal LM non-padding tokens/s vs TRL SFTTrainer", ours["speedup_tokens"], 1.5, "x"))
        found.append(target("causal LM eval loss vs TRL (relative)",
                            round(ours["metric"] / base["metric"] - 1, 4), 0.02, "", higher_is_better=False))
    return found


def target(name: str, value: float, goal: float, unit: str, higher_is_better: bool = True) -> dict:
    met = value >= goal if higher_is_better else value <= goal
    sign = ">=" if higher_is_better else "<="
    return {"target": name, "goal": f"{sign} {goal:g}{unit}", "measured": f"{value:g}{unit}", "met": met}


def table(result: dict) -> str:
    from tunelab.tables import text_table

    parts = [f"fp32 matmul peak: {result['matmul_peak']['gflops']} GFLOP/s "
             f"({result['matmul_peak']['threads']} threads, best of sizes {list(result['matmul_peak']['per_size'])})"]
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
    parser.add_argument("--rows", type=int, default=2000, help="training rows per case (default 2000)")
    parser.add_argument("--epochs", type=float, default=3, help="classification epochs (default 3; causal runs 1)")
    parser.add_argument("--sst2", default=None, help="folder with SST-2 train.tsv and dev.tsv (default ../shared/data/sst2)")
    parser.add_argument("--dolly", default=None, help="folder with chinkara-open_qa.jsonl (default ../shared/data/dolly_open_qa)")
    parser.add_argument("--quick", action="store_true", help="200 rows, 1 epoch, small eval sets: checks the script runs")
    parser.add_argument("--work", default=str(WORK / "train_throughput"), help="folder for data and runs")
    parser.add_argument("--out", default=None, help="folder for train_throughput.json (default benchmarks/results)")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, WORKERS):
        return {}
    if args.quick:
        args.rows, args.epochs = min(args.rows, 200), 1
    args.sst2 = args.sst2 or str(shared_file("sst2"))
    args.dolly = args.dolly or str(shared_file("dolly_open_qa"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "matmul_peak": matmul_peak(), "cases": {}}
    cases = {"classification": classification_case, "causal": causal_case}
    for name in args.cases.split(","):
        result["cases"][name] = cases[name](args, work)
    result["verdicts"] = verdicts(result)
    print(table(result))
    path = write_result("train_throughput", result, Path(args.out) if args.out else RESULTS)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
