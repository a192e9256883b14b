"""Plain-text and Markdown tables for reports printed to a terminal or written to .md files."""

from __future__ import annotations


def fmt(value) -> str:
    """Numbers with sensible precision; None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def signed(value) -> str:
    """A delta with its sign (``+0.0250``); anything else as it is."""
    return f"{value:+.4g}" if is_number(value) else str(value)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def interval(ci) -> str:
    """A confidence interval as ``[-0.01, +0.04]``."""
    return f"[{signed(ci[0])}, {signed(ci[1])}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else str(ci)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in cells)


def replace_marked(text: str, name: str, body: str) -> str:
    """Replace what sits between ``<!-- name -->`` and ``<!-- /name -->`` in ``text`` (markers kept).

    Generated sections of hand-written Markdown pages (results, measured tables) live between such markers.
    """
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"markers {start} ... {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"
