"""Read a YAML config, apply `key.sub=value` overrides, validate, and explain every problem.

    cfg = load_config("configs/support-intents-lora.yaml", ["train.epochs=2", "lora.r=16"])

Every problem is reported at once as ``dotted.key: what is wrong; what would be right``.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from tunelab.config.schema import TunelabConfig
from tunelab.errors import ConfigError

# Names people type for a key that has another name here (PEFT's, or the Trainer's).
SYNONYMS = {"rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target": "target_modules",
            "lr": "learning_rate", "num_epochs": "epochs", "num_train_epochs": "epochs", "bs": "batch_size",
            "per_device_train_batch_size": "batch_size", "model_name": "name", "path": "name"}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TunelabConfig:
    """Load ``path``, apply ``overrides`` and return the validated config.

    Raises:
        ConfigError: listing every problem in the file and the overrides.
    """
    path = Path(path)
    tree = read_yaml(path)
    apply_overrides(tree, overrides, title=f"invalid overrides for {path}")
    return validate(tree, default_name=path.stem, source=str(path))


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file into a dict; problems become one-line ConfigErrors."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (relative paths start at {Path.cwd()})")
    try:
        text = path.read_text(encoding="utf-8-sig")
        tree = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}{_yaml_position(err, text)}: invalid YAML: {_yaml_problem(err)}") from None
    if tree is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least `task:` and `data: {{train: ...}}`")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (task:, model:, data:, ...)")
    return tree


def _yaml_position(err: yaml.YAMLError, text: str) -> str:
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        return f" line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(err, "position", None)  # a character YAML refuses to read (NUL, control bytes)
    if position is not None:
        before = text[:position]
        return f" line {before.count(chr(10)) + 1}, column {position - before.rfind(chr(10))}"
    return ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.reader.ReaderError):
        return f"character {err.character!r} is not allowed in YAML"
    return getattr(err, "problem", None) or str(err).splitlines()[0]


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str], title: str = "invalid overrides") -> None:
    """Apply every override to ``tree``; one ConfigError lists all the malformed ones."""
    problems = []
    for override in overrides:
        try:
            apply_override(tree, override)
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError(problems, title=title)


def apply_override(tree: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``tree``; the value is parsed as YAML (``2``, ``null``, ``[q, v]``)."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(f"{override}: an override looks like section.key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # a plain string such as `a: b` that YAML would reject
    set_key(tree, key, value)


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` in ``tree`` to ``value`` (already typed), making sections on the way."""
    node = tree
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{key}: `{where}` is a value, not a section; use {where}=VALUE")
        node = child
    node[parts[-1]] = value


# Sections a finished run's config may still change: how it is evaluated, quantized and served.
AFTER_TRAINING = ("eval", "quantize", "quantization", "serve")
OVERRIDES_TITLE = "invalid settings for this run"


def with_overrides(cfg: TunelabConfig, overrides: Iterable[str] = (), sections: Iterable[str] = AFTER_TRAINING,
                   values: dict[str, Any] | None = None) -> TunelabConfig:
    """A finished run's config with ``section.key=value`` overrides, then ``values`` ({dotted key: value},
    what command-line flags gave; None means not given), applied and validated. Only keys of
    ``sections`` may change: the rest describes how the run was trained.

    Raises:
        ConfigError: an override of another section, or a key or value the schema refuses.
    """
    overrides, sections = list(overrides), tuple(sections)
    values = {key: value for key, value in (values or {}).items() if value is not None}
    prefixes = tuple(f"{section}." for section in sections)
    wrong = [o for o in [*overrides, *values] if not o.strip().startswith(prefixes)]
    if wrong:
        allowed = " and ".join(", ".join(f"{section}.*" for section in sections).rsplit(", ", 1))
        raise ConfigError([f"{o}: only {allowed} settings can change after training" for o in wrong],
                          title=OVERRIDES_TITLE)
    if not overrides and not values:
        return cfg
    tree = cfg.model_dump(mode="json")
    apply_overrides(tree, overrides, title=OVERRIDES_TITLE)
    for key, value in values.items():
        set_key(tree, key, value)
    try:
        return validate(tree)
    except ConfigError as err:
        raise ConfigError(err.problems, title=OVERRIDES_TITLE) from None


