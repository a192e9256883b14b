"""Small inline-SVG charts for self-contained HTML reports (no scripts, no external files)."""

from __future__ import annotations

from html import escape

COLORS = ["#3367d6", "#e8710a", "#1e8e3e", "#d93025", "#9334e6", "#12b5cb", "#f9ab00", "#5f6368"]
WIDTH, HEIGHT, PAD = 560, 260, 48


def _scale(value: float, low: float, high: float, out_low: float, out_high: float) -> float:
    if high == low:
        return (out_low + out_high) / 2
    return out_low + (value - low) * (out_high - out_low) / (high - low)


def _frame(title: str, body: str, legend: list[tuple[str, str]] = ()) -> str:
    keys = "".join(f'<rect x="{WIDTH - 240 + 120 * i}" y="6" width="10" height="10" fill="{color}"/>'
                   f'<text x="{WIDTH - 226 + 120 * i}" y="15" font-size="11">{escape(name)}</text>'
                   for i, (name, color) in enumerate(legend))
    heading = f'<text x="8" y="15" font-size="12" font-weight="bold">{escape(title)}</text>'
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>{heading}{keys}{body}</svg>')


def _axis_labels(low: float, high: float, top: float, bottom: float) -> str:
    ticks = [low + (high - low) * i / 4 for i in range(5)]
    return "".join(f'<text x="{PAD - 6}" y="{_scale(t, low, high, bottom, top) + 4:.1f}" font-size="10" '
                   f'text-anchor="end">{t:.3g}</text>' for t in ticks)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step") -> str:
    """One polyline per named series of (x, y) points."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(min(ys), 0.0), max(ys)
    top, bottom, left, right = 28, HEIGHT - 30, PAD, WIDTH - 16
    body = [f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>', _axis_labels(y0, y1, top, bottom),
            f'<text x="{(left + right) / 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">{escape(x_label)} '
            f'({x0:g} to {x1:g})</text>']
    legend = []
    for i, (name, values) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        legend.append((name, color))
        path = " ".join(f"{_scale(x, x0, x1, left, right):.1f},{_scale(y, y0, y1, bottom, top):.1f}" for x, y in values)
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        if len(values) == 1:
            x, y = values[0]
            body.append(f'<circle cx="{_scale(x, x0, x1, left, right):.1f}" cy="{_scale(y, y0, y1, bottom, top):.1f}" '
                        f'r="3" fill="{color}"/>')
    return _frame(title, "".join(body), legend)


def bar_chart(title: str, bars: list[tuple[str, float, tuple[float, float] | None]], unit: str = "") -> str:
    """Vertical bars with optional error bars: (label, value, (low, high) or None)."""
    if not bars:
        return ""
    high = max(max(v, (ci or (v, v))[1]) for _, v, ci in bars) or 1.0
    low = min(0.0, min(min(v, (ci or (v, v))[0]) for _, v, ci in bars))
    top, bottom = 28, HEIGHT - 40
    slot = (WIDTH - PAD - 16) / len(bars)
    body = [f'<line x1="{PAD}" y1="{bottom}" x2="{WIDTH - 16}" y2="{bottom}" stroke="#999"/>',
            _axis_labels(low, high, top, bottom)]
    zero = _scale(0.0, low, high, bottom, top)
    for i, (label, value, ci) in enumerate(bars):
        x = PAD + slot * i + slot * 0.2
        y = _scale(value, low, high, bottom, top)
        body.append(f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{slot * 0.6:.1f}" height="{abs(zero - y):.1f}" '
                    f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(label)}: {value:.4g}{unit}</title></rect>')
        center = x + slot * 0.3
        if ci:
            y_low, y_high = (_scale(c, low, high, bottom, top) for c in ci)
            body.append(f'<line x1="{center:.1f}" y1="{y_low:.1f}" x2="{center:.1f}" y2="{y_high:.1f}" '
                        f'stroke="#202124" stroke-width="1.5"/>')
        body.append(f'<text x="{center:.1f}" y="{y - 4:.1f}" font-size="10" text-anchor="middle">{value:.4g}</text>')
        body.append(f'<text x="{center:.1f}" y="{HEIGHT - 24}" font-size="10" text-anchor="middle">'
                    f'{escape(label[:18])}</text>')
    return _frame(title, "".join(body))
