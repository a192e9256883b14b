"""Stage 2, train: prepared data + method -> a trained adapter (or model) in a complete run folder.

    tunelab train configs/support-intents-lora.yaml [train.epochs=2 ...] [--resume]

setup (prepare data, pick device and threads, build the model through the method registry)
-> run (Hugging Face Trainer: dynamic padding, accumulation, schedule, eval, early stopping,
best checkpoint) -> save (adapter/ or model/, metrics.json, versions.json, README.md, then
COMPLETE last, so a crash never leaves a run that looks finished).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

from tunelab.config.schema import TunelabConfig
from tunelab.data import prepare
from tunelab.data.collate import PadCollator, attend_within_examples
from tunelab.errors import RunFolderError, TrainingInterrupted
from tunelab.machine import Device, choose_device, peak_rss_mb, return_memory_to_os, set_threads, with_precision, world
from tunelab.models.causal_loss import LabelledLoss, supported
from tunelab.models.kbit import describe_kept, kept_full_precision
from tunelab.models.loading import align_pad_token, hide_tied_keys_report, silence_known_warnings
from tunelab.models.resolve import model_source
from tunelab.rundir import RunDir, make_readable, read_json, versions, write_json
from tunelab.training import distributed
from tunelab.training.methods import METHODS, MethodContext, build_model
from tunelab.training.outputs import save_outputs


def run(cfg: TunelabConfig, resume: bool = False, echo: Callable[[str], None] | None = None) -> Path:
    """Train as the config says; return the complete run folder. ``echo`` receives the data summary."""
    run = RunDir(cfg.output.dir)
    device = choose_device(cfg.train.device)
    distributed.check(cfg, device.type)
    if resume:
        check_resumable(run, cfg)
    else:
        if run.checkpoints_dir.exists() and not run.complete_marker.exists() and not cfg.output.overwrite:
            raise RunFolderError(f"{run}: holds an interrupted run; continue it with --resume, or set "
                                 "output.overwrite=true to start over")
        with distributed.main_first(device.type) as main:
            if main:  # the other processes wait, then read what it prepared
                start_fresh(run, cfg, echo)
    return train_in(run, cfg, device, resume)


def check_launchable(cfg: TunelabConfig) -> None:
    """What ``run`` would refuse, checked once before several processes start (each would print it)."""
    from tunelab.data.examples import load_examples
    from tunelab.models.resolve import resolve_model

    distributed.check(cfg, choose_device(cfg.train.device).type)
    resolve_model(cfg.model.name, cfg.model.allow_pickle_weights)
    load_examples(cfg)


def start_fresh(run: RunDir, cfg: TunelabConfig, echo: Callable[[str], None] | None) -> None:
    """Prepare the data and clear what an earlier training run left."""
    prepare.run(cfg)
    if echo:
        from tunelab.data.report import summary_text

        echo(summary_text(run.data_report()))
    for path in run.training_outputs():
        _remove(path)
    write_json(run.train_state_path, {"config": cfg.model_dump(mode="json"), "config_hash": config_hash(cfg),
                                      "data_hash": run.data_report()["data_hash"]})


def train_in(run: RunDir, cfg: TunelabConfig, device: Device, resume: bool) -> Path:
    import warnings

    import datasets
    from transformers import AutoTokenizer, Trainer, set_seed

    from tunelab.training.callbacks import StopOnSignal, trim_log

    silence_known_warnings()
    if cfg.method.name == "adalora":
        # AdaLoRA prunes some modules to rank 0 by design; PEFT mistakes that for unsaved shards.
        warnings.filterwarnings("ignore", message=".*LoRA tensor\\(s\\) have invalid shape.*")
    data = datasets.load_from_disk(str(run.tokenized_dir))
    labels = run.labels() if cfg.task == "classification" else None
    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer_dir)
    threads = set_threads(cfg.train.threads)
    # measured with the threads training will use; several processes then agree on one precision
    device = distributed.shared_precision(with_precision(device, cfg.train.precision))
    if cfg.train.return_memory_to_os:
        return_memory_to_os()
    set_seed(cfg.train.seed)
    model = trainable_model(cfg, MethodContext(cfg, labels, device, planned_steps(cfg, len(data["train"]))),
                            tokenizer)
    kept = kept_full_precision(model)
    if kept and world().is_main:
        print(f"tunelab: {describe_kept(kept)}", file=sys.stderr, flush=True)

    has_eval = cfg.train.eval_strategy != "no" and len(data["validation"]) > 0
    stopper = StopOnSignal()
    trainer = Trainer(
        model=model, args=training_arguments(cfg, run, device, has_eval),
        train_dataset=data["train"], eval_dataset=by_length(data["validation"]) if has_eval else None,
        data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer,
        compute_metrics=_classification_metrics() if cfg.task == "classification" else None,
        compute_loss_func=labelled_loss(cfg, model), callbacks=callbacks(cfg, run, has_eval) + [stopper])
    _replace_printer(trainer)
    if cfg.task == "classification":
        # Sequence classifiers take **kwargs but return a per-batch mean loss that ignores
        # num_items_in_batch; told otherwise, the Trainer skips dividing by the accumulation
        # steps and gradients come out N times too large (caught by the 1x4 == 4x1 test).
        trainer.model_accepts_loss_kwargs = False

    checkpoint = _last_checkpoint(run) if resume else None
    if checkpoint and world().is_main:
        trim_log(run.train_log_path, int(Path(checkpoint).name.rsplit("-", 1)[1]))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - started
    if stopper.received is not None:
        raise interrupted(run, stopper.received, trainer.state.global_step)
    processes = trainer.args.world_size
    measured = {
        "processes": processes,
        "distributed": engine_used(trainer, cfg),
        "global_batch": cfg.train.batch_size * cfg.train.gradient_accumulation_steps * processes,
        "train_seconds": round(train_seconds, 3),
        "train_samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 3),
        "train_tokens_per_second": round(trainer.state.num_input_tokens_seen / max(result.metrics["train_runtime"], 1e-9), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "mean_train_loss": round(result.training_loss, 6),
        "threads": threads,
        "device": device.description,
        "precision": device.precision,
        "full_precision_layers": kept,
    }
    save_outputs(run, cfg, trainer, tokenizer, measured, peft=METHODS[cfg.method.name].saves_adapter)
    if trainer.is_world_process_zero():
        write_json(run.versions_path, {**versions(), "device": device.description, "threads": threads,
                                               "processes": processes,
                                               "model_source": model_source(cfg.model)})
        make_readable(run.root)
        run.complete_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    return run.root


def trainable_model(cfg: TunelabConfig, ctx: MethodContext, tokenizer):
    """The method's model, ready for the Trainer: the pad token set, packed examples kept apart,
    activation checkpointing on if asked."""
    model = build_model(ctx)
    align_pad_token(model, tokenizer)
    hide_tied_keys_report(model)
    if cfg.data.packing:
        attend_within_examples(model)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def labelled_loss(cfg: TunelabConfig, model) -> LabelledLoss | None:
    """For causal LMs, the loss computed only where labels are set (``causal_loss``), when it is exact
    for this model and engine and the method does not need the model's own (``Method.model_loss``: AdaLoRA);
    None keeps the model's own loss."""
    engine = cfg.train.distributed if world().size > 1 else "none"
    if cfg.task != "causal_lm" or METHODS[cfg.method.name].model_loss or not supported(model, engine):
        return None
    loss = LabelledLoss(model)
    loss.attach(model)
    return loss


