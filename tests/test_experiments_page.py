"""scripts/experiments.py measures and renders every section of experiments.md, on tiny models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from example_support import run_script

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_experiments_page_generator_on_tiny_models(tmp_path, tiny_bert, tiny_llama):
    from conftest import train_config

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.md").write_text("before\n<!-- measured:lora-memory -->\nold\n<!-- /measured:lora-memory -->\nafter\n")
    (tmp_path / "cls").mkdir()
    (tmp_path / "chat").mkdir()
    classifier = train_config(tmp_path / "cls", tiny_bert, train={"epochs": 1})
    chat = train_config(tmp_path / "chat", tiny_llama, task="causal_lm", train={"max_steps": 4},
                        eval={"max_new_tokens": 4}, quantize={"timing_repeats": 2})
    page = tmp_path / "experiments.md"
    out = run_script(ROOT / "scripts" / "experiments.py", "--quick", "--chat", chat, "--classifier", classifier,
                     "--work", tmp_path / "work", "--out", page, "--docs", docs, timeout=1800)
    text = page.read_text()
    for heading in ("## 1. Approach comparison", "## 2. Fine-tuning methods", "## 3. Where training memory goes",
                    "## 4. LoRA settings", "## 5. Quantization", "## 6. Precision", "## 7. What carries over",
                    "## 8. Production"):
        assert heading in text
    assert "| approach | what it is | rougeL |" in text and "| approach | what it is | accuracy |" in text
    assert "| few-shot |" in text and "linear probe" in text
    assert "| lora.r |" in text and "| train.learning_rate |" in text and "(config)" in text
    assert "**The noise first.**" in text  # two seeds measured: the sweep verdicts are judged against them
    assert "| method | precision | batch | trainable params | weights MiB |" in text
    assert "| variant | disk MiB |" in text
    assert "python scripts/experiments.py --quick" in text and "in the run that measured" not in text
    refreshed = (docs / "page.md").read_text()
    assert "old" not in refreshed and "| method | precision |" in refreshed and refreshed.endswith("after\n")
    # one section measured again keeps the others' results
    before = json.loads((tmp_path / "work" / "experiments.json").read_text())
    again = run_script(ROOT / "scripts" / "experiments.py", "--quick", "--only", "memory", "--chat", chat,
                       "--classifier", classifier, "--work", tmp_path / "work", "--out", page, "--docs", "",
                       timeout=1800)
    assert "== 1/1 memory" in again and "== 1/6" in out
    assert "in bf16 in the run that measured memory;" in page.read_text()
    after = json.loads((tmp_path / "work" / "experiments.json").read_text())
    assert after["sections"]["sweeps"] == before["sections"]["sweeps"] and set(after["sections"]) == set(before["sections"])
    # the page is drawn from experiments.json alone: the run folders can go
    for folder in (tmp_path / "work").iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)
    rendered = tmp_path / "again.md"
    run_script(ROOT / "scripts" / "experiments.py", "--render-only", "--work", tmp_path / "work", "--out", rendered,
               "--docs", "")
    assert rendered.read_text() == page.read_text()
    # settings that differ from the stored measurement are refused, not mixed
    done = subprocess.run([sys.executable, ROOT / "scripts" / "experiments.py", "--quick", "--only", "memory", "--chat",
                           chat, "--classifier", classifier, "--set", "train.seed=7", "--work", tmp_path / "work",
                           "--out", rendered, "--docs", ""], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "settings differ" in done.stderr
