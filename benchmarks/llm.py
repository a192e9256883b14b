"""A real LLM on a CPU: where LoRA's memory goes, and how fast it generates. SmolLM2-135M-Instruct.

    python benchmarks/llm.py [--lengths 256,512] [--steps 3] [--variants ...] [--skip-generation]

Memory: LoRA (r 8, all linear layers) on builtin:smollm2-135m at batch 8, with the built-in support
replies packed into sequences of exactly --lengths tokens, --steps optimizer steps, each variant in
its own process (peak RSS = VmHWM of that process, model loading included):
- ``model-loss``: the model's own loss (full-vocabulary logits at every position);
- ``labelled-loss``: tunelab's loss, projected only where labels are set (tunelab.models.causal_loss);
- ``labelled+return-memory``: and train.return_memory_to_os (glibc hands freed blocks back at once);
- ``labelled+checkpointing``: the labelled loss and train.gradient_checkpointing;
- ``labelled+checkpointing+return-memory``: all three.
Generation: greedy tokens/s (KV cache, left padding, inference_mode) on the built-in test requests, at
batch 1 and 8, median of --repeats after one warm-up round, for a 2-step LoRA run loaded four ways:
a bare ``model.generate`` loop on the adapter as trained (what PEFT + generate gives), the same loop on
the run as tunelab's evaluate and serve load it (adapter merged at load), tunelab.inference.generate
on that model, and tunelab on it in the precision ``auto`` picks on this CPU. The target: tunelab
within 10% of the bare loop on the same model. Prints tables; writes benchmarks/results/llm.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import RESULTS, WORK, machine, ratio, run_worker, serve_worker, worker_arguments, write_result

from tunelab.tables import markdown_table

SCRIPT = Path(__file__).resolve()
MODEL = "builtin:smollm2-135m"
VARIANTS = {
    "model-loss": {"labelled_loss": False, "overrides": []},
    "labelled-loss": {"labelled_loss": True, "overrides": []},
    "labelled+return-memory": {"labelled_loss": True, "overrides": ["train.return_memory_to_os=true"]},
    "labelled+checkpointing": {"labelled_loss": True, "overrides": ["train.gradient_checkpointing=true"]},
    "labelled+checkpointing+return-memory": {
        "labelled_loss": True, "overrides": ["train.gradient_checkpointing=true", "train.return_memory_to_os=true"]},
}
TARGETS_GB = {256: 2, 512: 3}  # decimal GB; peak RSS is measured in MiB
MIB_PER_GB = 1e9 / 2**20


def memory_worker(spec: dict) -> dict:
    from tunelab.config.load import from_dict
    from tunelab.rundir import read_json
    from tunelab.training import train

    if not spec["labelled_loss"]:
        train.labelled_loss = lambda cfg, model: None  # what training computed before tunelab.models.causal_loss
    tree = {"task": "causal_lm", "model": {"name": MODEL},
            "data": {"train": "builtin:support_instructions/train.jsonl", "format": "instruction",
                     "max_length": spec["length"], "packing": True},
            "method": {"name": "lora"}, "lora": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
            "train": {"batch_size": 8, "max_steps": spec["steps"], "eval_strategy": "no", "learning_rate": 2e-4},
            "output": {"dir": spec["dir"], "overwrite": True}}
    run_dir = train.run(from_dict(tree, spec["overrides"], name="llm-memory", source="benchmark"))
    metrics = read_json(run_dir / "metrics.json")
    return {"train_seconds": metrics["train_seconds"], "seconds_per_step": metrics["train_seconds"] / spec["steps"],
            "final_train_loss": metrics["final_train_loss"]}


GENERATION = {  # contestant -> (how the run is loaded, who calls generate)
    "bare generate, adapter unmerged (fp32)": ({"merge": False, "precision": "fp32"}, "bare"),
    "bare generate, merged (fp32)": ({"merge": True, "precision": "fp32"}, "bare"),
    "tunelab, merged (fp32)": ({"merge": True, "precision": "fp32"}, "tunelab"),
    "tunelab, merged (auto)": ({"merge": True, "precision": "auto"}, "tunelab"),
}


def generation_worker(spec: dict) -> dict:
    """Generated tokens/s of each GENERATION contestant at each batch size; the contestants take turns
    within each repeat, on the same prompts and in alternating order, so that the machine's drift hits
    them alike."""
    import torch

    from tunelab.config.load import from_dict
    from tunelab.data.builtin import BUILTIN_DATA_DIR
    from tunelab.data.tokenize import to_messages
    from tunelab.inference import generate, load_run, render_prompt
    from tunelab.machine import set_threads
    from tunelab.rundir import read_jsonl
    from tunelab.training import train

    tree = {"task": "causal_lm", "model": {"name": MODEL},
            "data": {"train": "builtin:support_instructions/train.jsonl", "format": "instruction"},
            "method": {"name": "lora"}, "lora": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
            "train": {"batch_size": 8, "max_steps": 2, "eval_strategy": "no", "precision": "fp32"},
            "output": {"dir": spec["dir"], "overwrite": True}}
    run_dir = train.run(from_dict(tree, name="llm-generation", source="benchmark"))
    set_threads(None)
    loaded = {name: load_run(run_dir, **how) for name, (how, _) in GENERATION.items()}
    rows = read_jsonl(BUILTIN_DATA_DIR / "support_instructions" / "test.jsonl")
    prompts = [to_messages(row)[:-1] for row in rows]
    new_tokens = spec["new_tokens"]

    def bare(run, chosen: list, batch: int) -> int:
        tokenizer, made = run.tokenizer, 0
        tokenizer.padding_side = "left"
        for start in range(0, len(chosen), batch):
            inputs = tokenizer([render_prompt(run, p) for p in chosen[start:start + batch]], padding=True,
                               add_special_tokens=False, return_tensors="pt")
            with torch.inference_mode():
                out = run.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
            made += out[:, inputs["input_ids"].shape[1]:].numel()
        return made

    def ours(run, chosen: list, batch: int) -> int:
        ids = generate(run, chosen, new_tokens, batch, token_ids=True, min_new_tokens=new_tokens)
        return sum(len(i) for i in ids)

    callers = {"bare": bare, "tunelab": ours}
    result = {"precision": {name: run.precision for name, run in loaded.items()}, "tokens_per_second": {}}
    for batch in spec["batches"]:
        rates: dict[str, list] = {name: [] for name in GENERATION}
        for repeat in range(spec["repeats"] + 1):  # the first round warms up
            chosen = [prompts[(repeat * batch + i) % len(prompts)] for i in range(batch)]
            turns = list(GENERATION.items())
            for name, (_, caller) in turns if repeat % 2 else turns[::-1]:  # alternate, so drift hits all alike
                started = time.perf_counter()
                made = callers[caller](loaded[name], chosen, batch)
                if repeat:
                    rates[name].append(made / (time.perf_counter() - started))
        result["tokens_per_second"][str(batch)] = {name: round(statistics.median(r), 1) for name, r in rates.items()}
    return result


def generation_verdicts(generation: dict) -> list[dict]:
    """tunelab's generate within 10% of a bare generate loop on the same merged fp32 model, per batch size."""
    found = []
    for batch, rates in generation["tokens_per_second"].items():
        share = rates["tunelab, merged (fp32)"] / rates["bare generate, merged (fp32)"]
        found.append({"target": f"SmolLM2 generation, batch {batch}: tunelab vs a bare generate loop (same model)",
                      "goal": ">= 0.9x", "measured": f"{share:.2f}x", "met": share >= 0.9})
    return found