def engine_used(trainer, cfg: TunelabConfig) -> str:
    """What actually shared the work, as the Trainer reports it (not only what the config asked for)."""
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return cfg.train.distributed
    return "ddp" if trainer.args.world_size > 1 else "none"


def interrupted(run: RunDir, signum: int, step: int) -> TrainingInterrupted:
    """The error for a run stopped by a signal: where its checkpoint is and how to go on."""
    import signal

    name = signal.Signals(signum).name
    return TrainingInterrupted(
        f"{name} at step {step}: saved {run.checkpoints_dir / f'checkpoint-{step}'}; the run is not marked "
        "complete; continue it with --resume", exit_code=128 + signum)


def by_length(split):
    """The split ordered by length, so evaluation batches carry little padding (metrics ignore order)."""
    lengths = [len(ids) for ids in split["input_ids"]]
    return split.select(sorted(range(len(lengths)), key=lengths.__getitem__))


def enable_checkpointing(model) -> None:
    """Recompute activations in the backward pass (transformers >= 5.x renamed the API)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(base, "enable_input_require_grads"):
        base.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph


def training_arguments(cfg: TunelabConfig, run: RunDir, device: Device, has_eval: bool):
    """The Trainer's arguments, from the config (Hugging Face names on the right)."""
    import os

    from transformers import TrainingArguments

    t = cfg.train
    strategy = t.eval_strategy if has_eval else "no"
    best_metric = t.metric_for_best_model or ("accuracy" if cfg.task == "classification" else "loss")
    report_to = [r for r in t.report_to if r != "none"]
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.tensorboard_dir)
    return TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=cfg.eval.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler, max_grad_norm=t.max_grad_norm if t.max_grad_norm > 0 else 0.0,
        seed=t.seed, data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        eval_strategy=strategy, eval_steps=t.eval_steps,
        save_strategy="steps" if strategy == "steps" else "epoch", save_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_eval, metric_for_best_model=best_metric if has_eval else None,
        greater_is_better=not best_metric.endswith("loss") if has_eval else None,
        logging_steps=t.logging_steps, report_to=report_to or "none", disable_tqdm=True,
        use_cpu=device.type == "cpu", bf16=device.bf16,
        include_num_input_tokens_seen="non_padding", prediction_loss_only=cfg.task != "classification",
        remove_unused_columns=False, dataloader_num_workers=0, **distributed.training_arguments(cfg),
    )


