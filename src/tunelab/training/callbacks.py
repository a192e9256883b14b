"""Trainer callbacks: progress a person can read, a progress file a program can, a JSONL log, AdaLoRA's
rank budget."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

# What a person watching training wants to see; train_log.jsonl keeps everything.
SHOWN = ("loss", "grad_norm", "learning_rate", "eval_loss", "eval_accuracy", "eval_macro_f1", "train_loss")


class ProgressCallback(TrainerCallback):
    """A tqdm bar with loss, samples/s and ETA on a terminal; a plain line per log step otherwise.

    After training, the Trainer evaluates the checkpoint it kept (the best one, when there is a
    best) once more; that result is printed only when it says something new, and is labelled as
    the final evaluation of that checkpoint rather than as one more training step.
    """

    def __init__(self, samples_per_step: int, stream=None):
        self.samples_per_step = samples_per_step
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.bar = None
        self.started = 0.0
        self.first_step = 0
        self.finished = False
        self.evaluated: dict[int, list[str]] = {}  # step -> the eval figures printed for it
        self.last_eval_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.perf_counter(), state.global_step
        self.finished = False
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            file=self.stream, dynamic_ncols=True)

    def samples_per_second(self, state) -> float:
        elapsed = time.perf_counter() - self.started
        return (state.global_step - self.first_step) * self.samples_per_step / elapsed if elapsed > 0 else 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.finished:
            self._final_evaluation(args, state, logs)
            return
        figures = _figures(logs)
        if any(f.startswith("eval_") for f in figures):
            self.evaluated[state.global_step] = [f for f in figures if f.startswith("eval_")]
            self.last_eval_step = state.global_step
        speed = self.samples_per_second(state)
        if self.bar is not None:
            shown = {k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "eval_loss", "eval_accuracy")}
            self.bar.set_postfix(**shown, samples_s=f"{speed:.1f}")
            return
        parts = [f"step {state.global_step}/{state.max_steps}", f"epoch {state.epoch or 0:.2f}", *figures]
        remaining = (state.max_steps - state.global_step) * self.samples_per_step / speed if speed else 0
        parts += [f"{speed:.1f} samples/s", f"eta {remaining:.0f}s"]
        print("  ".join(parts), file=self.stream, flush=True)

    def _final_evaluation(self, args, state, logs: dict) -> None:
        """An evaluation after training: that of the checkpoint the Trainer kept (the best one if any)."""
        figures = [f for f in _figures(logs) if f.startswith("eval_")]
        if not figures:
            return
        best = state.best_model_checkpoint if getattr(args, "load_best_model_at_end", False) else None
        step = checkpoint_step(best) if best else None
        which = "best checkpoint" if step is not None else "final model"
        step = state.global_step if step is None else step
        if self.evaluated.get(step) == figures:
            if step == self.last_eval_step:  # the same figures as the last evaluation shown
                return
            if self.bar is None:  # printed above as a line of its own (a bar only shows the latest)
                print(f"kept the {which}: step {step} (its evaluation is printed above)", file=self.stream,
                      flush=True)
                return
        self.evaluated[step], self.last_eval_step = figures, step
        print("  ".join([f"final evaluation of the {which} (step {step})", *figures]), file=self.stream, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.finished = True
        if self.bar is not None:
            self.bar.close()
        self._kept(args, state)

    def _kept(self, args, state) -> None:
        """Which evaluated checkpoint training kept (its evaluation is not run again: ``final_eval_metrics``)."""
        best = state.best_model_checkpoint if getattr(args, "load_best_model_at_end", False) else None
        step = checkpoint_step(best) if best else None
        if step is None or step not in self.evaluated:
            return
        if self.bar is not None:  # a bar showed only the latest figures
            print("  ".join([f"kept the best checkpoint (step {step})", *self.evaluated[step]]), file=self.stream,
                  flush=True)
        elif step != self.last_eval_step:
            print(f"kept the best checkpoint: step {step} (its evaluation is printed above)", file=self.stream,
                  flush=True)
        self.last_eval_step = step


def _figures(logs: dict) -> list[str]:
    """The log values a person reads, as printed (``name value``)."""
    return [f"{k} {v:.4g}" for k, v in logs.items() if k in SHOWN and isinstance(v, (int, float))]


def checkpoint_step(path: str) -> int | None:
    """The step of a Trainer checkpoint folder (``.../checkpoint-120`` -> 120); None if the name has none."""
    try:
        return int(Path(path).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


class JsonlLogCallback(TrainerCallback):
    """Append every log event (train and eval) to ``train_log.jsonl`` in the run folder."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class ProgressFileCallback(TrainerCallback):
    """Keep ``progress.json`` in the run folder saying where training stands: step, total steps, epoch,
    samples/s and the ETA. Rewritten at most once every ``every`` seconds (and at the start and the end),
    each time whole (written beside it, then renamed), so a reader never sees half of it."""

    def __init__(self, path: Path, samples_per_step: int, every: float = 1.0):
        self.path, self.samples_per_step, self.every = path, samples_per_step, every
        self.started, self.first_step, self.written = 0.0, 0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.perf_counter(), state.global_step
        self._write(state, "training")

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.written >= self.every:
            self._write(state, "training")

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state, "trained")

    def _write(self, state, phase: str) -> None:
        now = time.perf_counter()
        self.written = now
        steps_done = state.global_step - self.first_step
        speed = steps_done * self.samples_per_step / (now - self.started) if now > self.started and steps_done else 0.0
        remaining = (state.max_steps - state.global_step) * self.samples_per_step / speed if speed else None
        progress = {"phase": phase, "step": state.global_step, "total_steps": state.max_steps,
                    "epoch": round(state.epoch or 0.0, 4), "samples_per_second": round(speed, 2),
                    "eta_seconds": None if remaining is None else round(remaining, 1),
                    "elapsed_seconds": round(now - self.started, 1), "updated": time.time()}
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(progress), encoding="utf-8")
        partial.replace(self.path)


def trim_log(path: Path, last_step: int) -> None:
    """Drop log events after ``last_step`` (the checkpoint a resumed run restarts from), and any line
    a killed process left half-written, so the resumed run logs each step exactly once."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(kept), encoding="utf-8")


class AdaLoraCallback(TrainerCallback):
    """AdaLoRA reallocates ranks from gradient importance after each optimizer step (before zero_grad)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


class StopOnSignal(TrainerCallback):
    """SIGINT (Ctrl+C) or SIGTERM during training: finish the current step, save a checkpoint, stop.

    A second signal while that happens falls back to the default behaviour (stop at once).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        self.received = signum
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_train_begin(self, args, state, control, **kwargs):
        import threading

        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
