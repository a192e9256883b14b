"""Human-readable views of the config: the resolved YAML and every option with its help."""

from __future__ import annotations

import textwrap
import typing
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunelab.config.schema import TunelabConfig


def to_yaml(cfg: TunelabConfig) -> str:
    """The resolved config as YAML, sections in schema order (what `config show` prints)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def schema_text(model: type[BaseModel] = TunelabConfig, prefix: str = "") -> str:
    """Every option: dotted key, type, default and help text (what `config schema` prints)."""
    blocks = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            blocks.append(f"{key}:  {_one_line(field.description)}\n")
            blocks.append(schema_text(annotation, prefix=f"{key}."))
            continue
        default = "required" if field.default is PydanticUndefined else f"default {_show(field.default)}"
        help_text = textwrap.fill(" ".join((field.description or "").split()), width=96,
                                  initial_indent="    ", subsequent_indent="    ")
        blocks.append(f"{key}  ({type_name(annotation)}, {default})\n{help_text}\n")
    return "\n".join(blocks)


def schema_fields(model: type[BaseModel] = TunelabConfig) -> list[dict[str, Any]]:
    """Every section and option as data (what a form needs): ``{"section", "help", "fields": [{"key", "type",
    "choices", "default", "required", "help"}]}``, in schema order; top-level options form the section ``""``."""
    top: dict[str, Any] = {"section": "", "help": _one_line(model.__doc__), "fields": []}
    sections = [top]
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append({"section": name, "help": _one_line(field.description),
                             "fields": [_field(key, sub) for key, sub in annotation.model_fields.items()]})
        else:
            top["fields"].append(_field(name, field))
    return sections


def _field(key: str, field: Any) -> dict[str, Any]:
    annotation = field.annotation
    literal = [a for a in (annotation, *typing.get_args(annotation)) if typing.get_origin(a) is typing.Literal]
    required = field.default is PydanticUndefined
    return {"key": key, "type": type_name(annotation), "choices": list(typing.get_args(literal[0])) if literal else None,
            "default": None if required else field.default, "required": required,
            "help": _one_line(field.description)}


def type_name(annotation: Any) -> str:
    """A short readable name for a field type: `int`, `str or null`, `one of: a, b`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())
