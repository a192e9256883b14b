"""What a finished training run leaves behind: weights, metrics.json and a README.md summary."""

from __future__ import annotations

import shutil
from pathlib import Path

from tunelab.config.schema import TunelabConfig
from tunelab.models.resolve import public_name
from tunelab.rundir import RunDir, folder_size_mb, model_card_path, read_json, write_json
from tunelab.training.callbacks import checkpoint_step
from tunelab.training.model_card import model_card


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; PEFT counts 4-bit weights at their unpacked size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_outputs(run: RunDir, cfg: TunelabConfig, trainer, tokenizer, measured: dict, peft: bool) -> dict:
    """Save the trained weights and metrics.json; return the metrics."""
    import torch

    model = trainer.model
    artifact = run.adapter_dir if peft else run.model_dir
    eval_metrics = final_eval_metrics(trainer)
    save_weights(trainer, artifact)
    if not trainer.is_world_process_zero():
        return {}
    tokenizer.save_pretrained(run.tokenizer_dir)
    trainable, total = count_parameters(model)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        **measured,
        "method": cfg.method.name,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "artifact": artifact.name,
        "artifact_size_mb": round(folder_size_mb(artifact), 3),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 4),
        "final_train_loss": losses[-1] if losses else measured["mean_train_loss"],
        "best_eval_metric": trainer.state.best_metric,
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None,
        "eval": {k.removeprefix("eval_"): v for k, v in eval_metrics.items()},
    }
    if torch.cuda.is_available():
        metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_json(run.metrics_path, metrics)
    run.readme_path.write_text(run_readme(run, cfg, metrics), encoding="utf-8")
    describe_artifact(run, artifact, cfg, metrics, tokenizer)
    return metrics


def final_eval_metrics(trainer) -> dict:
    """The evaluation of the weights training ends with: the log's entry for them when training already
    evaluated them (the best checkpoint, loaded back at the end, or the last step), else a new pass, in
    which every process takes part. Evaluating them again would cost a whole pass for the same numbers."""
    if trainer.eval_dataset is None:
        return {}
    best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    step = checkpoint_step(best) if best else trainer.state.global_step
    logged = [entry for entry in trainer.state.log_history if "eval_loss" in entry and entry.get("step") == step]
    if logged:
        return {key: value for key, value in logged[-1].items() if key != "step"}
    return trainer.evaluate()


def describe_artifact(run: RunDir, artifact: Path, cfg: TunelabConfig, metrics: dict, tokenizer) -> None:
    """Make ``artifact`` load on its own with plain PEFT/transformers: its tokenizer (so that
    ``pipeline(model=RUN/model)`` works), the label names beside an adapter (a full model's config.json
    has them already), and a model card instead of PEFT's template. Written after ``artifact_size_mb``
    was measured, which counts the weights and their config only."""
    tokenizer.save_pretrained(artifact)
    if metrics["artifact"] == "adapter":
        name_the_base(run.adapter_config_path, public_name(cfg.model.name))
    labels = run.labels() if cfg.task == "classification" else None
    if labels and metrics["artifact"] == "adapter":
        shutil.copyfile(run.labels_path, artifact / run.labels_path.name)
    card = model_card(cfg, metrics, read_json(run.data_report_path), labels)
    model_card_path(artifact).write_text(card, encoding="utf-8")


def name_the_base(adapter_config: Path, name: str) -> None:
    """Record the base as others load it (a built-in's hub id, or the user's folder or hub id).

    PEFT records the folder the base was loaded from, for a built-in a path inside tunelab's
    installation. It is only rewritten in the finished adapter: while training, PEFT looks the base
    up by that name on every save, which must not reach for the hub.
    """
    config = read_json(adapter_config)
    config["base_model_name_or_path"] = name
    write_json(adapter_config, config)


def save_weights(trainer, artifact: Path) -> None:
    """The trained weights (adapter or whole model), written once, by the main process.

    Under DeepSpeed ZeRO-3 each process holds a slice of the weights; the Trainer gathers them,
    which every process has to join.
    """
    if trainer.is_deepspeed_enabled:
        trainer.save_model(str(artifact))
        if trainer.is_world_process_zero():
            (artifact / "training_args.bin").unlink(missing_ok=True)  # a pickle nobody needs next to the weights
    elif trainer.is_world_process_zero():
        trainer.model.save_pretrained(artifact)


def run_readme(run: RunDir, cfg: TunelabConfig, m: dict) -> str:
    """A short human summary of the run and how to use it."""
    load = (f"PeftModel.from_pretrained(base, \"{run.adapter_dir}\")" if m["artifact"] == "adapter"
            else f"AutoModel*.from_pretrained(\"{run.model_dir}\")")
    evaluated = ", ".join(f"{k} {v:.4g}" for k, v in m["eval"].items() if isinstance(v, float)) or "not evaluated"
    return f"""# {cfg.output.name}

{cfg.task} run: `{cfg.model.name}` fine-tuned with `{cfg.method.name}` on `{cfg.data.train}`.

| | |
| --- | --- |
| trainable parameters | {m['trainable_params']:,} of {m['total_params']:,} ({m['trainable_percent']:.2f}%) |
| steps / epochs | {m['steps']} / {m['epochs']} |
| train time | {m['train_seconds']:.1f} s ({m['train_samples_per_second']:.1f} samples/s, {m['train_tokens_per_second']:.0f} tokens/s) |
| peak memory (RSS) | {m['peak_rss_mb']:.0f} MiB |
| final train loss | {m['final_train_loss']:.4f} |
| validation (best checkpoint) | {evaluated} |
| artifact | `{m['artifact']}/` ({m['artifact_size_mb']:.2f} MiB) |
| device | {m['device']} |

Files: `config.yaml` (resolved config), `versions.json`, `data_report.json`, `metrics.json`,
`train_log.jsonl`, `tokenizer/`, `{m['artifact']}/`, `checkpoints/`, `tensorboard/`.

Use it: `tunelab predict {run} "some text"`, `tunelab merge {run}`, or in Python
`{load}`.
"""
