"""The model card (``README.md``) written into a run's ``adapter/`` or ``model/`` folder.

What the hub and PEFT show for a model: YAML front matter (library, base model, pipeline) and what
someone who finds only this folder needs: the base, the data, the method and its settings, the
validation scores, the label names, the command that made it, and how to load it without tunelab.
"""

from __future__ import annotations

from tunelab import __version__
from tunelab.config.schema import TunelabConfig
from tunelab.models.resolve import is_hub_id, model_source, public_name

PIPELINES = {"classification": "text-classification", "causal_lm": "text-generation"}


def model_card(cfg: TunelabConfig, metrics: dict, data_report: dict, labels: list[str] | None) -> str:
    """The card's Markdown for a finished run (``metrics`` as in metrics.json)."""
    base = public_name(cfg.model.name)
    adapter = metrics["artifact"] == "adapter"
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}"]
    front += [f"base_model: {base}"] if is_hub_id(base) else []  # the hub's field names a repository
    front += [f"pipeline_tag: {PIPELINES[cfg.task]}", "tags:", "- tunelab", f"- {cfg.method.name}", "---"]
    rows = [("base model", f"`{base}`"), ("weights", source_text(model_source(cfg.model))),
            ("method", method_text(cfg)), ("data", data_text(data_report)),
            ("training", f"{metrics['epochs']:g} epoch(s), {metrics['steps']} steps, batch {cfg.train.batch_size} "
                         f"x {cfg.train.gradient_accumulation_steps} accumulation, learning rate "
                         f"{cfg.train.learning_rate:g}, seed {cfg.train.seed}"),
            ("trainable parameters", f"{metrics['trainable_params']:,} of {metrics['total_params']:,} "
                                     f"({metrics['trainable_percent']:.2f}%)"),
            ("validation (best checkpoint)", scores_text(metrics.get("eval") or {})),
            ("final training loss", f"{metrics['final_train_loss']:.4f}")]
    if labels:
        rows.append(("labels (id order)", ", ".join(f"`{name}`" for name in labels)))
    table = "\n".join(["| | |", "| --- | --- |"] + [f"| {key} | {value} |" for key, value in rows])
    return "\n".join(front) + f"""

# {cfg.output.name}: {cfg.method.name} fine-tune of {base}

A {cfg.task.replace('_', ' ')} model trained with tunelab {__version__}.

{table}

## How it was made

```bash
tunelab train config.yaml
```

`config.yaml` (in the run folder above this one) is the resolved config: every setting, defaults
included. `data_report.json` beside it holds the data's SHA-256 hashes and split counts.

## Load it

{load_text(cfg, base, adapter, labels)}
"""


def method_text(cfg: TunelabConfig) -> str:
    lora = cfg.lora
    if cfg.method.name in ("full", "freeze"):
        return cfg.method.name
    return (f"{cfg.method.name} (r {lora.r}, lora_alpha {lora.lora_alpha:g}, lora_dropout {lora.lora_dropout:g}, "
            f"target_modules {lora.target_modules})")


def source_text(source: dict) -> str:
    """Where the base weights came from and their license (``models.model_source``)."""
    origin = source.get("obtained_from") or source.get("hub_id") or source["name"]
    parts = [f"`{source['name']}`" + (f" from {origin}" if origin != source["name"] else "")]
    parts += [f"SHA-256 `{source['sha256'][:16]}`"] if source.get("sha256") else []
    parts += [source["note"]] if source.get("note") else []
    return "; ".join(parts) + f"; license: {source.get('license') or 'not recorded, see the base model'}"


def data_text(report: dict) -> str:
    sources = "; ".join(f"{split}: `{source['spec']}` ({source['rows_read']:,} rows)"
                        for split, source in report["sources"].items())
    used = ", ".join(f"{split} {report['splits'][split]['examples']:,}" for split in ("train", "validation", "test"))
    return f"{sources}; examples used: {used}; data hash `{report['data_hash'][:12]}`"


def scores_text(scores: dict) -> str:
    shown = [f"{name} {value:.4g}" for name, value in scores.items()
             if isinstance(value, float) and not name.endswith(("runtime", "per_second"))]
    return ", ".join(shown) or "not evaluated during training"


def load_text(cfg: TunelabConfig, base: str, adapter: bool, labels: list[str] | None) -> str:
    """How to load the folder with transformers (and PEFT), as a Markdown code block."""
    if not adapter:
        return ("This folder is a complete model with its tokenizer:\n\n```python\nfrom transformers import "
                f"pipeline\n\nrun = pipeline(\"{PIPELINES[cfg.task]}\", model=\"path/to/this/folder\")\n```")
    auto = "AutoModelForSequenceClassification" if labels else "AutoModelForCausalLM"
    lines = ["import json", ""] if labels else []
    lines += ["from peft import PeftModel", f"from transformers import {auto}, AutoTokenizer", "",
              'adapter = "path/to/this/folder"']
    if labels:
        lines += ['label2id = json.load(open(f"{adapter}/labels.json"))["label2id"]  # the label names and ids',
                  f'base = {auto}.from_pretrained("{base}", num_labels=len(label2id), label2id=label2id,',
                  '    id2label={i: name for name, i in label2id.items()})']
    else:
        lines.append(f'base = {auto}.from_pretrained("{base}")')
    lines += ["model = PeftModel.from_pretrained(base, adapter)", "tokenizer = AutoTokenizer.from_pretrained(adapter)"]
    what = "The adapter, its tokenizer" + (" and its label names" if labels else "")
    return f"{what} are in this folder:\n\n```python\n" + "\n".join(lines) + "\n```"
