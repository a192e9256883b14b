"""The training benchmark's targets: each measured against its goal, met or missed and by how much; the
quality targets compare contestants seed by seed (`train_throughput.py` runs run k with seed k)."""

from __future__ import annotations


def middle(values: list, key=None):
    """The median element (the upper of the two middle ones for an even count), one rule for time and metric."""
    return sorted(values, key=key)[len(values) // 2]


def paired_change(base: dict, ours: dict, change) -> float:
    """``change(baseline's metric, tunelab's)``: the median over seeds of each seed's change where both rows ran
    the same seeds, else the change between their (single) metrics."""
    pairs = list(zip(base.get("metric_all", []), ours.get("metric_all", [])))
    if len(pairs) > 1 and len(base["metric_all"]) == len(ours["metric_all"]):
        return middle([change(b, o) for b, o in pairs])
    return change(base["metric"], ours["metric"])


def verdicts(result: dict, checkpointed: tuple[str, str]) -> list[dict]:
    """Each target of the performance goals: met or missed, and by how much. ``checkpointed``: the labels of
    the causal case's LoRA and full fine-tuning rows with gradient checkpointing."""
    found = []
    cls = result["cases"].get("classification")
    if cls:
        base, ours = cls["rows"][0], cls["rows"][-1]
        found.append(target("classification LoRA samples/s vs tutorial baseline", ours["speedup_samples"], 12.0, "x"))
        found.append(target("classification accuracy change (points, median over seeds)",
                            round(paired_change(base, ours, lambda b, o: 100 * (o - b)), 2), -1.0, " pt"))
        found.append(target("tunelab MFU (share of the matmul peak of the precision used)",
                            round(ours["gflops"] / cls.get("matmul_peak", result["matmul_peak"])[ours["precision"]]["gflops"],
                                  3), 0.40, ""))
    causal = result["cases"].get("causal")
    if causal:
        rows = {r["contestant"]: r for r in causal["rows"]}
        trl, ours = causal["rows"][0], rows["tunelab defaults"]
        full = rows["tunelab full fine-tuning"]
        found.append(target("SmolLM2 LoRA non-padding tokens/s vs TRL SFTTrainer", ours["speedup_tokens"], 2.0, "x"))
        found.append(target("SmolLM2 mean training loss vs TRL (relative, median over seeds)",
                            round(paired_change(trl, ours, lambda b, o: abs(o / b - 1)), 4), 0.02, "",
                            higher_is_better=False))
        found.append(target("SmolLM2 LoRA peak RSS vs TRL", round(ours["peak_rss_mb"] / trl["peak_rss_mb"], 2), 1.0, "x",
                            higher_is_better=False))
        found.append(target("SmolLM2 LoRA peak RSS vs full fine-tuning", round(ours["peak_rss_mb"] / full["peak_rss_mb"], 2),
                            0.6, "x", higher_is_better=False))
        lean, lean_full = (rows.get(label) for label in checkpointed)
        if lean and lean_full:
            found.append(target("SmolLM2 LoRA peak RSS vs full fine-tuning, both with gradient checkpointing",
                                round(lean["peak_rss_mb"] / lean_full["peak_rss_mb"], 2), 0.6, "x",
                                higher_is_better=False))
    return found


def target(name: str, value: float, goal: float, unit: str, higher_is_better: bool = True) -> dict:
    met = value >= goal if higher_is_better else value <= goal
    sign = ">=" if higher_is_better else "<="
    return {"target": name, "goal": f"{sign} {goal:g}{unit}", "measured": f"{value:g}{unit}", "met": met}
