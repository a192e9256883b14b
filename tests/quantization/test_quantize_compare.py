"""`tunelab quantize --compare`: the settings its measuring process uses, and how its report reads."""

from __future__ import annotations

import torch


def test_compare_times_each_variant_with_the_settings_its_report_states(causal_run, monkeypatch):
    """The measuring process reads only the run's config.yaml: quantize.timing_* given to --compare must
    reach it (they did not, so a compare with timing_repeats=1 still ran 2 + 10 calls per batch size)."""
    import subprocess

    from tunelab.evaluation import measure
    from tunelab.quantization import compare as quantize_compare
    from tunelab.quantization.quantize import with_overrides

    calls = []
    real_generate = measure.generate
    monkeypatch.setattr(measure, "generate", lambda *a, **k: calls.append(a) or real_generate(*a, **k))

    def in_process(command, **kwargs):  # [python, -m, tunelab.evaluation.measure, RUN, VARIANT, ...], run here
        measure.main(command[3:])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(quantize_compare.subprocess, "run", in_process)
    cfg = with_overrides(causal_run.cfg, ["quantize.timing_repeats=1", "quantize.timing_warmup=0"])
    threads = torch.get_num_threads()
    try:
        row = quantize_compare.measure_in_child(causal_run.run_dir, "adapter", "test", 2, 1, timing=cfg.quantize)
    finally:
        torch.set_num_threads(threads)
    assert "error" not in row and row["latency_ms"]["8"] > 0
    assert len(calls) == 1 + len(measure.BATCH_SIZES)  # the compared completions, then one timed call per size


def test_tradeoffs_name_the_fastest_smallest_and_slower_copies():
    from tunelab.quantization.compare import tradeoffs

    def row(variant, bs8, blocks_mb, agreement=1.0, change=0.0):
        return {"variant": variant, "latency_ms": {"1": bs8 / 4, "8": bs8}, "block_weights_mb": blocks_mb,
                "block_weights_ratio": blocks_mb / 40, "disk_mb": blocks_mb + 40, "metric": "accuracy",
                "metric_change": change, "agreement": agreement, "output_distance": 1 - agreement}

    report = {"reference": "merged", "rows": [row("merged", 90, 40), row("adapter", 117, 42), row("nf4", 120, 5, 1.0),
                                              row("dynamic-int8", 60, 10, 0.975, -0.02)]}
    lines = tradeoffs(report)
    assert lines[0].startswith("fastest at batch 8: dynamic-int8, 1.50x")
    assert lines[1].startswith("smallest: nf4") and lines[2].startswith("closest to fp32: nf4")
    assert lines[3] == "slower than fp32 on this machine: nf4 (it saves memory, not time, here)"
    assert tradeoffs({"reference": "merged", "rows": [row("merged", 90, 40)]}) == []


def test_a_dynamic_int8_copy_that_lost_much_quality_comes_with_the_setting_that_cures_it():
    from tunelab.quantization.compare import notes, quality_warnings, summary_text

    def report(metric, fp32, dynamic):
        rows = [{"variant": v, "metric": metric, "metric_value": value, "latency_ms": {"1": 1.0, "8": 2.0},
                 "block_weights_mb": 1.0, "disk_mb": 1.0, "weights_mb": 1.0, "peak_rss_mb": 1.0, "throughput": 1.0,
                 "throughput_unit": "x/s"} for v, value in (("merged", fp32), ("dynamic-int8", dynamic))]
        return {"run": "runs/r", "reference": "merged", "rows": rows, "task": "causal_lm", "split": "test",
                "machine": "cpu", "threads": 1, "timing": {"repeats": 1, "warmup": 0}}

    # SmolLM2-135M: perplexity 21 -> 65, because mlp.down_proj's inputs carry outliers.
    lost = report("perplexity", 21.2, 65.0)
    [warning] = quality_warnings(lost)
    assert "perplexity 65 vs 21.2" in warning
    assert ("tunelab quantize runs/r --method dynamic-int8 --compare "
            "\"quantize.keep_full_precision=['mlp\\.down_proj']\"") in warning
    assert summary_text(lost).endswith(warning) and notes(lost)[-1] == warning
    assert quality_warnings(report("perplexity", 21.2, 26.0)) == []
    assert quality_warnings(report("accuracy", 0.95, 0.90)) and quality_warnings(report("accuracy", 0.95, 0.94)) == []


