from pathlib import Path

import pytest
import yaml

from tunelab.config import load_config, schema_text, to_yaml
from tunelab.config.schema import TunelabConfig
from tunelab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))

MINIMAL = """
task: classification
model: {name: builtin:minilm}
data: {train: data/train.jsonl, validation: null, test: null, format: auto, text_field: text, label_field: label}
method: {name: lora}
lora: {r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: all-linear}
train: {epochs: 3, batch_size: 16, learning_rate: 5.0e-4, seed: 0}
output: {dir: runs/my-run}
"""


@pytest.fixture
def minimal(tmp_path) -> Path:
    path = tmp_path / "my-run.yaml"
    path.write_text(MINIMAL)
    return path


def problems(path, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return caught.value.problems


def test_shipped_configs_exist():
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.output.dir


def test_minimal_config_gets_schema_defaults(minimal):
    cfg = load_config(minimal)
    assert cfg.lora.r == 8 and cfg.train.learning_rate == 5.0e-4
    assert cfg.train.gradient_accumulation_steps == 1  # from the schema, not the file
    assert cfg.output.name == "my-run"


def test_run_folder_defaults_to_runs_and_config_name(tmp_path):
    path = tmp_path / "exp1.yaml"
    path.write_text("task: classification\ndata: {train: x.jsonl}\n")
    cfg = load_config(path)
    assert cfg.output.dir == str(Path("runs") / "exp1")


def test_dotted_overrides_are_typed(minimal):
    cfg = load_config(minimal, ["train.epochs=2", "lora.r=16", "lora.target_modules=[q, v]", "data.test=null",
                                "data.validation=val.jsonl"])
    assert cfg.train.epochs == 2 and cfg.lora.r == 16
    assert cfg.lora.target_modules == ["q", "v"]
    assert cfg.data.validation == "val.jsonl" and cfg.data.test is None


def test_every_problem_is_reported_at_once(minimal):
    found = problems(minimal, ["train.epoch=2", "lora.r=0", "method.name=sgd", "train.batch_size=abc"])
    assert len(found) == 4
    joined = "\n".join(found)
    assert "train.epoch: unknown key; did you mean 'epochs'?" in joined
    assert any(p.startswith("lora.r: 0 is invalid") and "greater than or equal to 1" in p for p in found)
    assert any(p.startswith("method.name: 'sgd' is not allowed") and "'qlora'" in p for p in found)
    assert any(p.startswith("train.batch_size: 'abc'") for p in found)


def test_unknown_keys_in_the_file_are_rejected_with_suggestions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: classification\ndata: {train: x.jsonl, text_feild: body}\nquantise: {bits: 4}\n"
                    "lora: {rank: 4}\n")
    found = problems(path)
    assert "data.text_feild: unknown key; did you mean 'text_field'?" in found
    assert "quantise: unknown key; did you mean 'quantize'?" in found
    assert "lora.rank: unknown key; did you mean 'r'?" in found


def test_missing_required_keys_say_what_they_are(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: builtin:minilm}\n")
    found = problems(path)
    assert any(p.startswith("task: missing") for p in found)
    assert any(p.startswith("data: missing") for p in found)


def test_cross_field_checks(minimal):
    found = problems(minimal, ["task=causal_lm"])
    assert any(p.startswith("model.name: builtin:minilm is an encoder") for p in found)
    found = problems(minimal, ["data.format=chat"])
    assert any(p.startswith("data.format:") for p in found)
    found = problems(minimal, ["train.eval_strategy=steps"])
    assert any(p.startswith("train.eval_steps: required") for p in found)


@pytest.mark.parametrize("text, expected", [
    ("task: [unclosed\n", "invalid YAML"),
    ("", "the file is empty"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_unreadable_files_give_one_line(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    found = problems(path)
    assert len(found) == 1 and expected in found[0] and str(path) in found[0]


def test_malformed_override(minimal):
    found = problems(minimal, ["train.epochs", "task.sub=1"])
    assert found[0].startswith("train.epochs: an override looks like section.key=value")
    assert "`task` is a value, not a section" in found[1]


def test_resolved_config_round_trips(minimal):
    cfg = load_config(minimal, ["lora.r=4"])
    again = TunelabConfig.model_validate(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


def test_schema_lists_every_option_with_help():
    text = schema_text()
    for section, model in TunelabConfig.model_fields.items():
        annotation = model.annotation
        for name in getattr(annotation, "model_fields", {}):
            assert f"{section}.{name}  (" in text, f"{section}.{name} missing from the schema text"
            assert annotation.model_fields[name].description, f"{section}.{name} has no help text"


def test_config_cli(run_cli, minimal):
    code, out, err = run_cli("config", "show", minimal, "lora.r=32")
    assert code == 0 and yaml.safe_load(out)["lora"]["r"] == 32
    code, out, err = run_cli("config", "show", minimal, "lora.rr=32")
    assert code == 2 and "lora.rr: unknown key; did you mean 'r'?" in err and "Traceback" not in err
    code, out, _ = run_cli("config", "schema")
    assert code == 0 and "lora.lora_alpha" in out


def test_from_dict_applies_overrides_to_a_copy_and_validates():
    from tunelab.config import from_dict
    from tunelab.errors import ConfigError

    tree = {"task": "classification", "data": {"train": "x.jsonl"}, "lora": {"r": 8}}
    cfg = from_dict(tree, ["lora.r=4", "train.epochs=2"], name="mine")
    assert (cfg.lora.r, cfg.train.epochs, cfg.output.name) == (4, 2, "mine")
    assert tree["lora"]["r"] == 8 and "train" not in tree  # the caller's dict is untouched
    with pytest.raises(ConfigError, match="lora.r"):
        from_dict(tree, ["lora.r=0"])