# Keys that moved between sections: old configs and run folders keep loading.
MOVED = {("quantization", "calibration_samples"): "quantize", ("quantization", "bits"): "quantize",
         ("quantization", "group_size"): "quantize"}


def _move_keys(tree: dict[str, Any]) -> None:
    for (old_section, key), new_section in MOVED.items():
        section = tree.get(old_section)
        if isinstance(section, dict) and key in section:
            target = tree.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(key, section.pop(key))


def validate(tree: dict[str, Any], default_name: str = "run", source: str = "config") -> TunelabConfig:
    """Validate a config tree and fill in derived defaults (run name and folder)."""
    _move_keys(tree)
    try:
        cfg = TunelabConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_errors(err), title=f"invalid config {source}") from None
    if cfg.output.name is None:
        cfg.output.name = default_name
    if cfg.output.dir is None:
        cfg.output.dir = str(Path("runs") / cfg.output.name)
    return cfg


def from_dict(tree: dict[str, Any], overrides: Iterable[str] = (), name: str = "run",
              source: str = "config") -> TunelabConfig:
    """A config built in Python (a copy of ``tree`` with ``overrides`` applied), validated like a file."""
    tree = copy.deepcopy(tree)
    for override in overrides:
        apply_override(tree, override)
    return validate(tree, default_name=name, source=source)


def format_errors(err: ValidationError) -> list[str]:
    """Turn pydantic's errors into ``dotted.key: what is wrong; what would be right`` lines."""
    by_key: dict[str, list[str]] = {}
    for error in err.errors():
        if error["type"] == "value_error" and not error["loc"]:
            # Cross-field checks: each line already starts with its dotted key.
            for line in str(error["ctx"]["error"]).splitlines():
                key, _, message = line.partition(": ")
                by_key.setdefault(key, []).append(message)
            continue
        key, model = _clean_location(error["loc"])
        by_key.setdefault(key, []).append(_explain(error, model, key))
    lines = []
    for key, messages in by_key.items():
        lines.append(f"{key}: {_merge(list(dict.fromkeys(messages)))}")
    return lines


def _merge(messages: list[str]) -> str:
    """One message per key: a value that fails every branch of a union lists what each accepts."""
    if len(messages) == 1:
        return messages[0]
    head, _, _ = messages[0].partition("; input should be ")
    wants = [m.partition("; input should be ")[2] for m in messages]
    if all(wants):
        return f"{head}; input should be {' or '.join(wants)}"
    return " or ".join(messages)


def _clean_location(loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """Drop pydantic's union-branch tags from ``loc``; return the dotted key and its parent model."""
    model: type[BaseModel] | None = TunelabConfig
    parent: type[BaseModel] | None = TunelabConfig
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
            continue
        if model is not None and item in model.model_fields:
            parent = model
            parts.append(item)
            annotation = model.model_fields[item].annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        elif model is not None:  # an unknown key inside a section
            parent = model
            parts.append(str(item))
            model = None
        # else: a tag such as 'str' or 'list[str]' naming a union branch
    return ".".join(parts) or "(top level)", parent


def _explain(error: dict, parent: type[BaseModel] | None, key: str) -> str:
    kind, given = error["type"], error.get("input")
    name = key.rsplit(".", 1)[-1]
    if kind == "extra_forbidden":
        valid = list(parent.model_fields) if parent else []
        close = [SYNONYMS[name]] if SYNONYMS.get(name) in valid else difflib.get_close_matches(name, valid, n=1,
                                                                                                  cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(valid)}"
        return f"unknown key; {hint}"
    if kind == "missing":
        help_text = _first_sentence(parent.model_fields[name].description) if parent and name in parent.model_fields else ""
        return f"missing; required{': ' + help_text if help_text else ''}"
    if kind == "literal_error":
        return f"{given!r} is not allowed; use {error['ctx']['expected']}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a section (a mapping of keys), got {given!r}"
    shown = "null" if given is None else repr(given)
    return f"{shown} is invalid; {error['msg'][0].lower()}{error['msg'][1:]}"


def _first_sentence(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat.split(". ")[0].rstrip(".")