def test_a_fastest_copy_that_breaks_the_quality_bar_is_followed_by_the_fastest_that_keeps_it():
    from tunelab.quantization.compare import tradeoffs

    def row(variant, bs8, perplexity):
        return {"variant": variant, "latency_ms": {"1": 1.0, "8": bs8}, "block_weights_mb": 10.0,
                "block_weights_ratio": 0.25, "disk_mb": 50.0, "metric": "perplexity", "metric_value": perplexity,
                "metric_change": perplexity - 2.25, "agreement": 0.5, "output_distance": 0.1}

    merged, broken = row("merged", 2574, 2.25), row("dynamic-int8", 1353, 14.95)
    lines = tradeoffs({"reference": "merged", "rows": [merged, broken, row("bf16", 1667, 2.254), row("nf4", 1958, 2.96)]})
    assert lines[0].startswith("fastest at batch 8: dynamic-int8, 1.90x")
    assert lines[1].startswith("fastest within the quality bar (perplexity at most 1.25x fp32's) at batch 8: bf16, 1.54x")
    lines = tradeoffs({"reference": "merged", "rows": [merged, broken, row("nf4", 1958, 2.96)]})
    assert lines[1] == "within the quality bar (perplexity at most 1.25x fp32's) at batch 8: no copy is faster than fp32"
    assert not any("quality bar" in line for line in tradeoffs({"reference": "merged", "rows": [merged, row("bf16", 1667, 2.254)]}))


def test_tradeoffs_let_a_bf16_cast_be_fastest_but_not_smallest():
    """The bf16 row is a cast at load: it has no folder, so it cannot be the smallest saved copy."""
    from tunelab.quantization.compare import tradeoffs

    def row(variant, bs8, blocks_mb, disk_mb):
        return {"variant": variant, "latency_ms": {"1": 1.0, "8": bs8}, "block_weights_mb": blocks_mb,
                "block_weights_ratio": blocks_mb / 40, "disk_mb": disk_mb, "metric": "perplexity",
                "metric_change": 0.1, "agreement": 0.9, "output_distance": 0.01}

    lines = tradeoffs({"reference": "merged", "rows": [row("merged", 90, 40, 80), row("bf16", 45, 20, None),
                                                       row("int8", 120, 25, 60)]})
    assert lines[0].startswith("fastest at batch 8: bf16, 2.00x") and lines[1].startswith("smallest: int8")
    assert tradeoffs({"reference": "merged", "rows": [row("merged", 90, 40, 80), row("bf16", 45, 20, None)]})[1] \
        .startswith("closest to fp32: bf16")


def test_the_bf16_row_follows_quantize_precision(monkeypatch):
    """auto adds it only where bf16 measures clearly faster; fp32 never; and the page says why."""
    from tunelab import machine
    from tunelab.quantization.compare import bf16_note

    monkeypatch.setattr(machine, "matmul_speeds", lambda: {"fp32_gflops": 130.0, "bf16_gflops": 0.6})
    slow = machine.with_precision(machine.choose_device("cpu"), "auto", "quantize.precision").precision
    assert slow["used"] == "fp32" and "No bf16 row" in bf16_note(slow)[0] and "0.6 GFLOP/s" in bf16_note(slow)[0]
    monkeypatch.setattr(machine, "matmul_speeds", lambda: {"fp32_gflops": 222.0, "bf16_gflops": 950.0})
    fast = machine.with_precision(machine.choose_device("cpu"), "auto", "quantize.precision").precision
    assert fast["used"] == "bf16" and bf16_note(fast)[0].startswith("`bf16`: the fp32 model")
    never = machine.with_precision(machine.choose_device("cpu"), "fp32", "quantize.precision").precision
    assert never["used"] == "fp32" and bf16_note(None) == []
