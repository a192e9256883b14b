"""Charts for the self-contained HTML report: matplotlib figures rendered to SVG and inlined.

Each chart is one ``<svg>`` element with axes, ticks and tick labels, a ``<title>`` (the tooltip and
the accessible name) and a ``<desc>`` holding every value and every label in full, since labels on
the chart itself are shortened to fit. Nothing refers to anything outside the element: text stays
``<text>`` (DejaVu Sans where installed, else the reader's sans-serif, usually narrower), and the
only references (``xlink:href="#..."``, ``url(#...)``) point at definitions inside the same chart.
Their ids carry a prefix hashed from the chart, so several charts on one page (the report, or a
dashboard in the app) do not take each other's clip paths or markers; two charts share ids only
when they are byte-identical, the same data drawn twice, and then each id names the same shape.

The output is deterministic (no date, no version, a fixed id salt): the same inputs give the same
bytes. matplotlib is imported on first use, so importing tunelab stays fast, and only its SVG
canvas is used: no pyplot, no global backend.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import textwrap
import threading
from contextlib import contextmanager
from html import escape

COLORS = ["#3367d6", "#e8710a", "#1e8e3e", "#d93025", "#9334e6", "#12b5cb", "#f9ab00", "#5f6368"]
WORSE_COLOR = "#d93025"
# Default colours of series and bars: red is kept for "worse than base", and only that.
PALETTE = [c for c in COLORS if c != WORSE_COLOR]
BAR_COLOR = COLORS[0]  # bars are told apart by their labels: one colour unless the caller gives a meaning
INK, GRID = "#202124", "#dadce0"

WIDTH_PX = 640  # the charts' width on the page (they shrink with it: max-width:100%)
LINE_HEIGHT_PX = 300
BAR_HEIGHT_PX, BAR_ROW_PX = 110, 28  # a bar chart grows with its number of bars, so labels never crowd
TITLE_CHARS = 72  # longer titles wrap onto more lines
LABEL_CHARS = 32  # longer category labels and legend entries are shortened (in full in the <desc>)
MAX_MARKERS = 40  # a long curve marks only about this many of its points

RC = {
    "svg.fonttype": "none",  # text as <text>: small, selectable and searchable; no glyph definitions
    "svg.hashsalt": "tunelab",  # the default salt is random per render: ids, and so bytes, would change
    "text.parse_math": False,  # labels come from run folders: "$" is a dollar sign, not mathtext
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # bundled with matplotlib: the same layout on every machine
    "font.size": 9,
    "axes.edgecolor": "#5f6368",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.color": GRID,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 9,
}
# No <metadata> at all: no date (same bytes every time), no version, no links to vocabularies.
METADATA = dict.fromkeys(("Date", "Creator", "Format", "Type"))
# rcParams are process-wide and the app renders dashboards from several threads at once.
_RENDER_LOCK = threading.Lock()


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step") -> str:
    """One line per named series of (x, y) points, with a marker on each point ('' when no points).

    Markers make a series of one point (a one-epoch run's validation loss) visible; a long series
    is marked at about ``MAX_MARKERS`` of its points. Several series get a legend below the plot.
    """
    drawn = [(str(name), PALETTE[i % len(PALETTE)], _points(values))
             for i, (name, values) in enumerate(series.items())]
    drawn = [(name, color, points) for name, color, points in drawn if points]
    if not drawn:
        return ""
    with _matplotlib() as (figure_class, ticker):
        figure = _figure(figure_class, LINE_HEIGHT_PX)
        axes = figure.add_subplot()
        lines = [axes.plot(*zip(*points), color=color, linewidth=1.6, marker="o", markersize=4,
                           markevery=max(1, len(points) // MAX_MARKERS))[0]
                 for _, color, points in drawn]
        _title(figure, title)
        axes.set_xlabel(str(x_label))
        axes.grid(True)
        _step_axis(axes, ticker, [x for _, _, points in drawn for x, _ in points])
        axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: _tick(value)))
        if len(drawn) > 1:
            figure.legend(lines, [_shorten(name) for name, _, _ in drawn], loc="outside lower center",
                          ncols=min(len(drawn), 3))
        else:
            axes.set_ylabel(_shorten(drawn[0][0]))
        summary = "; ".join(f"{name}: {len(points)} point(s), {x_label} {points[0][0]:g} to {points[-1][0]:g}, "
                            f"last {_value_text(points[-1][1])}" for name, _, points in drawn)
        return _svg(figure, title, summary)


def bar_chart(title: str, bars: list[tuple[str, float, tuple[float, float] | None]], unit: str = "",
              colors: list[str] | None = None) -> str:
    """Horizontal bars with optional 95% intervals: (label, value, (low, high) or None); '' when no bars.

    Horizontal, so category labels of any length sit on their own rows and never collide. Each bar
    is labelled with its value (plus ``unit``). ``colors`` overrides the bars' colours (one per bar),
    e.g. ``WORSE_COLOR`` to mark a result worse than base, which then gets a legend entry.
    """
    if not bars:
        return ""
    rows = [(str(label), _number(value), _interval(ci)) for label, value, ci in bars]
    fills = [colors[i] if colors and i < len(colors) else BAR_COLOR for i in range(len(rows))]
    with _matplotlib() as (figure_class, ticker):
        figure = _figure(figure_class, BAR_HEIGHT_PX + BAR_ROW_PX * len(rows) + 14 * _title_lines(title))
        axes = figure.add_subplot()
        _draw_bars(axes, rows, fills, unit)
        axes.grid(True, axis="x")
        axes.set_axisbelow(True)
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: _tick(value)))
        if unit:
            axes.set_xlabel(str(unit))
        _title(figure, title)
        if WORSE_COLOR in fills:
            from matplotlib.patches import Patch

            figure.legend([Patch(color=WORSE_COLOR)], ["worse than base"], loc="outside lower right")
        summary = "; ".join(f"{label}: {_value_text(value, unit)}"
                            + (f" (95% CI {_value_text(ci[0])} to {_value_text(ci[1])})" if ci else "")
                            for label, value, ci in rows)
        return _svg(figure, title, summary)


def _step_axis(axes, ticker, xs: list[float]) -> None:
    """Whole-number x values (steps) get whole-number ticks only, also around a single step."""
    if not all(x.is_integer() for x in xs):
        return
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if min(xs) == max(xs):  # the default view of one point spans 0.2: widen it so whole steps show
        axes.set_xlim(xs[0] - 1, xs[0] + 1)


def _draw_bars(axes, rows: list[tuple[str, float | None, tuple[float, float] | None]], fills: list[str],
               unit: str) -> None:
    """One bar a row, first on top, each with its interval and its value at its end."""
    places = range(len(rows))
    axes.barh(places, [value or 0.0 for _, value, _ in rows], height=0.6, color=fills)
    for place, (_, value, ci) in zip(places, rows):
        if ci:  # a line with end caps: unlike errorbar, fine with a value outside its interval
            axes.plot(ci, (place, place), color=INK, linewidth=1.3, marker="|", markersize=8)
        _value_label(axes, place, value, ci, unit)
    axes.set_yticks(places, [_shorten(label) for label, _, _ in rows])
    axes.tick_params(axis="y", length=0)
    axes.invert_yaxis()  # the first bar on top, as in the table above the chart
    axes.axvline(0.0, color="#5f6368", linewidth=0.8)
    axes.margins(x=0.14)  # room for the value labels beyond the longest bar


@contextmanager
def _matplotlib():
    """matplotlib's Figure class and ticker module, with this module's settings, one chart at a time."""
    import warnings

    import matplotlib
    from matplotlib import ticker
    from matplotlib.figure import Figure

    with _RENDER_LOCK, matplotlib.rc_context(RC), warnings.catch_warnings():
        # A label in a script DejaVu Sans lacks: the browser draws it in a font that has it.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield Figure, ticker


def _figure(figure_class, height_px: float):
    """A figure ``WIDTH_PX`` wide whose layout makes room for every title, label and legend."""
    # SVG output is in points (72 per inch) and a CSS pixel is 3/4 of a point: inches = pixels / 96.
    return figure_class(figsize=(WIDTH_PX / 96, height_px / 96), layout="constrained")


def _svg(figure, title: str, summary: str) -> str:
    """The figure as one inline ``<svg>`` element: no XML prolog, unique ids, a title and a description."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer, metadata=METADATA)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):].strip()  # the prolog and DOCTYPE are not allowed inside HTML
    svg = _prefix_ids(svg, "c" + hashlib.sha256(svg.encode()).hexdigest()[:10] + "-")
    # matplotlib's stylesheet says "*{...}": inline in a page it would style every element there.
    svg = svg.replace('<style type="text/css">*{', '<style type="text/css">svg.tunelab-chart *{', 1)
    opening = svg.index(">") + 1
    label = escape(str(title))
    return (svg[:opening - 1] + f' class="tunelab-chart" role="img" aria-label="{label}" '
            'style="max-width:100%;height:auto">'
            f"<title>{label}</title><desc>{escape(summary)}</desc>" + svg[opening:])


def _prefix_ids(svg: str, prefix: str) -> str:
    """Every id, and every reference to one, with ``prefix`` in front.

    matplotlib numbers its groups from 1 in every figure (figure_1, axes_1, xtick_1, ...) and names
    clip paths and markers after their shape, so two charts on a page would share ids, and a chart
    could clip to another one's rectangle. The prefix is a hash of the chart, so it is the same on
    every render. Only tags are rewritten: a label that reads 'id="x"' is text between tags, where
    matplotlib has escaped every '<' and '>'.
    """
    def tag(match: re.Match) -> str:
        text = re.sub(r'(\sid=")', rf"\1{prefix}", match.group(0))
        text = re.sub(r'(href="#)', rf"\1{prefix}", text)
        return re.sub(r"(url\(#)", rf"\1{prefix}", text)

    return re.sub(r"<[^>]*>", tag, svg)


def _title(figure, title: str) -> None:
    """The title at the figure's top left, wrapped: it spans the whole width whatever the labels take."""
    figure.suptitle(textwrap.fill(str(title), TITLE_CHARS), x=0.01, ha="left", fontsize=10, fontweight="bold")


def _title_lines(title: str) -> int:
    return len(textwrap.wrap(str(title), TITLE_CHARS)) or 1


def _value_label(axes, place: int, value: float | None, ci: tuple[float, float] | None, unit: str) -> None:
    """The bar's value just beyond its end, or beyond its interval when that reaches further out."""
    end = value or 0.0
    if ci:
        end = max(end, *ci) if end >= 0 else min(end, *ci)
    right = end >= 0
    axes.annotate(_value_text(value, unit).replace("-", "\u2212"), (end, place), xytext=(4 if right else -4, 0),
                  textcoords="offset points", ha="left" if right else "right", va="center", color=INK)


def _value_text(value: float | None, unit: str = "") -> str:
    """4 significant digits, whole numbers from 10,000 up (13,591 rather than 1.359e+04)."""
    if value is None:
        return "n/a"
    return (f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}") + str(unit)


def _tick(value: float) -> str:
    """A tick label in a few characters: 0.25, 7500, 15k, 2.5M (with a true minus sign)."""
    text = f"{value:.4g}"
    for threshold, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= threshold:
            text = f"{value / scale:.3g}{suffix}"
            break
    return text.replace("-", "\u2212")


def _shorten(text: str, chars: int = LABEL_CHARS) -> str:
    text = str(text)
    return text if len(text) <= chars else text[:chars - 1] + "\u2026"


def _number(value) -> float | None:
    """``value`` as a finite float, or None for anything else read from a run folder."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _interval(ci) -> tuple[float, float] | None:
    if not ci or len(ci) != 2:
        return None
    low, high = (_number(c) for c in ci)
    return None if low is None or high is None else (low, high)


def _points(values) -> list[tuple[float, float]]:
    """The (x, y) pairs whose both coordinates are numbers."""
    pairs = [(_number(x), _number(y)) for x, y in values]
    return [(x, y) for x, y in pairs if x is not None and y is not None]
