"""Read raw rows from every kind of source, remembering where each row came from.

A reader never stops at the first bad row: it returns the rows it could read plus one
problem line per bad row (`file line N: what is wrong; what would be right`), so the user
sees everything that needs fixing at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelab.data.builtin import builtin_data_path


@dataclass
class Row:
    """One raw record and where it came from (``data/train.jsonl line 12``)."""

    where: str
    record: dict


@dataclass
class Source:
    """Everything read from one source: rows, problems, and a content hash."""

    spec: str
    rows: list[Row]
    problems: list[str]
    sha256: str = ""


# Longer lines are refused before parsing: no example needs them, and tokenizing one takes memory and time.
MAX_LINE_BYTES = 1_000_000

Reader = Callable[[Path, str, str], tuple[list[Row], list[str]]]


def read_source(spec: str, split: str, text_field: str, max_rows: int | None = None) -> Source:
    """Read ``spec`` (a file, a ``save_to_disk`` folder, ``hf:...`` or ``builtin:...``).

    ``split`` names the role (train/validation/test); folders and hub datasets holding
    several splits are read at that split. Problems are returned, not raised.
    """
    if spec.startswith("hf:"):
        source = _read_hub(spec, split)
    else:
        try:
            path = builtin_data_path(spec) if spec.startswith("builtin:") else Path(spec).expanduser()
        except ValueError as err:
            return Source(spec, [], [f"{spec}: {err}"])
        source = _read_path(spec, path, split, text_field)
    if max_rows is not None:
        source.rows = source.rows[:max_rows]
    if not source.rows and not source.problems:
        source.problems.append(f"{spec}: the file is empty; expected at least one row")
    return source


def _read_path(spec: str, path: Path, split: str, text_field: str) -> Source:
    try:
        return _read_existing(spec, path, split, text_field)
    except OSError as err:  # unreadable (permissions, a vanished network mount): the user's to fix
        return Source(spec, [], [f"{spec}: cannot read it ({err.strerror or err}); check that it is a readable file"])


def _read_existing(spec: str, path: Path, split: str, text_field: str) -> Source:
    if path.is_dir():
        return _read_saved_dataset(spec, path, split)
    if not path.is_file():
        return Source(spec, [], [f"{spec}: file not found (relative paths start at {Path.cwd()})"])
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        kinds = ", ".join(sorted(READERS))
        return Source(spec, [], [f"{spec}: unsupported file type '{path.suffix}'; use one of {kinds}, "
                                 "a datasets.save_to_disk folder, or hf:owner/name"])
    rows, problems = reader(path, spec, text_field)
    return Source(spec, rows, problems, _sha256_file(path))


def _decode_lines(path: Path, spec: str) -> tuple[list[tuple[int, str]], list[str]]:
    """Split a file into (line number, text) pairs; accept a BOM and CRLF, report bad UTF-8 per line."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    lines, problems = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if len(raw) > MAX_LINE_BYTES:
            problems.append(f"{spec} line {number}: {len(raw):,} bytes on one line; lines are limited to "
                            f"{MAX_LINE_BYTES:,} bytes (far beyond any model's context); split or shorten it")
            continue
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            problems.append(f"{spec} line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                            f"{err.start + 1}); save the file as UTF-8")
            lines.append((number, raw.decode("utf-8", errors="replace")))
    if lines and lines[-1][1] == "":
        lines.pop()  # the newline that ends the last line
    return lines, problems


def _read_jsonl(path: Path, spec: str, text_field: str) -> tuple[list[Row], list[str]]:
    lines, problems = _decode_lines(path, spec)
    rows = []
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{spec} line {number}: invalid JSON ({err.msg} at column {err.colno}); "
                            "each line must be one JSON object")
            continue
        except RecursionError:
            problems.append(f"{spec} line {number}: JSON nested too deeply to read; each line must be one flat "
                            "JSON object")
            continue
        if not isinstance(record, dict):
            problems.append(f"{spec} line {number}: expected a JSON object, got {_kind(record)}")
            continue
        rows.append(Row(f"{spec} line {number}", record))
    return rows, problems


