"""What a run leaves loads with plain PEFT and transformers: the base is named as others load it, label names
travel with the adapter, model/ carries its tokenizer, the README's snippet runs verbatim, files are shared."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import train_config, write_jsonl
from tunelab.config import load_config
from tunelab.models.resolve import resolve_model
from tunelab.training import train

ROOT = Path(__file__).resolve().parents[2]
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
INTENTS = [{"text": f"{text} number {i}", "label": label} for i in range(10) for text, label in [
    ("I was charged twice for my order", "payment_issue"), ("where is my parcel", "order_status"),
    ("please refund the broken blender", "refund_request")]]


def minilm_run(folder: Path, **sections) -> Path:
    write_jsonl(folder / "intents.jsonl", INTENTS)
    config = train_config(folder, Path("unused"), **sections)
    cfg = load_config(config, ["model.name=builtin:minilm", f"data.train={folder / 'intents.jsonl'}",
                               "train.max_steps=2"])
    return train.run(cfg)


HUB_LOOKUPS: list[str] = []  # what PEFT asked the hub while the module's run trained


@pytest.fixture(scope="module")
def demo_like_run(tmp_path_factory) -> Path:
    """A MiniLM LoRA run at ``runs/demo`` (where the README's snippet looks) under a fresh folder."""
    import peft.utils.save_and_load as peft_saving

    home = tmp_path_factory.mktemp("home")
    (home / "runs").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(peft_saving, "check_file_exists_on_hf_hub", lambda repo, *a, **k: HUB_LOOKUPS.append(repo))
        run_dir = minilm_run(home)
    shutil.move(str(run_dir), home / "runs" / "demo")
    return home


def test_the_adapter_names_the_base_as_others_load_it(demo_like_run, tmp_path, tiny_bert):
    adapter = demo_like_run / "runs" / "demo" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == MINILM_ID
    assert "site-packages" not in (adapter / "adapter_config.json").read_text()
    assert HUB_LOOKUPS == []  # saving adapters and checkpoints of a built-in stays offline
    # A model given as a folder is recorded as given.
    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 1})))
    recorded = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(tiny_bert)


def test_labels_tokenizer_and_a_real_model_card_travel_with_the_adapter(demo_like_run):
    run_dir = demo_like_run / "runs" / "demo"
    adapter = run_dir / "adapter"
    assert json.loads((adapter / "labels.json").read_text()) == json.loads((run_dir / "labels.json").read_text())
    assert (adapter / "tokenizer.json").exists() and not (adapter / "config.json").exists()
    card = (adapter / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n")
    for expected in ("lora (r 4", "intents.jsonl", "tunelab train config.yaml", "`payment_issue`",
                     "PeftModel.from_pretrained(base, adapter)", "trainable parameters"):
        assert expected in card, expected
    assert "More Information Needed" not in card  # PEFT's empty template


def hub_cache(folder: Path) -> Path:
    """A Hugging Face cache holding MiniLM under its hub id, laid out as a download leaves it."""
    snapshot = folder / ("models--" + MINILM_ID.replace("/", "--")) / "snapshots" / ("0" * 40)
    shutil.copytree(resolve_model("builtin:minilm"), snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    return folder


def readme_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = [code for code in blocks if "runs/demo/adapter" in code]
    assert len(found) == 1, "the README's load-without-tunelab snippet"
    return found[0]


@pytest.mark.slow
def test_the_readme_snippet_runs_verbatim_with_peft_and_transformers(demo_like_run, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache(tmp_path / "hub")),
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", readme_snippet()], cwd=demo_like_run, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = json.loads((demo_like_run / "runs" / "demo" / "labels.json").read_text())["label2id"]
    # The last line: with the gptq extra installed, importing PEFT prints gptqmodel's banner first.
    assert done.stdout.strip().splitlines()[-1] in labels, done.stdout  # a name such as payment_issue, not LABEL_1


def test_a_full_fine_tuning_folder_works_in_a_pipeline(tmp_path, tiny_bert):
    from transformers import pipeline

    run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, method={"name": "full"},
                                                 train={"max_steps": 1})))
    classify = pipeline("text-classification", model=str(run_dir / "model"))
    assert classify("alpha item 3")[0]["label"] in ("alpha", "beta", "gamma")
    assert (run_dir / "model" / "README.md").read_text().startswith("---\nlibrary_name: transformers\n")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_permissions_the_umask_allows(tmp_path, tiny_bert, umask):
    from tunelab.quantization import merge, quantize

    before = os.umask(umask)
    try:
        run_dir = train.run(load_config(train_config(tmp_path, tiny_bert, train={"max_steps": 1})))
        merge.run(run_dir)
        quantize.run(run_dir, ["dynamic-int8"])
    finally:
        os.umask(before)
    wrong = [f"{oct(stat.S_IMODE(p.stat().st_mode))} {p.relative_to(run_dir)}" for p in run_dir.rglob("*")
             if stat.S_IMODE(p.stat().st_mode) != (0o777 if p.is_dir() else 0o666) & ~umask]
    assert wrong == []
    assert (run_dir / "merged" / "model.safetensors").exists()
