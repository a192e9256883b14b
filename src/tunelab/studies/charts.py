"""Small inline-SVG charts for self-contained HTML reports (no scripts, no external files).

Layout, top to bottom: a title band (the title, shortened to the width if need be; the full
title is the chart's tooltip), a legend band when there is a legend, then the plot area with
some headroom, so value labels (drawn inside the plot area) never reach the title or legend.
Every text comes from run folders and is escaped.
"""

from __future__ import annotations

from html import escape

COLORS = ["#3367d6", "#e8710a", "#1e8e3e", "#d93025", "#9334e6", "#12b5cb", "#f9ab00", "#5f6368"]
WORSE_COLOR = "#d93025"
WIDTH, HEIGHT, PAD = 560, 260, 54
TITLE_SIZE, LEGEND_SIZE, LABEL_SIZE = 12, 11, 10
TITLE_BAND, LEGEND_ROW = 24, 18
HEADROOM = 16  # between the bands and the highest point plotted, for the value labels
# Average glyph width as a share of the font size: a generous estimate for sans-serif digits and text.
GLYPH = 0.62


BOLD = 1.1  # bold glyphs are about this much wider


def text_width(text: str, size: float, bold: bool = False) -> float:
    return len(text) * size * GLYPH * (BOLD if bold else 1.0)


def fit(text: str, width: float, size: float, bold: bool = False) -> str:
    """``text`` shortened with an ellipsis so that it takes at most ``width`` pixels."""
    text = str(text)
    if text_width(text, size, bold) <= width:
        return text
    keep = max(int(width / (size * GLYPH * (BOLD if bold else 1.0))) - 1, 0)
    return text[:keep] + "\u2026" if keep else ""


def _compact(value: float, digits: int) -> str:
    """1234.5 -> '1.2k' (digits=2): large numbers in few characters."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def _scale(value: float, low: float, high: float, out_low: float, out_high: float) -> float:
    if high == low:
        return (out_low + out_high) / 2
    return out_low + (value - low) * (out_high - out_low) / (high - low)


def _header(title: str, legend: list[tuple[str, str]] = ()) -> tuple[str, float]:
    """The title and legend markup, and the y below which the plot area may start."""
    parts = [f'<text x="8" y="{TITLE_BAND - 8}" font-size="{TITLE_SIZE}" font-weight="bold">'
             f"{escape(fit(title, WIDTH - 16, TITLE_SIZE, bold=True))}</text>"]
    bottom, x, row = TITLE_BAND, 8.0, 0
    for name, color in legend:
        label = fit(name, WIDTH - 40, LEGEND_SIZE)
        width = 14 + text_width(label, LEGEND_SIZE)
        if x > 8 and x + width > WIDTH - 8:
            x, row = 8.0, row + 1
        y = TITLE_BAND + LEGEND_ROW * row
        parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="10" height="10" fill="{escape(color)}"/>'
                     f'<text x="{x + 14:.1f}" y="{y + 12}" font-size="{LEGEND_SIZE}">{escape(label)}</text>')
        x += width + 16
        bottom = y + LEGEND_ROW
    return "".join(parts), bottom


def _frame(title: str, header: str, body: str) -> str:
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'style="max-width:100%;height:auto" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>{header}{body}</svg>")


def _axis_labels(low: float, high: float, top: float, bottom: float) -> str:
    ticks = [low + (high - low) * i / 4 for i in range(5)]
    return "".join(f'<text x="{PAD - 6}" y="{_scale(t, low, high, bottom, top) + 4:.1f}" font-size="{LABEL_SIZE}" '
                   f'text-anchor="end">{escape(_number_label(t, PAD - 8, 3))}</text>' for t in ticks)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step") -> str:
    """One polyline per named series of (x, y) points."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(min(ys), 0.0), max(ys)
    drawn = [(name, COLORS[i % len(COLORS)], values) for i, (name, values) in enumerate(series.items()) if values]
    legend = [(name, color) for name, color, _ in drawn]
    header, band = _header(title, legend)
    top, bottom, left, right = band + HEADROOM, HEIGHT - 30, PAD, WIDTH - 16
    axis_text = fit(f"{x_label} ({x0:g} to {x1:g})", right - left, 11)
    body = [f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>',
            _axis_labels(y0, y1, top, bottom),
            f'<text x="{(left + right) / 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">'
            f"{escape(axis_text)}</text>"]
    for _, color, values in drawn:
        path = " ".join(f"{_scale(x, x0, x1, left, right):.1f},{_scale(y, y0, y1, bottom, top):.1f}" for x, y in values)
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        if len(values) == 1:
            x, y = values[0]
            body.append(f'<circle cx="{_scale(x, x0, x1, left, right):.1f}" cy="{_scale(y, y0, y1, bottom, top):.1f}" '
                        f'r="3" fill="{color}"/>')
    return _frame(title, header, "".join(body))


