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
Generation: greedy tokens/s of the base model through tunelab.inference.generate (KV cache, left
padding, inference_mode) on the built-in test requests, at batch 1 and 8, median of --repeats.
Prints tables; writes benchmarks/results/llm.json.
"""

from __future__ import annotations

import argparse
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


def generation_worker(spec: dict) -> dict:
    from tunelab.config.load import from_dict
    from tunelab.data.builtin import BUILTIN_DATA_DIR
    from tunelab.data.tokenize import to_messages
    from tunelab.inference import LoadedRun, generate
    from tunelab.models.loading import load_base_model
    from tunelab.models.resolve import load_tokenizer
    from tunelab.rundir import read_jsonl

    cfg = from_dict({"task": "causal_lm", "model": {"name": MODEL},
                     "data": {"train": "builtin:support_instructions/train.jsonl", "format": "instruction"}},
                    name="llm-generation", source="benchmark")
    tokenizer = load_tokenizer(cfg.model)
    model = load_base_model(cfg, None, _cpu()).eval()
    loaded = LoadedRun(run_dir=Path(spec["dir"]), cfg=cfg, model=model, tokenizer=tokenizer, labels=None,
                       format="instruction")
    rows = read_jsonl(BUILTIN_DATA_DIR / "support_instructions" / "test.jsonl")
    prompts = [to_messages(row)[:-1] for row in rows]
    result = {}
    for batch in spec["batches"]:
        rates = []
        for repeat in range(spec["repeats"]):
            chosen = prompts[repeat * batch:(repeat + 1) * batch]
            started = time.perf_counter()
            ids = generate(loaded, chosen, spec["new_tokens"], batch, token_ids=True, min_new_tokens=spec["new_tokens"])
            rates.append(sum(len(i) for i in ids) / (time.perf_counter() - started))
        result[str(batch)] = round(statistics.median(rates), 1)
    return {"tokens_per_second": result}


def _cpu():
    from tunelab.machine import Device

    return Device("cpu", False, "cpu")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512", help="sequence lengths to train at (default 256,512)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per memory run (default 3)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"memory variants (default all: "
                                                                         f"{','.join(VARIANTS)})")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="generation repeats; the median is reported")
    parser.add_argument("--skip-generation", action="store_true", help="measure memory only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for llm.json")
    worker_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, {"memory": memory_worker, "generation": generation_worker}):
        return
    lengths = [int(x) for x in args.lengths.split(",")]
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
    if not args.skip_generation:
        spec = {"batches": [1, 8], "repeats": args.repeats, "new_tokens": args.new_tokens, "dir": str(WORK)}
        result["generation"] = run_worker(SCRIPT, "generation", spec)
        rates = result["generation"]["tokens_per_second"]
        print(markdown_table(["batch", "generated tokens/s"], [[b, r] for b, r in rates.items()]))
    print(f"wrote {write_result('llm', result, args.out)}")


if __name__ == "__main__":
    main()
