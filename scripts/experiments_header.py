"""The head of experiments.md: where and when it was measured, and the two configs every section uses."""

from __future__ import annotations


def header(results: dict, order: tuple[str, ...]) -> str:
    seconds = results.get("seconds", {})
    gpu = f"GPU: {results['gpu']}" if results.get("gpu") else "no GPU"
    return (f"# Experiments: what fine-tuning bought, measured\n\n"
            f"{provenance(results, order)} Machine: {results['machine']}, {results['cores']} cores, {gpu}, CPU flags "
            f"{', '.join(results.get('cpu_flags') or ['(none of those checked)'])}; {matmul_clause(results)}; torch "
            f"{results['versions'].get('torch')}, transformers {results['versions'].get('transformers')}, peft "
            f"{results['versions'].get('peft')}. The measurement took {sum(seconds.values()) / 60:.0f} minutes "
            f"({', '.join(f'{k} {v / 60:.0f}' for k, v in seconds.items())}). The script runs tunelab's own commands; "
            "the command behind each table is shown above it. Regenerate the page with `python scripts/experiments.py` "
            "(`--only SECTION` measures one section again, `--render-only` rewrites the page)."
            + missing_sentence(results, order) + "\n\n"
            f"**The chat model** (`{results['chat']['config']}`, called CHAT below): {describe(results['chat']['settings'])}."
            f"\n\n**The classifier** (`{results['classifier']['config']}`, called CLASSIFIER below): "
            f"{describe(results['classifier']['settings'])}{data_sentence(results['classifier'].get('data'))}.\n")


def matmul_clause(results: dict) -> str:
    """The header's matmul speeds, and the sections measured with them where an ``--only`` run measured them."""
    speeds, measured_with = results.get("matmul_gflops", {}), results.get("matmul_measured_with") or results["sections"]
    scope = "" if set(measured_with) >= set(results["sections"]) else f" in the run that measured {', '.join(measured_with)}"
    return (f"a layer-shaped matmul ran at {speeds.get('fp32_gflops', '?')} GFLOP/s in fp32 and "
            f"{speeds.get('bf16_gflops', '?')} in bf16{scope}")


def missing_sentence(results: dict, order: tuple[str, ...]) -> str:
    missing = [name for name in order if name not in results["sections"]]
    if not missing:
        return ""
    return (f" **Not measured yet:** {', '.join(missing)} (`python scripts/experiments.py --only "
            f"{','.join(missing)}` adds them).")


def provenance(results: dict, order: tuple[str, ...]) -> str:
    """Who measured what when: one sentence when every section came from one run, else one per section."""
    measured = {name: results.get("measured", {}).get(name, {"date": results["date"], "command": results["command"]})
                for name in order if name in results["sections"]}
    runs = {(m["date"], m["command"]) for m in measured.values()}
    if len(runs) <= 1:
        date, command = next(iter(runs), (results["date"], results["command"]))
        return f"Every number on this page was measured by `{command}` on {date}."
    return "Sections were measured by separate runs: " + "; ".join(
        f"{name} by `{m['command']}` on {m['date']}" for name, m in measured.items()) + "."


def describe(s: dict) -> str:
    return (f"`{s['model']['name']}` on `{s['data']['train']}` (test `{s['data']['test']}`); {s['method']['name']} "
            f"r={s['lora']['r']}, alpha={s['lora']['lora_alpha']:g}, dropout={s['lora']['lora_dropout']:g} on "
            f"{s['lora']['target_modules']}, {s['train']['epochs']:g} epoch(s), batch {s['train']['batch_size']}, learning "
            f"rate {s['train']['learning_rate']:g}, max length {s['data']['max_length']}, seed {s['train']['seed']}, "
            f"precision {s['train']['precision']}")


def data_sentence(data: dict | None) -> str:
    if not data:
        return ""
    return (f"; {data['labels']} labels, {data['train']:,} training, {data['validation']:,} validation and "
            f"{data['test']:,} test examples")