def _number_label(value: float, room: float, digits: int = 4) -> str:
    """``value`` as precisely as ``room`` pixels allow ('' if nothing fits)."""
    plain = [f"{value:.{d}g}" for d in range(digits, 2, -1)]
    candidates = [t for t in plain if "e+" not in t] + [_compact(value, d) for d in (3, 2, 1)]
    return next((text for text in candidates if text_width(text, LABEL_SIZE) <= room), "")


def bar_chart(title: str, bars: list[tuple[str, float, tuple[float, float] | None]], unit: str = "",
              colors: list[str] | None = None) -> str:
    """Vertical bars with optional error bars: (label, value, (low, high) or None).

    ``colors`` overrides the bars' colours (one per bar), e.g. to mark a worse result in red.
    """
    if not bars:
        return ""
    high = max(0.0, max(max(v, (ci or (v, v))[1]) for _, v, ci in bars))
    low = min(0.0, min(min(v, (ci or (v, v))[0]) for _, v, ci in bars))
    if high == low:
        high = 1.0
    header, band = _header(title)
    # Value labels go above a bar, or below it when it points down: room for those below too.
    top, bottom = band + HEADROOM, HEIGHT - 40 - (HEADROOM if low < 0 else 0)
    slot = (WIDTH - PAD - 16) / len(bars)
    zero = _scale(0.0, low, high, bottom, top)
    body = [f'<line x1="{PAD}" y1="{zero:.1f}" x2="{WIDTH - 16}" y2="{zero:.1f}" stroke="#999"/>',
            _axis_labels(low, high, top, bottom)]
    for i, (label, value, ci) in enumerate(bars):
        color = colors[i] if colors and i < len(colors) else COLORS[i % len(COLORS)]
        x = PAD + slot * i + slot * 0.2
        y = _scale(value, low, high, bottom, top)
        body.append(f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{slot * 0.6:.1f}" height="{abs(zero - y):.1f}" '
                    f'fill="{escape(color)}"><title>{escape(str(label))}: {value:.4g}{escape(unit)}</title></rect>')
        center = x + slot * 0.3
        ends = [y]
        if ci:
            y_low, y_high = (_scale(c, low, high, bottom, top) for c in ci)
            ends += [y_low, y_high]
            body.append(f'<line x1="{center:.1f}" y1="{y_low:.1f}" x2="{center:.1f}" y2="{y_high:.1f}" '
                        f'stroke="#202124" stroke-width="1.5"/>')
        shown = _number_label(value, slot - 4)
        if shown:
            label_y = min(ends + [zero]) - 4 if value >= 0 else max(ends + [zero]) + LABEL_SIZE + 2
            body.append(f'<text x="{center:.1f}" y="{label_y:.1f}" font-size="{LABEL_SIZE}" '
                        f'text-anchor="middle">{escape(shown)}</text>')
        body.append(f"<g><title>{escape(str(label))}</title>"
                    f'<text x="{center:.1f}" y="{HEIGHT - 24}" font-size="{LABEL_SIZE}" text-anchor="middle">'
                    f"{escape(fit(label, slot - 4, LABEL_SIZE))}</text></g>")
    return _frame(title, header, "".join(body))
