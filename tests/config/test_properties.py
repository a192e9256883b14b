"""Property tests: random bytes, random JSON and random configs end in success or a clean user error.

A "clean user error" is a TunelabError: the CLI prints its lines and exits 2. Anything else
escaping (KeyError, TypeError, UnicodeError, ...) would be a traceback, and fails here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunelab.config import from_dict, load_config
from tunelab.config.schema import TunelabConfig
from tunelab.data.examples import load_examples
from tunelab.errors import TunelabError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
# Rows that look almost right: the field names the formats use, with values of any type.
FIELDS = ("text", "label", "instruction", "input", "output", "messages", "conversations", "role", "content")
near_rows = st.dictionaries(st.sampled_from(FIELDS), json_values | st.lists(
    st.dictionaries(st.sampled_from(("role", "content", "from", "value")), scalars, max_size=3), max_size=3),
    max_size=4)


def load(tmp: Path, name: str, content: bytes, task: str) -> None:
    path = tmp / name
    path.write_bytes(content)
    model = "builtin:minilm" if task == "classification" else "builtin:tiny-llama"
    cfg = from_dict({"task": task, "model": {"name": model}, "data": {"train": str(path)},
                     "output": {"dir": str(tmp / "run")}})
    try:
        load_examples(cfg)
    except TunelabError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


@FAST
@given(content=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES),
       task=st.sampled_from(("classification", "causal_lm")))
def test_random_bytes_load_or_fail_cleanly(content, suffix, task):
    with tempfile.TemporaryDirectory() as tmp:
        load(Path(tmp), "train" + suffix, content, task)


@FAST
@given(rows=st.lists(json_values | near_rows, min_size=1, max_size=6), task=st.sampled_from(("classification", "causal_lm")),
       as_list=st.booleans())
def test_random_json_rows_load_or_fail_cleanly(rows, task, as_list):
    with tempfile.TemporaryDirectory() as tmp:
        if as_list:
            load(Path(tmp), "train.json", json.dumps(rows).encode(), task)
        else:
            load(Path(tmp), "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode(), task)


SECTIONS = tuple(TunelabConfig.model_fields)
KEYS = tuple({key for section in SECTIONS
              for key in getattr(TunelabConfig.model_fields[section].annotation, "model_fields", {})})
config_trees = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=8),
    st.sampled_from(("classification", "causal_lm")) | json_values
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=4),
    max_size=6)


@FAST
@given(tree=config_trees)
def test_random_config_trees_validate_or_fail_cleanly(tree):
    try:
        cfg = from_dict(tree)
    except TunelabError as err:
        assert err.problems
    else:
        assert cfg.output.dir


@FAST
@given(document=st.text(max_size=300) | config_trees.map(lambda t: yaml.safe_dump(t, allow_unicode=True)),
       overrides=st.lists(st.text(max_size=30), max_size=3))
def test_random_config_files_load_or_fail_cleanly(document, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path, overrides)
        except TunelabError as err:
            assert err.problems