def callbacks(cfg: TunelabConfig, run: RunDir, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback

    from tunelab.training.callbacks import AdaLoraCallback, JsonlLogCallback, ProgressCallback, ProgressFileCallback

    where = world()
    samples = cfg.train.batch_size * cfg.train.gradient_accumulation_steps * where.size
    found = [JsonlLogCallback(run.train_log_path)]
    if where.is_main:  # one progress line per step, not one per process
        found[:0] = [ProgressCallback(samples), ProgressFileCallback(run.progress_path, samples)]
    if cfg.method.name == "adalora":
        found.append(AdaLoraCallback())
    if has_eval and cfg.train.early_stopping_patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    return found


def _replace_printer(trainer) -> None:
    """Our ProgressCallback prints progress; drop the Trainer's raw dict printer."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _classification_metrics():
    """The Trainer's ``compute_metrics`` for classification (accuracy and macro-F1 from eval logits)."""
    # Imported here: sklearn takes over a second to import and only classification runs need it.
    from tunelab.training.trainer_metrics import classification_metrics

    return classification_metrics


# Config sections only later stages read; a run folder written before a section existed lacks it.
LATER_STAGES = ("quantize", "quantization", "serve")


def planned_steps(cfg: TunelabConfig, train_rows: int) -> int:
    """Optimizer steps the run will take (each step takes batch_size x accumulation x processes rows)."""
    if cfg.train.max_steps:
        return cfg.train.max_steps
    global_batch = cfg.train.batch_size * cfg.train.gradient_accumulation_steps * world().size
    per_epoch = math.ceil(train_rows / global_batch)
    return max(1, math.ceil(per_epoch * cfg.train.epochs))


def config_hash(cfg: TunelabConfig) -> str:
    """Hash of every setting that changes what training computes (not `output.*`, `quantize.*`, `serve.*`)."""
    tree = cfg.model_dump(mode="json")
    for section in ("output", *LATER_STAGES):
        tree.pop(section, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def check_resumable(run: RunDir, cfg: TunelabConfig) -> None:
    """Refuse to resume a finished run, a run with no checkpoint, or one whose config or data changed."""
    from tunelab.data.examples import load_examples

    if run.complete_marker.exists():
        raise RunFolderError(f"{run}: this run already finished; nothing to resume")
    if not run.train_state_path.exists() or _last_checkpoint(run) is None:
        raise RunFolderError(f"{run}: no checkpoint to resume from; start the run without --resume")
    state = read_json(run.train_state_path)
    changed = _changed_keys(state["config"], cfg.model_dump(mode="json"))
    if changed:
        raise RunFolderError([f"{run}: the config changed since the run started, so resuming would mix two "
                              "runs; changed: " + ", ".join(changed),
                              "undo the changes, or start a new run (another output.dir, or output.overwrite=true)"])
    if prepare.data_hash(load_examples(cfg)) != state["data_hash"]:
        raise RunFolderError(f"{run}: the training data changed since the run started (data hash differs); "
                             "restore it, or start a new run")


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in LATER_STAGES:
            continue  # read only by quantize and serve: changing them does not change what training computes
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b and f"{prefix}{key}" != "output.overwrite":
            keys.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return keys


def _last_checkpoint(run: RunDir) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = run.checkpoints_dir
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