def generation_table(generation: dict) -> str:
    """Tokens/s per contestant and batch, with each against the bare loop on the adapter as trained."""
    batches = list(generation["tokens_per_second"])
    first = "bare generate, adapter unmerged (fp32)"
    rows = [[name, generation["precision"][name]["used"],
             *[f"{generation['tokens_per_second'][b][name]:g} "
               f"({ratio(generation['tokens_per_second'][b][name], generation['tokens_per_second'][b][first]):g}x)"
               for b in batches]] for name in generation["tokens_per_second"][batches[0]]]
    return markdown_table(["contestant", "precision", *[f"batch {b}: tokens/s (x unmerged)" for b in batches]], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512", help="sequence lengths to train at (default 256,512)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per memory run (default 3)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"memory variants (default all: "
                                                                         f"{','.join(VARIANTS)})")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="generation repeats; the median is reported")
    parser.add_argument("--skip-generation", action="store_true", help="measure memory only")
    parser.add_argument("--skip-memory", action="store_true",
                        help="measure generation only; the memory results of the last llm.json are kept")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for llm.json")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, {"memory": memory_worker, "generation": generation_worker}):
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.skip_memory:
        measure_generation(args, json.loads((args.out / "llm.json").read_text(encoding="utf-8")))
        return
    memory = []
    for length in lengths:
        for name in args.variants.split(","):
            spec = {**VARIANTS[name], "length": length, "steps": args.steps, "dir": str(WORK / f"llm-{name}-{length}")}
            spec["overrides"] = list(spec["overrides"])
            result = run_worker(SCRIPT, "memory", spec)
            memory.append({"variant": name, "length": length, **result})
            print(f"{name} x{length}: peak {result['peak_rss_mb']:.0f} MiB, {result['seconds_per_step']:.1f} s/step",
                  flush=True)
    result = {"machine": machine(), "model": MODEL, "batch_size": 8, "steps": args.steps,
              "new_tokens": args.new_tokens, "memory": memory}
    result["verdicts"] = [
        {"target": f"peak RSS, LoRA batch 8 x {length}", "goal": f"<= {TARGETS_GB[length]} GB",
         "measured": f"{best['peak_rss_mb'] / MIB_PER_GB:.2f} GB ({best['variant']})",
         "met": best["peak_rss_mb"] / MIB_PER_GB <= TARGETS_GB[length]}
        for length in lengths if length in TARGETS_GB
        for best in [min((m for m in memory if m["length"] == length), key=lambda m: m["peak_rss_mb"])]]
    print(markdown_table(["variant", "length", "peak RSS MiB", "s/step", "vs model-loss RSS"],
                         [[m["variant"], m["length"], round(m["peak_rss_mb"]), round(m["seconds_per_step"], 1),
                           ratio(m["peak_rss_mb"], next((x["peak_rss_mb"] for x in memory if x["length"] == m["length"]
                                                         and x["variant"] == "model-loss"), float("nan")))]
                          for m in memory]))
    if args.skip_generation:
        print(f"wrote {write_result('llm', result, args.out)}")
    else:
        measure_generation(args, result)


def measure_generation(args: argparse.Namespace, result: dict) -> None:
    """Add the generation contestants' figures and verdicts to ``result`` and write it."""
    spec = {"batches": [1, 8], "repeats": args.repeats, "new_tokens": args.new_tokens,
            "dir": str(WORK / "llm-generation")}
    result["generation"] = run_worker(SCRIPT, "generation", spec)
    result["new_tokens"] = args.new_tokens
    result["verdicts"] = [v for v in result["verdicts"] if "generation" not in v["target"]]
    result["verdicts"] += generation_verdicts(result["generation"])
    print(generation_table(result["generation"]))
    print(f"wrote {write_result('llm', result, args.out)}")


if __name__ == "__main__":
    main()
