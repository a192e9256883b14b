"""Example 04 runs end to end as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from example_support import EXAMPLES, header_line, run_script

pytestmark = pytest.mark.slow

SCRIPT = EXAMPLES / "example_04_dataset_preparation.py"


def section(out: str, start: str, end: str) -> str:
    return out[out.index(start):out.index(end)]


def row(text: str, *first: str) -> list[str]:
    """The cells of the table line in ``text`` that starts with the cells ``first``."""
    for line in text.splitlines():
        cells = line.split()
        if cells[:len(first)] == list(first):
            return cells
    raise AssertionError(f"no line starting with {first} in:\n{text}")


@pytest.fixture(scope="module")
def quick(tmp_path_factory, tiny_bert):
    out_dir = tmp_path_factory.mktemp("ex4")
    return run_script(SCRIPT, "--quick", "--model", tiny_bert, "--out", out_dir), out_dir


def test_formats_and_the_broken_file(quick):
    out, _ = quick
    assert "numbers below only show that everything runs" in out
    header_line(out, "raw file", "layout", "fields", "rows")
    formats = section(out, "[2/8]", "a deliberately broken file")
    header_line(formats, "dataset", "file", "format", "train", "validation", "test", "mean tokens", "max tokens",
                "masked share", "packed sequences")
    assert row(formats, "classification")[1:3] == ["tickets_train.csv", "classification"]
    assert row(formats, "chat")[1:3] == ["conversations.jsonl", "chat"]
    assert row(formats, "generation")[1:3] == ["answers.tsv", "instruction"]
    broken = section(out, "a deliberately broken file", "[3/8]")
    assert "tunelab refused tickets_broken.jsonl and wrote nothing (4 problems)" in broken
    for problem in ("line 2: invalid JSON", "line 3: field 'queue': missing", "line 4: field 'message': empty",
                    "line 5: field 'message': expected a string"):
        assert problem in broken


def test_template_masking_and_packing(quick):
    out, _ = quick
    template = section(out, "[3/8]", "[4/8]")
    assert "tunelab's default" in template  # the tiny model's tokenizer brings no template
    assert all(marker in template for marker in ("<|system|>", "<|user|>", "<|assistant|>"))
    masking = section(out, "[4/8]", "[5/8]")
    assert "[no loss] <|system|>" in masking and "[loss]" in masking
    default, off = row(masking, "chat", "true"), row(masking, "chat", "false")
    assert float(default[-1].rstrip("%")) > 20 and off[-1] == "0.0%"
    assert default[3] == off[2] == off[3]  # same tokens; with the prompt unmasked every token is in the loss
    packing = section(out, "[5/8]", "[6/8]")
    header_line(packing, "data.packing", "data.max_length", "train sequences", "padding to max_length")
    unpacked, packed = row(packing, "chat", "false"), row(packing, "chat", "true", "256")
    long = row(packing, "chat", "true", "1,024")
    assert int(unpacked[4]) > int(packed[3]) > int(long[3])
    assert "the fullest packed sequence: 2 examples, position ids 0.." in packing
    assert "         0  . . . x . . . ." in packing  # the second example cannot see the first


def test_splits_and_leakage(quick):
    out, _ = quick
    splits = section(out, "[6/8]", "[7/8]")
    assert "validation split off train with seed 0, stratified by label" in splits
    assert "validation, test split off train with seed 0" in splits
    header_line(splits, "label", "train", "validation", "test", "validation share")
    leakage = section(out, "[7/8]", "[8/8]")
    assert row(leakage, "classification")[-3:] == ["0", "0", "0"]
    assert row(leakage, "tickets", "+", "4")[-3:] == ["1", "0", "4"]  # one duplicate removed, four leaked
    assert "warning: 4 test rows have an input that also occurs in train" in leakage


def test_fine_tunes_each_dataset_with_lora(quick):
    out, out_dir = quick
    header_line(out, "dataset", "metric", "before", "after", "delta", "95% CI of delta")
    table = out[out.index("== before vs after"):]
    for dataset, metric in (("classification", "accuracy"), ("chat", "perplexity"), ("chat", "bleu"),
                            ("generation", "rougeL")):
        row(table, dataset, metric)
    for dataset, model in (("classification", "tiny-bert"), ("chat", "builtin:tiny-llama"),
                           ("generation", "builtin:tiny-llama")):
        config = yaml.safe_load((out_dir / dataset / "config.yaml").read_text())
        assert config["method"]["name"] == "lora" and model in config["model"]["name"]
        assert (out_dir / dataset / "adapter").is_dir() and (out_dir / dataset / "eval.json").is_file()


def test_help_and_a_clear_error(tmp_path):
    help_text = run_script(SCRIPT, "--help")
    for option in ("--formats", "--data", "--test", "--task", "--model", "--causal-model", "--epochs", "--out",
                   "--quick", "What to look for"):
        assert option in help_text
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--formats", "chat,poems", "--out", out],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--formats: unknown poems; valid: classification, chat, generation" in done.stderr
    assert not out.exists()  # refused before any raw file was written