def _read_json(path: Path, spec: str, text_field: str) -> tuple[list[Row], list[str]]:
    lines, problems = _decode_lines(path, spec)
    if problems:
        return [], problems
    try:
        tree = json.loads("\n".join(text for _, text in lines))
    except json.JSONDecodeError as err:
        return [], [f"{spec} line {err.lineno}: invalid JSON ({err.msg} at column {err.colno})"]
    except RecursionError:
        return [], [f"{spec}: JSON nested too deeply to read; expected a list of flat objects"]
    if isinstance(tree, dict):
        lists = [v for v in tree.values() if isinstance(v, list)]
        if len(lists) != 1:
            return [], [f"{spec}: expected a JSON list of objects (or an object holding exactly one such list)"]
        tree = lists[0]
    if not isinstance(tree, list):
        return [], [f"{spec}: expected a JSON list of objects, got {_kind(tree)}"]
    rows = []
    for index, record in enumerate(tree, start=1):
        if isinstance(record, dict):
            rows.append(Row(f"{spec} item {index}", record))
        else:
            problems.append(f"{spec} item {index}: expected a JSON object, got {_kind(record)}")
    return rows, problems


def _read_delimited(path: Path, spec: str, delimiter: str) -> tuple[list[Row], list[str]]:
    lines, problems = _decode_lines(path, spec)
    starts = [number for number, _ in lines]  # the file line where each physical line begins
    # TSV files (SST-2, SMS spam) use bare quotes inside text, so quotes only mean something in CSV.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO("\n".join(text for _, text in lines)), delimiter=delimiter, quoting=quoting)
    header: list[str] | None = None
    rows, consumed = [], 0
    try:
        for fields in reader:
            number = starts[consumed] if consumed < len(starts) else consumed + 1
            consumed = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                problems.append(f"{spec} line {number}: {len(fields)} fields, but the header has {len(header)} "
                                f"({', '.join(header)}); quote fields that contain '{_show_delim(delimiter)}'")
                continue
            rows.append(Row(f"{spec} line {number}", dict(zip(header, fields))))
    except csv.Error as err:
        problems.append(f"{spec} line {reader.line_num}: unreadable row ({err})")
    return rows, problems


def _show_delim(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


def _read_parquet(path: Path, spec: str, text_field: str) -> tuple[list[Row], list[str]]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a damaged file
        return [], [f"{spec}: not a readable parquet file ({err})"]
    return [Row(f"{spec} row {i}", r) for i, r in enumerate(records, start=1)], []


def _read_txt(path: Path, spec: str, text_field: str) -> tuple[list[Row], list[str]]:
    """Plain text: each block of lines separated by a blank line is one row of ``text_field``."""
    lines, problems = _decode_lines(path, spec)
    rows, block, first = [], [], 0
    for number, text in lines + [(len(lines) + 1, "")]:
        if text.strip():
            first = first or number
            block.append(text)
        elif block:
            rows.append(Row(f"{spec} line {first}", {text_field: "\n".join(block)}))
            block, first = [], 0
    return rows, problems


def _read_saved_dataset(spec: str, path: Path, split: str) -> Source:
    import datasets

    if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return Source(spec, [], [f"{spec}: a folder, but not one written by datasets.save_to_disk; "
                                 "point data.* at a file or at such a folder"])
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # a damaged or partial save raises any of several types
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return Source(spec, [], [f"{spec}: a datasets.save_to_disk folder that cannot be read ({reason}); save it "
                                 "again"])
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            return Source(spec, [], [f"{spec}: has splits {', '.join(loaded)} but no '{split}'; "
                                     f"point data.{split} at one split folder"])
        loaded = loaded[split]
    rows = [Row(f"{spec} row {i}", dict(r)) for i, r in enumerate(loaded, start=1)]
    return Source(spec, rows, [], hashlib.sha256(loaded._fingerprint.encode()).hexdigest())


def _read_hub(spec: str, split: str) -> Source:
    import datasets

    name, _, config = spec.removeprefix("hf:").partition(":")
    try:
        loaded = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # offline, missing repo or split: all become one line for the user
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return Source(spec, [], [f"{spec}: could not load split '{split}' through datasets.load_dataset ({reason}); "
                                 "offline, save it with save_to_disk where you have internet and pass that folder"])
    rows = [Row(f"{spec} row {i}", dict(r)) for i, r in enumerate(loaded, start=1)]
    return Source(spec, rows, [], hashlib.sha256(loaded._fingerprint.encode()).hexdigest())


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


READERS: dict[str, Reader] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": lambda path, spec, _field: _read_delimited(path, spec, ","),
    ".tsv": lambda path, spec, _field: _read_delimited(path, spec, "\t"),
    ".parquet": _read_parquet,
    ".txt": _read_txt,
}
