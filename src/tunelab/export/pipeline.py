"""The export stage: a finished run folder in, one GGUF file (and an Ollama Modelfile) out.

    tunelab export runs/my-run                    # runs/my-run/export/model-f16.gguf
    tunelab export runs/my-run --dtype q8_0 --out ~/models/my-run.gguf

The run's model is loaded as trained and its adapter folded into the fp32 base, as
``tunelab merge`` does (a qlora or lora-8bit adapter is folded into the base reloaded in fp32);
a full or freeze run's model/ is used as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from peft import PeftModel

from tunelab import __version__
from tunelab.errors import ExportError
from tunelab.export.dtypes import FORMATS, dtype_entry
from tunelab.export.gguf_write import ExportResult, check_target, export_gguf
from tunelab.inference import load_run
from tunelab.rundir import RunDir, open_run


def default_path(run_dir: Path, dtype: str) -> Path:
    """RUN/export/model-<dtype>.gguf: where exports go unless --out says otherwise."""
    return RunDir(run_dir).export_dir / f"model-{dtype}.gguf"


def run(run_dir: str | Path, fmt: str = "gguf", dtype: str = "f16", out: str | Path | None = None,
        verify: bool = True, trust_remote_code: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Export the run's merged model; returns the written file. ``echo`` gets a summary, line by line.

    Raises:
        ExportError: a classification run, an unknown format or dtype, an unsupported model or
            tokenizer, or a file that failed its read-back check.
        RunFolderError: the folder is not a finished run.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    dtype_entry(dtype)  # an unknown dtype or a bad --out fails before the model loads
    run, cfg = open_run(run_dir)
    run_dir = run.root
    target = check_target(out) if out else default_path(run_dir, dtype)
    if cfg.task != "causal_lm":
        raise ExportError(f"{run_dir}: a {cfg.task} run; GGUF export is for causal-LM runs (task: causal_lm)")
    loaded = load_run(run_dir, full_precision_base=True, trust_remote_code=trust_remote_code)
    model = loaded.model.merge_and_unload() if isinstance(loaded.model, PeftModel) else loaded.model  # full: as is
    description = (f"{cfg.method.name} fine-tune of {cfg.model.name} (run {run_dir.name}), exported by "
                   f"tunelab {__version__}")
    result = export_gguf(model, loaded.tokenizer, target, dtype,
                         name=run_dir.resolve().name, verify=verify, description=description)
    for line in summary_lines(result):
        echo(line)
    return result.path


def summary_lines(result: ExportResult) -> list[str]:
    """What an export wrote and how it checked out, for people."""
    lines = [f"wrote {result.path.name}: {result.size_bytes / 1e6:,.1f} MB, {result.dtype} {result.architecture} "
             f"in {result.write_seconds:.1f} s"]
    if result.verification is not None:
        lines.append(result.verification.summary() + f" ({result.verification.seconds:.1f} s)")
    else:
        lines.append("not verified (--no-verify)")
    lines.append(f"Ollama: cd {result.modelfile.parent} && ollama create {result.name} -f Modelfile; "
                 f"llama.cpp: llama-cli -m {result.path}")
    return lines
