"""Read the configured sources and turn them into clean examples, or explain every bad row.

    loaded = load_examples(cfg)   # raises DataError listing every problem in every file
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.config.schema import TunelabConfig
from tunelab.data.formats import FORMATS, RowError, detect_format
from tunelab.data.sources import Source, read_source
from tunelab.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass
class Example:
    """A clean example (see ``formats``) and the row it came from."""

    where: str
    data: dict


@dataclass
class LoadedData:
    format: str
    examples: dict[str, list[Example]]          # only the splits that have a source
    sources: dict[str, Source] = field(default_factory=dict)


def load_examples(cfg: TunelabConfig) -> LoadedData:
    """Read every configured source and validate every row.

    Raises:
        DataError: one line per problem (file, line, field, what was expected), across all files.
    """
    data = cfg.data
    specs = {split: getattr(data, split) for split in SPLITS if getattr(data, split)}
    sources = {split: read_source(spec, split, data.text_field, data.max_rows) for split, spec in specs.items()}
    problems = [p for source in sources.values() for p in source.problems]

    fmt = data.format if data.format != "auto" else detect(cfg, sources, problems)
    normalize = FORMATS[fmt]
    examples: dict[str, list[Example]] = {}
    for split, source in sources.items():
        examples[split] = []
        for row in source.rows:
            try:
                examples[split].append(Example(row.where, normalize(row.record, data)))
            except RowError as err:
                problems.append(f"{row.where}: {err}")
    if fmt == "classification":
        problems += _single_label(examples.get("train", []), data.train, data.label_field) + _unseen_labels(examples, data.label_field)
    if problems:
        raise DataError(problems)
    return LoadedData(fmt, examples, sources)


def detect(cfg: TunelabConfig, sources: dict[str, Source], problems: list[str]) -> str:
    """The format the first row implies (train's, else the first split that has rows).

    Raises:
        DataError: no source yielded a row, or the first row fits no format; with every problem so far.
    """
    first = next((source.rows[0] for source in sources.values() if source.rows), None)
    if first is None:  # every source is broken: their problems say why
        raise DataError(problems)
    fmt = detect_format(cfg.task, first.record, cfg.data)
    if fmt is None:
        fields = ", ".join(sorted(first.record)) or "none"
        raise DataError(problems + [
            f"{first.where}: cannot tell the data format from the fields ({fields}); set data.format "
            "(instruction, chat, text) and the field names (data.text_field, data.instruction_field, ...)"])
    return fmt


def _single_label(train: list[Example], spec: str, label_field: str) -> list[str]:
    """A classifier needs at least two classes to tell apart."""
    labels = {e.data["label"] for e in train}
    if len(labels) != 1:
        return []
    return [f"{spec}: field '{label_field}': only one label ({next(iter(labels))!r}) in {len(train)} rows; "
            "classification needs at least two"]


def _unseen_labels(examples: dict[str, list[Example]], label_field: str) -> list[str]:
    """Validation/test rows whose label training never saw: the model could never predict them."""
    known = {e.data["label"] for e in examples.get("train", [])}
    if not known:
        return []
    shown = ", ".join(sorted(known)[:12]) + (", ..." if len(known) > 12 else "")
    return [
        f"{e.where}: field '{label_field}': {e.data['label']!r} never occurs in the training data; training labels are {shown}"
        for split in ("validation", "test")
        for e in examples.get(split, [])
        if e.data["label"] not in known
    ]
