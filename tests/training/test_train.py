"""Training behaviour on tiny models: numbers that could fail."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import train_config
from tunelab.config import load_config
from tunelab.machine import Device
from tunelab.training import train
from tunelab.training.methods import METHODS, MethodContext, build_model

CPU = Device("cpu", False, "cpu")


def read_json(path):
    return json.loads(path.read_text())


def test_lora_run_folder_and_metrics(tmp_path, tiny_bert, capsys):
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"report_to": ["tensorboard"]})))
    progress = capsys.readouterr().err  # not a terminal here: one plain line per logging step
    assert "step 2/" in progress and "samples/s" in progress and "eta" in progress and "loss" in progress
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*")), "TensorBoard wrote no events"
    for name in ("COMPLETE", "config.yaml", "versions.json", "data_report.json", "labels.json", "metrics.json",
                 "train_log.jsonl", "README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "tokenizer/tokenizer.json"):
        assert (run_dir / name).exists(), name
    metrics = read_json(run_dir / "metrics.json")
    for key in ("train_seconds", "train_samples_per_second", "train_tokens_per_second", "peak_rss_mb",
                "trainable_params", "total_params", "artifact_size_mb", "final_train_loss"):
        assert metrics[key] > 0, key
    assert 0 <= metrics["best_eval_metric"] <= 1 and metrics["metric_for_best_model"] == "accuracy"
    assert metrics["trainable_params"] < metrics["total_params"] / 5
    versions = read_json(run_dir / "versions.json")
    assert versions["torch"] and versions["peft"] and "CPU" in versions["device"]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in log) and any("eval_accuracy" in entry for entry in log)


def test_the_final_evaluation_is_read_from_the_log_not_run_again(tmp_path, tiny_bert, monkeypatch):
    """Training loads the best checkpoint back at the end; its evaluation is already in the log, so
    metrics.json takes it from there instead of a further pass over the validation split."""
    from transformers import Trainer

    passes = []
    real = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: passes.append(1) or real(self, *a, **k))
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"epochs": 3, "eval_strategy": "epoch"})))
    metrics = read_json(run_dir / "metrics.json")
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    evaluations = [entry for entry in log if "eval_accuracy" in entry]
    assert len(passes) == len(evaluations) == 3  # one per epoch, none after training
    best_step = int(metrics["best_checkpoint"].rsplit("-", 1)[-1])
    best = next(entry for entry in evaluations if entry["step"] == best_step)
    assert metrics["eval"]["accuracy"] == best["eval_accuracy"] == metrics["best_eval_metric"]
    assert metrics["eval"]["loss"] == best["eval_loss"] and "step" not in metrics["eval"]


def test_only_adapter_and_head_train_and_the_base_stays_identical(tmp_path, tiny_bert):
    cfg = load_config(train_config(tmp_path, tiny_bert))
    model = build_model(MethodContext(cfg, ["alpha", "beta", "gamma"], CPU, total_steps=10))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert any("classifier" in n for n in trainable)

    run_dir = train.run(cfg)
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert all("lora_" in k or "classifier" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at zero
    base = load_file(tiny_bert / "model.safetensors")
    from tunelab.inference import load_run

    tuned = load_run(run_dir).model
    query = tuned.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.weight
    assert torch.equal(query, base["encoder.layer.0.attention.self.query.weight"])


def test_loss_falls_on_repeated_data(tmp_path, tiny_bert):
    # 12 epochs at 1e-2: the loss falls below 0.7x for every seed tried (at 3e-2 some seeds diverge).
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"epochs": 12, "learning_rate": 1e-2})))
    losses = [e["loss"] for e in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines()) if "loss" in e]
    assert losses[-1] < 0.7 * losses[0]


def first_step_gradients(tmp_path, model, batch, accumulation, monkeypatch, task="classification"):
    """Gradients of every trainable parameter just before the first optimizer step."""
    from transformers import TrainerCallback

    captured = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if not captured:
                captured.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    real_callbacks = train.callbacks
    monkeypatch.setattr(train, "callbacks", lambda *a: real_callbacks(*a) + [Capture()])
    cfg = load_config(train_config(tmp_path, model, task=task, train={"batch_size": batch, "gradient_accumulation_steps":
                                                           accumulation, "max_steps": 1, "eval_strategy": "no",
                                                           "max_grad_norm": 0, "precision": "fp32"}))
    train.run(cfg)
    monkeypatch.setattr(train, "callbacks", real_callbacks)
    return captured


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_gradient_accumulation_1x4_equals_4x1(tmp_path, tiny_bert, tiny_llama, monkeypatch, task):
    model = tiny_bert if task == "classification" else tiny_llama
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    one_by_four = first_step_gradients(tmp_path / "a", model, 4, 1, monkeypatch, task)
    four_by_one = first_step_gradients(tmp_path / "b", model, 1, 4, monkeypatch, task)
    assert one_by_four and one_by_four.keys() == four_by_one.keys()
    for key in one_by_four:
        scale = one_by_four[key].abs().max().item() + 1e-12
        assert torch.allclose(one_by_four[key], four_by_one[key], atol=1e-5 * scale, rtol=1e-4), key


class Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, tiny_bert, monkeypatch):
    from transformers import TrainerCallback

    (tmp_path / "full").mkdir(), (tmp_path / "resumed").mkdir()
    settings = {"train": {"epochs": 3, "eval_strategy": "no", "save_total_limit": 5}}
    uninterrupted = train.run(load_config(train_config(tmp_path / "full", tiny_bert, **settings)))
    expected = load_file(uninterrupted / "adapter" / "adapter_model.safetensors")

    class CrashAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Crash()

    real_callbacks = train.callbacks
    monkeypatch.setattr(train, "callbacks", lambda *a: real_callbacks(*a) + [CrashAfterFirstSave()])
    cfg = load_config(train_config(tmp_path / "resumed", tiny_bert, **settings))
    with pytest.raises(Crash):
        train.run(cfg)
    monkeypatch.setattr(train, "callbacks", real_callbacks)
    run_dir = tmp_path / "resumed" / "run"
    assert not (run_dir / "COMPLETE").exists() and (run_dir / "checkpoints").exists()
    with pytest.raises(Exception, match="interrupted run"):
        train.run(cfg)
    train.run(cfg, resume=True)
    resumed = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    for key in expected:
        assert torch.allclose(expected[key], resumed[key], atol=1e-5), key


def test_resume_refuses_a_changed_config(tmp_path, tiny_bert):
    cfg = load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 2, "eval_strategy": "no"}))
    train.run(cfg)
    (tmp_path / "run" / "COMPLETE").unlink()
    changed = load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 2, "eval_strategy": "no"}),
                          ["lora.r=2"])
    with pytest.raises(Exception, match=r"changed: lora.r \(4 -> 2\)"):
        train.run(changed, resume=True)


def test_merged_logits_equal_adapter_logits(tmp_path, tiny_bert):
    from transformers import AutoModelForSequenceClassification

    from tunelab.inference import load_run
    from tunelab.quantization import merge

    # init_lora_weights=false starts B random, so the adapter changes outputs even before training.
    cfg = load_config(train_config(tmp_path, tiny_bert, lora={"init_lora_weights": False},
                                   train={"max_steps": 2, "eval_strategy": "no"}))
    run_dir = train.run(cfg)
    merged_dir = merge.run(run_dir)
    loaded = load_run(run_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    batch = loaded.tokenizer(["alpha item 3", "gamma item 11 and more"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded.model(**batch).logits, merged(**batch).logits, atol=1e-5)
    assert merged.config.id2label[0] == "alpha"


def test_predict_is_stable_for_a_saved_run(tmp_path, tiny_bert, run_cli):
    # 12 epochs at 1e-2: the loss falls below 0.7x for every seed tried (at 3e-2 some seeds diverge).
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"epochs": 12, "learning_rate": 1e-2})))
    code, first, err = run_cli("predict", run_dir, "alpha item 3", "beta item 1")
    assert code == 0, err
    assert run_cli("predict", run_dir, "alpha item 3", "beta item 1")[1] == first
    assert first.splitlines()[0].startswith("alpha\t")
    out = tmp_path / "out.jsonl"
    (tmp_path / "in.jsonl").write_text('{"text": "gamma item 2"}\n"beta item 7"\n')
    assert run_cli("predict", run_dir, "--input", tmp_path / "in.jsonl", "--output", out)[0] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-4


def test_stages_refuse_incomplete_runs(tmp_path, tiny_bert, run_cli):
    cfg = load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 1, "eval_strategy": "no"}))
    run_dir = train.run(cfg)
    (run_dir / "COMPLETE").unlink()
    code, _, err = run_cli("predict", run_dir, "alpha")
    assert code == 2 and "incomplete" in err and "--resume" in err
    code, _, err = run_cli("merge", tmp_path / "nowhere")
    assert code == 2 and "not a tunelab run folder" in err


def test_causal_lm_lora_generates(tmp_path, tiny_llama, run_cli):
    run_dir = train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", train={"epochs": 1})))
    assert (run_dir / "adapter").exists() and not (run_dir / "labels.json").exists()
    code, out, err = run_cli("predict", run_dir, "Say alpha.", "Say beta.", "--max-new-tokens", "5")
    assert code == 0, err
    assert out.count("\n") == 2  # one completion line per prompt


def test_unknown_method_lists_valid_names(tmp_path, tiny_bert):
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(train_config(tmp_path, tiny_bert), ["method.name=lorax"])
    assert "'lora-8bit'" in caught.value.problems[0]
    assert set(METHODS) == {"full", "freeze", "lora", "dora", "rslora", "adalora", "qlora", "lora-8bit"}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "causal_lm"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_two_steps(tmp_path, tiny_bert, tiny_llama, task, method):
    if method in ("qlora", "lora-8bit"):
        pytest.importorskip("bitsandbytes", reason="quantized bases need bitsandbytes (pip install tunelab[quant])")
    model = tiny_bert if task == "classification" else tiny_llama
    cfg = load_config(train_config(tmp_path, model, task=task, method={"name": method},
                                   train={"max_steps": 2, "eval_strategy": "no"}))
    run_dir = train.run(cfg)
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["steps"] == 2 and metrics["method"] == method
    assert (run_dir / ("model" if method in ("full", "freeze") else "adapter")).exists()
    if method == "full":
        assert metrics["trainable_params"] == metrics["total_params"]
    else:
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
    if method in ("qlora", "lora-8bit"):
        from tunelab.errors import RunFolderError
        from tunelab.quantization import merge

        with pytest.raises(RunFolderError, match="--full-precision"):
            merge.run(run_dir)
        assert (merge.run(run_dir, full_precision=True) / "config.json").exists()


def test_freeze_trains_only_the_top_layers_and_head(tmp_path, tiny_llama):
    cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "freeze"}),
                      ["train.freeze_layers_trainable=1"])
    model = build_model(MethodContext(cfg, None, CPU, total_steps=10))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.layers.1.") for n in trainable)
    assert not any(n.startswith("model.layers.0.") or "embed_tokens" in n for n in trainable)
    assert "model.norm.weight" in trainable


def test_init_from_continues_an_existing_adapter(tmp_path, tiny_bert):
    (tmp_path / "first").mkdir(), (tmp_path / "second").mkdir()
    first = train.run(load_config(train_config(tmp_path / "first", tiny_bert, train={"max_steps": 3,
                                                                                      "eval_strategy": "no"})))
    cfg = load_config(train_config(tmp_path / "second", tiny_bert, method={"init_from": str(first / "adapter")},
                                   train={"max_steps": 1, "eval_strategy": "no", "learning_rate": 1e-9}))
    model = build_model(MethodContext(cfg, ["alpha", "beta", "gamma"], CPU, total_steps=1))
    start = load_file(first / "adapter" / "adapter_model.safetensors")
    loaded = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    key = next(k for k in start if k.endswith("query.lora_B.weight"))
    match = next(p for n, p in loaded.items() if n.replace(".default", "") == key)
    assert torch.equal(match.detach(), start[key]) and match.requires_grad


def test_cpu_never_uses_half_precision_and_threads_follow_the_config(tmp_path, tiny_bert):
    from tunelab.machine import choose_device, set_threads

    cfg = load_config(train_config(tmp_path, tiny_bert), ["train.device=cpu", "train.threads=1"])
    device = choose_device(cfg.train.device)
    assert device.type == "cpu" and device.bf16 is False
    before = torch.get_num_threads()
    try:
        assert set_threads(cfg.train.threads) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def logged(run_dir, key):
    """``(step, value)`` of every train_log.jsonl event that carries ``key``."""
    events = map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())
    return [(e["step"], e[key]) for e in events if key in e]


def scheduled_rate(scheduler, step, total, warmup, base):
    """The rate Hugging Face's schedules give the optimizer at ``step`` (1-based; logged with that step)."""
    done = step - 1  # scheduler steps taken before this optimizer step
    if scheduler != "constant" and done < warmup:
        return base * done / warmup
    progress = (done - warmup) / (total - warmup)
    return base * {"linear": 1 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress)),
                   "constant": 1.0, "constant_with_warmup": 1.0}[scheduler]


