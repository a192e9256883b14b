"""Unknown config keys: each one gets its own exact suggestion, or the list of valid keys when nothing is close.

Synonyms (``rank`` -> ``r``, ``lr`` -> ``learning_rate``) win over spelling; misspellings get the closest key;
a key like nothing valid lists the section's keys instead of guessing.
"""

from __future__ import annotations

import pytest
import yaml

from tunelab.config import load_config
from tunelab.config.schema import TunelabConfig
from tunelab.errors import ConfigError

MINIMAL = {"task": "classification", "model": {"name": "builtin:minilm"}, "data": {"train": "train.jsonl"}}


def problems(tmp_path, tree: dict, overrides=()) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return caught.value.problems


def with_key(key: str, value) -> dict:
    """MINIMAL with ``key`` (dotted: ``section.name``) set in the file."""
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in MINIMAL.items()}
    section, _, name = key.partition(".")
    if name:
        tree.setdefault(section, {})[name] = value
    else:
        tree[section] = value
    return tree


SUGGESTIONS = [
    # synonyms from other tools
    ("lora.rank", 4, "r"),
    ("lora.alpha", 16, "lora_alpha"),
    ("train.lr", 0.1, "learning_rate"),
    ("train.num_train_epochs", 3, "epochs"),
    ("train.bs", 4, "batch_size"),
    ("model.path", "x", "name"),
    # misspellings
    ("train.epoch", 2, "epochs"),
    ("data.text_feild", "body", "text_field"),
    ("quantise", {"bits": 4}, "quantize"),
]


@pytest.mark.parametrize(("key", "value", "suggestion"), SUGGESTIONS, ids=[c[0] for c in SUGGESTIONS])
def test_an_unknown_key_in_the_file_gets_its_suggestion(tmp_path, key, value, suggestion):
    assert problems(tmp_path, with_key(key, value)) == [f"{key}: unknown key; did you mean '{suggestion}'?"]


@pytest.mark.parametrize(("key", "value", "suggestion"), SUGGESTIONS[:-1], ids=[c[0] for c in SUGGESTIONS[:-1]])
def test_an_unknown_key_in_an_override_gets_the_same_suggestion(tmp_path, key, value, suggestion):
    assert problems(tmp_path, MINIMAL, [f"{key}={value}"]) == [f"{key}: unknown key; did you mean '{suggestion}'?"]


def test_two_unknown_keys_each_get_their_own_suggestion(tmp_path):
    tree = with_key("lora.rank", 4)
    tree["train"] = {"epoch": 2}
    assert sorted(problems(tmp_path, tree)) == ["lora.rank: unknown key; did you mean 'r'?",
                                                "train.epoch: unknown key; did you mean 'epochs'?"]


@pytest.mark.parametrize("section", ["lora", "train"])
def test_a_key_like_nothing_lists_the_valid_keys_instead(tmp_path, section):
    [problem] = problems(tmp_path, with_key(f"{section}.zzz", 1))
    prefix = f"{section}.zzz: unknown key; valid keys here: "
    assert problem.startswith(prefix) and "did you mean" not in problem
    valid = TunelabConfig.model_fields[section].annotation.model_fields
    assert problem.removeprefix(prefix).split(", ") == list(valid)
