"""Training progress: every evaluation result shown once, the one after training labelled; progress.json
says where training stands."""

import io
import json
import re
from types import SimpleNamespace

from transformers import TrainerControl, TrainerState

from conftest import train_config
from tunelab.config import load_config
from tunelab.training import train
from tunelab.rundir import RunDir
from tunelab.training.callbacks import ProgressCallback, ProgressFileCallback

EVALS = {4: {"eval_loss": 1.093, "eval_accuracy": 0.25}, 8: {"eval_loss": 1.064, "eval_accuracy": 0.5},
         12: {"eval_loss": 1.084, "eval_accuracy": 0.5}}


def replay(best_step: int | None, final: dict, load_best: bool = True) -> list[str]:
    """Feed the callback what the Trainer logs for 12 steps with an evaluation every 4, then the
    evaluation of the kept checkpoint after training; return the printed lines."""
    stream = io.StringIO()
    progress = ProgressCallback(samples_per_step=8, stream=stream)
    args, control = SimpleNamespace(load_best_model_at_end=load_best), TrainerControl()
    state = TrainerState(max_steps=12)
    progress.on_train_begin(args, state, control)
    for step in range(2, 13, 2):
        state.global_step, state.epoch = step, step / 4
        progress.on_log(args, state, control, logs={"loss": 1.1, "learning_rate": 0.01})
        if step in EVALS:
            progress.on_log(args, state, control, logs={**EVALS[step], "eval_runtime": 0.01})
    state.best_model_checkpoint = f"run/checkpoints/checkpoint-{best_step}" if best_step else None
    progress.on_log(args, state, control, logs={"train_loss": 1.13, "train_runtime": 0.3})
    progress.on_train_end(args, state, control)
    progress.on_log(args, state, control, logs={**final, "eval_runtime": 0.01, "epoch": 3.0})
    return stream.getvalue().splitlines()


def lines_with(lines: list[str], figures: dict) -> list[str]:
    wanted = "  ".join(f"{k} {v:.4g}" for k, v in figures.items())
    return [line for line in lines if wanted in line]


def test_best_checkpoint_at_the_last_step_is_not_printed_again():
    lines = replay(best_step=12, final=EVALS[12])
    assert len(lines_with(lines, EVALS[12])) == 1
    assert len([line for line in lines if "eval_loss" in line]) == 3


def test_best_checkpoint_earlier_is_named_without_repeating_its_figures():
    lines = replay(best_step=8, final=EVALS[8])
    assert len(lines_with(lines, EVALS[8])) == 1
    assert lines[-1] == "kept the best checkpoint: step 8 (its evaluation is printed above)"
    assert not any(line.startswith("step 12/12") and "eval_loss 1.064" in line for line in lines)


def test_a_new_result_after_training_is_labelled_as_the_final_evaluation():
    final = {"eval_loss": 1.05, "eval_accuracy": 0.5}
    lines = replay(best_step=8, final=final)
    assert lines_with(lines, final) == [lines[-1]]
    assert lines[-1].startswith("final evaluation of the best checkpoint (step 8)")
    assert "samples/s" not in lines[-1] and "eta" not in lines[-1]


def test_without_a_best_checkpoint_the_final_model_is_meant():
    assert len(lines_with(replay(best_step=None, final=EVALS[12], load_best=False), EVALS[12])) == 1
    lines = replay(best_step=None, final={"eval_loss": 1.0}, load_best=False)
    assert lines[-1].startswith("final evaluation of the final model (step 12)")


def test_checkpoint_step():
    from tunelab.training.callbacks import checkpoint_step

    assert checkpoint_step("runs/x/checkpoints/checkpoint-120") == 120
    assert checkpoint_step("runs/x/somewhere") is None


def test_training_prints_each_evaluation_once(tmp_path, tiny_bert, capsys):
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"epochs": 3})))
    progress = json.loads(RunDir(run_dir).progress_path.read_text())
    assert progress["phase"] == "trained" and progress["step"] == progress["total_steps"] > 0
    assert progress["eta_seconds"] == 0 and progress["samples_per_second"] > 0
    lines = capsys.readouterr().err.splitlines()
    shown = [line for line in lines if "eval_loss" in line]
    figures = [re.search(r"(eval_loss .*?)(  [\d.]+ samples/s|$)", line).group(1) for line in shown]
    assert len(figures) >= 3  # one evaluation per epoch, and the one after training if it differs
    assert len(set(figures)) == len(figures)
    assert all(line.startswith(("step ", "final evaluation of the best checkpoint")) for line in shown)


def test_the_progress_file_says_where_training_stands_and_is_always_whole(tmp_path, monkeypatch):
    import tunelab.training.callbacks as callbacks

    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])
    path = tmp_path / "progress.json"
    progress = ProgressFileCallback(path, samples_per_step=8, every=1.0)
    args, control, state = SimpleNamespace(), TrainerControl(), TrainerState(max_steps=10)
    progress.on_train_begin(args, state, control)
    assert json.loads(path.read_text()) | {"updated": 0} == {
        "phase": "training", "step": 0, "total_steps": 10, "epoch": 0.0, "samples_per_second": 0.0,
        "eta_seconds": None, "elapsed_seconds": 0.0, "updated": 0}
    clock[0], state.global_step, state.epoch = 102.0, 4, 0.4
    progress.on_step_end(args, state, control)
    now = json.loads(path.read_text())
    assert (now["step"], now["samples_per_second"], now["eta_seconds"]) == (4, 16.0, 3.0)  # 32 samples in 2 s
    clock[0], state.global_step = 102.5, 5
    progress.on_step_end(args, state, control)  # within a second of the last write: not rewritten
    assert json.loads(path.read_text())["step"] == 4
    clock[0], state.global_step = 105.0, 10
    progress.on_train_end(args, state, control)
    assert json.loads(path.read_text())["phase"] == "trained" and [p.name for p in tmp_path.iterdir()] == ["progress.json"]