@pytest.mark.parametrize(("scheduler", "warmup_ratio"), [
    ("linear", 0.0), ("linear", 0.25), ("cosine", 0.0), ("constant", 0.0), ("constant_with_warmup", 0.25)])
def test_learning_rates_follow_the_schedule(tmp_path, tiny_llama, scheduler, warmup_ratio):
    steps, base = 8, 3e-2
    run_dir = train.run(load_config(train_config(tmp_path, tiny_llama, task="causal_lm", train={
        "max_steps": steps, "logging_steps": 1, "eval_strategy": "no", "learning_rate": base,
        "lr_scheduler": scheduler, "warmup_ratio": warmup_ratio})))
    found = logged(run_dir, "learning_rate")
    assert [step for step, _ in found] == list(range(1, steps + 1))
    rates = [rate for _, rate in found]
    warmup = math.ceil(warmup_ratio * steps)  # 2 steps at 0.25
    assert rates == pytest.approx([scheduled_rate(scheduler, s, steps, warmup, base) for s in range(1, steps + 1)],
                                  rel=1e-9, abs=1e-12)
    after = rates[warmup:]
    if warmup:  # rises from 0 to the full rate first
        assert rates[0] == 0 and rates[:warmup + 1] == sorted(rates[:warmup + 1]) and max(rates) == pytest.approx(base)
    if scheduler.startswith("constant"):
        assert after == pytest.approx([base] * len(after))
    else:  # decays towards 0: the last step runs at under a sixth of the top rate
        assert all(a > b for a, b in zip(after, after[1:])) and after[-1] < base / 6


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_gradient_checkpointing_recomputes_activations_and_keeps_the_losses(tmp_path, tiny_bert, tiny_llama,
                                                                            monkeypatch, task):
    from transformers import TrainerCallback

    model_path = tiny_bert if task == "classification" else tiny_llama
    real_callbacks = train.callbacks

    def train_watching_layer_0(checkpointing):
        seen = {"forwards": 0}

        class Watch(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                base = model.get_base_model()
                seen["enabled"] = (base.is_activation_checkpointing if hasattr(type(base), "is_activation_checkpointing")
                                   else base.is_gradient_checkpointing)  # transformers < 5
                # A pre-hook on the layer's first block: the recompute may stop early, once the backward pass has
                # every tensor it needs, before a later block's forward (and its forward hook) finishes.
                first = ("layers.0.self_attn", "layer.0.attention")  # Llama, BERT
                block = next(m for n, m in base.named_modules() if n.endswith(first))
                block.register_forward_pre_hook(lambda *_: seen.update(forwards=seen["forwards"] + 1))

            def on_train_end(self, args, state, control, **kwargs):
                seen["during_training"] = seen["forwards"]

        monkeypatch.setattr(train, "callbacks", lambda *a: real_callbacks(*a) + [Watch()])
        folder = tmp_path / f"checkpointing-{checkpointing}"
        folder.mkdir()
        run_dir = train.run(load_config(train_config(folder, model_path, task=task, train={
            "max_steps": 2, "logging_steps": 1, "eval_strategy": "no", "gradient_checkpointing": checkpointing})))
        return seen, [loss for _, loss in logged(run_dir, "loss")]

    plain, plain_losses = train_watching_layer_0(False)
    checkpointed, checkpointed_losses = train_watching_layer_0(True)
    assert plain["enabled"] is False and checkpointed["enabled"] is True
    # one forward per step (one batch each); with checkpointing the backward pass runs it once more
    assert plain["during_training"] == 2 and checkpointed["during_training"] == 4
    # recomputing the activations changes memory, not the arithmetic
    assert len(plain_losses) == 2 and checkpointed_losses == pytest.approx(plain_losses, rel=1e-5)


def test_step_evaluation_random_order_and_weight_decay_reach_the_trainer(tmp_path, tiny_bert):
    from tunelab.rundir import RunDir
    from tunelab.training.train import training_arguments

    options = {"max_steps": 4, "group_by_length": False, "eval_strategy": "steps", "eval_steps": 2,
               "weight_decay": 0.01, "lr_scheduler": "cosine"}
    cfg = load_config(train_config(tmp_path, tiny_bert, train=options))
    args = training_arguments(cfg, RunDir(tmp_path / "run"), CPU, has_eval=True)
    assert args.train_sampling_strategy == "random" and args.weight_decay == 0.01
    assert args.lr_scheduler_type == "cosine" and args.eval_strategy == "steps" and args.eval_steps == 2
    run_dir = train.run(cfg)
    # evaluated (and saved) every 2 steps; the kept checkpoint's evaluation is read from the log, not rerun
    assert [step for step, _ in logged(run_dir, "eval_accuracy")] == [2, 4]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert read_json(run_dir / "metrics.json")["steps"] == 4


def test_early_stopping_stops_when_validation_stops_improving(tmp_path, tiny_bert):
    cfg = load_config(train_config(tmp_path, tiny_bert, train={
        "epochs": 20, "learning_rate": 1e-12, "early_stopping_patience": 1, "eval_strategy": "epoch",
        "metric_for_best_model": "loss"}))
    metrics = read_json(train.run(cfg) / "metrics.json")
    assert metrics["epochs"] <= 3  # no improvement after the first evaluation -> stop after the next one


def test_adalora_reallocates_ranks_on_the_real_step_schedule(tmp_path, tiny_llama):
    cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": "adalora"},
                                   train={"epochs": 10, "eval_strategy": "no"}))
    run_dir = train.run(cfg)
    config = read_json(run_dir / "adapter" / "adapter_config.json")
    steps = read_json(run_dir / "metrics.json")["steps"]
    assert config["total_step"] == steps and config["target_r"] == 4 and config["init_r"] == 6
    ranks = [sum(mask) for mask in config["rank_pattern"].values()]
    assert min(ranks) < 6  # importance-based pruning happened


def test_adalora_keeps_the_models_own_loss_which_carries_its_orthogonal_regularisation(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM

    from tunelab.training.train import labelled_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    chosen = {}
    for name in ("lora", "adalora"):
        cfg = load_config(train_config(tmp_path, tiny_llama, task="causal_lm", method={"name": name}))
        chosen[name] = labelled_loss(cfg, model)
    assert chosen["lora"] is not None and chosen["adalora"] is None


def test_overwriting_a_run_removes_what_the_old_run_left(tmp_path, tiny_bert):
    cfg = load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 1, "eval_strategy": "no"}))
    run_dir = train.run(cfg)
    (run_dir / "eval.json").write_text("{}")
    with pytest.raises(Exception, match="holds a finished run"):
        train.run(cfg)
    again = load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 1, "eval_strategy": "no"}),
                        ["output.overwrite=true"])
    train.run(again)
    assert (run_dir / "COMPLETE").exists() and not (run_dir / "eval.json").exists()


def test_a_run_started_before_the_serve_section_existed_can_still_resume():
    from tunelab.config import from_dict
    from tunelab.training.train import _changed_keys

    cfg = from_dict({"task": "classification", "data": {"train": "x.jsonl"}}).model_dump(mode="json")
    older = {key: value for key, value in cfg.items() if key != "serve"}  # a train_state.json from before
    assert _changed_keys(older, cfg) == []
    served = {**cfg, "serve": {**cfg["serve"], "port": 9000}, "quantize": {**cfg["quantize"], "group_size": 32}}
    assert _changed_keys(cfg, served) == []
    tuned = {**cfg, "lora": {**cfg["lora"], "r": cfg["lora"]["r"] * 2}}
    assert _changed_keys(cfg, tuned) == [f"lora.r ({cfg['lora']['r']} -> {cfg['lora']['r'] * 2})"]
