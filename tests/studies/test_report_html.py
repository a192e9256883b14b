"""The HTML report without training: every value from a run folder escaped, layouts that fit, worse
results flagged. Folders are written by hand in the shape tunelab writes them (tests/report_fixtures.py)."""

import itertools
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from report_fixtures import (
    IMG,
    SCRIPT,
    bakeoff_row,
    metric_row,
    quantization_report,
    write_bakeoff,
    write_run,
    write_sweep,
)
from tunelab.studies import report
from tunelab.studies.charts import COLORS, LABEL_CHARS, WORSE_COLOR, bar_chart, line_chart

EVIL = [SCRIPT, IMG]


class Tags(HTMLParser):
    """Every start tag with its attributes, and which open elements surround each table."""

    def __init__(self):
        super().__init__()
        self.tags, self.open, self.tables = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append(list(self.open))
        if tag not in ("br", "hr", "meta", "rect", "line", "circle", "polyline"):
            self.open.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                break


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def assert_inert(html: str) -> None:
    """No markup from the data: no script or img element, no event-handler attribute, no raw tag text."""
    tags = parse(html)
    assert not [t for t, _ in tags.tags if t in ("script", "img", "iframe", "object", "embed")]
    assert not [(t, a) for t, attrs in tags.tags for a in attrs if a.lower().startswith("on")]
    lowered = html.lower()
    assert "<script" not in lowered and "<img" not in lowered


def evil_run(folder):
    labels = [f"label {SCRIPT}", IMG, "plain"]
    metrics = {f"acc{SCRIPT}": metric_row(0.5, 0.7, [0.1, 0.3]), IMG: metric_row(0.6, 0.4, [-0.3, -0.1])}
    predictions = [{"input": SCRIPT, "reference": IMG, "base_output": f"base {SCRIPT}", "tuned_output": IMG}]
    return write_run(folder, labels=labels, metrics=metrics, split=SCRIPT, examples=IMG, predictions=predictions,
                     quantization=quantization_report(variant=SCRIPT, machine=IMG))


def test_run_values_are_escaped(tmp_path):
    html = report.render_html([report.load_source(evil_run(tmp_path / f"run{SCRIPT}"))])
    assert_inert(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    text = "".join(html.split("<h3>Confusion")[1:])
    assert "&lt;img" in text  # the labels are in the matrix, escaped


def test_run_section_alone_is_escaped(tmp_path):
    """The app inserts a section's HTML into its page (innerHTML): the section must be safe on its own."""
    source = report.load_source(evil_run(tmp_path / "run"))
    assert_inert(report.SECTIONS["run"](source))


def test_bakeoff_values_are_escaped(tmp_path):
    rows = [bakeoff_row(SCRIPT, metric=IMG), bakeoff_row(IMG, tuned=0.3, delta_ci95=(-0.4, -0.1), metric=IMG),
            {"method": SCRIPT, "learning_rate": 1e-3, "error": IMG}]
    folder = write_bakeoff(tmp_path / f"b{IMG}", rows=rows, split=SCRIPT)
    html = report.render_html([report.load_source(folder)])
    assert_inert(html)
    assert html.count("&lt;script&gt;") >= 3


def test_sweep_values_are_escaped(tmp_path):
    folder = write_sweep(tmp_path / "sweep", key=f"lora.{SCRIPT}", value=IMG, recommendation=f"use {SCRIPT}")
    html = report.render_html([report.load_source(folder)])
    assert_inert(html)
    assert "use &lt;script&gt;" in html and "lora.&lt;script&gt;" in html


def test_numbers_that_are_not_numbers_are_escaped(tmp_path):
    folder = write_run(tmp_path / "run")
    source = report.load_source(folder)
    source["eval"]["confusion_matrix"]["tuned"][0][0] = SCRIPT
    source["eval"]["metrics"]["accuracy"]["ci95"] = [SCRIPT, IMG]
    assert_inert(report.render_html([source]))


def test_charts_escape_titles_series_and_labels():
    charts = [bar_chart(f"title {SCRIPT}", [(IMG, 1.0, (0.5, 1.5)), (SCRIPT, 2.0, None)], unit=IMG),
              line_chart(IMG, {SCRIPT: [(0, 1.0), (1, 0.5)], IMG: [(0, 2.0)]}, x_label=SCRIPT)]
    for svg in charts:
        assert_inert(svg)
        ET.fromstring(svg)  # still well-formed
        assert "&lt;" in svg


# --- the charts: matplotlib SVG, inline ------------------------------------------------------------------------
# The charts keep their text as <text> (svg.fonttype "none"), so tick labels are read here as text. matplotlib
# names each tick's group "xtick_N" / "ytick_N" (and every id gets a per-chart prefix): a tick is one such group.

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, re.S)


def named(root, name: str) -> list:
    """The <g> elements matplotlib named ``name``_N, under their per-chart prefix."""
    return [g for g in root.iter(SVG + "g") if re.fullmatch(rf"c[0-9a-f]{{10}}-{name}_\d+", g.get("id") or "")]


def tick_labels(svg: str, axis: str) -> list[str]:
    return ["".join(g.itertext()).strip() for g in named(ET.fromstring(svg), f"{axis}tick")]


def plotted(svg: str, name: str) -> list:
    """The axes' own ``name`` groups (data lines, bars): not the ones inside ticks or the legend."""
    [axes] = named(ET.fromstring(svg), "axes")
    return [g for g in axes if re.search(rf"-{name}_\d+$", g.get("id") or "")]


def data_markers(svg: str) -> list:
    """The <use> elements that place a marker on a data point."""
    return [use for line in plotted(svg, "line2d") for use in line.iter(SVG + "use")]


def bar_fills(svg: str) -> list[str]:
    """The fill colour of each bar, top to bottom (not the axes' white background, not the unfilled spines)."""
    paths = [g.find(SVG + "path") for g in plotted(svg, "patch")]
    bars = [(float(re.findall(r"[\d.]+", path.get("d"))[1]), fill.group(1)) for path in paths
            if (fill := re.search(r"fill: (#[0-9a-f]{6})", path.get("style"))) and fill.group(1) != "#ffffff"]
    return [fill for _, fill in sorted(bars)]


def text_boxes(svg: str) -> list[tuple[str, float, float, float, float]]:
    """(text, left, top, right, bottom) of each <text>, measured with the font the chart was laid out in."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    boxes = []
    for node in ET.fromstring(svg).iter(SVG + "text"):
        style = dict(part.split(": ", 1) for part in node.get("style").split("; "))
        content, size = "".join(node.itertext()), float(style["font-size"].removesuffix("px"))
        font = FontProperties(family="DejaVu Sans", size=size, weight=style.get("font-weight", "normal"))
        width, height, descent = TextToPath().get_text_width_height_descent(content, font, ismath=False)
        # One line of text has x and y; each line of a wrapped one is moved there with translate(x y).
        x, y = (float(node.get("x")), float(node.get("y"))) if node.get("x") else \
            map(float, re.search(r"translate\(([-\d.]+) ([-\d.]+)\)", node.get("transform")).groups())
        start = {"middle": -width / 2, "end": -width}.get(style.get("text-anchor"), 0.0)
        if "rotate(-90" in (node.get("transform") or ""):  # an axis label written bottom to top
            boxes.append((content, x - height + descent, y - start - width, x + descent, y - start))
        else:
            boxes.append((content, x + start, y - height + descent, x + start + width, y + descent))
    return boxes


def overlapping(boxes):
    return [(a[0], b[0]) for a, b in itertools.combinations(boxes, 2)
            if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]


LONG_TITLE = "macro_f1_over_a_rather_long_metric_name: base vs tuned (tuned with 95% CI), tuned worse than base"
LONG_LABELS = [(f"a-very-long-method-name-{i}-with-a-suffix", 10.0 + i * 1234.567, None) for i in range(12)]
CHARTS = {
    "base highest": lambda: bar_chart("accuracy: base vs tuned (tuned with 95% CI)",
                                      [("base", 0.9, None), ("tuned", 0.5, (0.45, 0.62))],
                                      colors=[COLORS[0], WORSE_COLOR]),
    "CI reaches the top": lambda: bar_chart(LONG_TITLE, [("base", 0.5, None), ("tuned", 0.8, (0.6, 0.99))]),
    "negative values": lambda: bar_chart("delta by method", [("lora", -0.25, (-0.4, -0.1)),
                                                             ("full", 0.1, (-0.05, 0.2))]),
    "many long labels": lambda: bar_chart("train seconds by method", LONG_LABELS),
    "one bar": lambda: bar_chart("peak RSS (MiB) by method", [("lora", 812.25, None)]),
    "line with legend": lambda: line_chart(LONG_TITLE, {"train loss with a long series name": [(0, 2.0), (10, 1.0)],
                                                        "validation loss of the held-out split": [(5, 1.5), (10, 1.2)],
                                                        "a third series": [(0, 0.5)]}),
    "one point": lambda: line_chart("loss curves", {"validation loss": [(4, 0.8)]}),
}


@pytest.fixture(scope="module")
def charts():
    return {name: draw() for name, draw in CHARTS.items()}


@pytest.mark.parametrize("name", CHARTS)
def test_charts_have_ticks_with_labels_on_both_axes(charts, name):
    svg = charts[name]
    for axis in "xy":
        labels = tick_labels(svg, axis)
        assert len(labels) >= 1 and all(labels), (axis, labels)
    assert len(tick_labels(svg, "x")) >= 3  # the value axis (or the steps) has a scale to read


@pytest.mark.parametrize("name", CHARTS)
def test_chart_texts_never_overlap_and_stay_inside(charts, name):
    svg = charts[name]
    width, height = (float(v) for v in ET.fromstring(svg).get("viewBox").split()[2:])
    boxes = text_boxes(svg)
    assert overlapping(boxes) == []
    for content, left, top, right, bottom in boxes:
        assert 0 <= left and right <= width and 0 <= top and bottom <= height, content


def test_long_category_labels_get_a_row_each_and_are_kept_in_full(charts):
    svg = charts["many long labels"]
    labels = tick_labels(svg, "y")
    assert len(labels) == 12 and all(len(label) <= LABEL_CHARS for label in labels)
    assert labels[0] == LONG_LABELS[0][0][:LABEL_CHARS - 1] + "\u2026"  # first bar on top
    rows = sorted(top for content, _, top, _, _ in text_boxes(svg) if content in labels)
    assert min(b - a for a, b in zip(rows, rows[1:])) > 9 * 1.3  # a line of 9px text and a gap between rows
    assert "a-very-long-method-name-11-with-a-suffix: 13,590" in svg  # in full in the description


def test_a_one_point_series_draws_a_marker(charts):
    svg = charts["one point"]
    [marker] = data_markers(svg)
    defined = {node.get("id") for node in ET.fromstring(svg).iter() if node.get("id")}
    assert marker.get(XLINK_HREF)[1:] in defined
    assert tick_labels(svg, "x") == ["3", "4", "5"]  # a view around the one step, with whole steps only


def test_a_one_epoch_run_shows_both_losses_as_points(tmp_path):
    steps = [{"step": 3, "epoch": 1.0, "loss": 0.9}, {"step": 3, "epoch": 1.0, "eval_loss": 0.8}]
    html = report.render_html([report.load_source(write_run(tmp_path / "run", steps=steps))])
    loss = svgs(html)[0]
    assert 'aria-label="loss curves"' in loss
    assert [m.get("style").split(";")[0] for m in data_markers(loss)] == [f"fill: {COLORS[0]}", f"fill: {COLORS[1]}"]
    assert "train loss" in loss and "validation loss" in loss  # the legend


def test_several_series_get_a_legend_and_one_does_not(charts):
    def legend_texts(svg):
        return [[text.text for text in g.iter(SVG + "text")] for g in named(ET.fromstring(svg), "legend")]

    [legend] = legend_texts(charts["line with legend"])
    assert legend == ["train loss with a long series n\u2026", "validation loss of the held-out\u2026", "a third series"]
    assert legend_texts(charts["one point"]) == []


def test_report_inlines_one_svg_per_chart(tmp_path):
    folder = write_run(tmp_path / "run", quantization=quantization_report())
    html = report.render_html([report.load_source(folder)])
    charts = svgs(html)
    titles = [ET.fromstring(svg).get("aria-label") for svg in charts]
    assert titles == ["loss curves", "accuracy: base vs tuned (tuned with 95% CI)",
                      "macro_f1: base vs tuned (tuned with 95% CI)", "latency at batch 8 (ms, median)",
                      "weights in memory (MiB)"]
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    for svg in charts:
        assert len(tick_labels(svg, "x")) >= 3 and tick_labels(svg, "y")
        assert "max-width:100%" in ET.fromstring(svg).get("style")  # shrinks with a narrow page
    assert tick_labels(charts[1], "y") == ["base", "tuned"]


def study_page(tmp_path) -> str:
    run = write_run(tmp_path / "run", quantization=quantization_report())
    rows = [bakeoff_row("lora"), bakeoff_row("full", tuned=0.3, delta_ci95=(-0.4, -0.05))]
    sources = [report.load_source(run), report.load_source(write_bakeoff(tmp_path / "bakeoff", rows=rows))]
    return report.render_html(sources)


def test_charts_refer_to_nothing_outside_themselves(tmp_path):
    html = study_page(tmp_path)
    everywhere = []
    for svg in svgs(html):
        nodes = list(ET.fromstring(svg).iter())
        ids = [node.get("id") for node in nodes if node.get("id")]
        everywhere += ids
        for node in nodes:
            assert not node.tag.endswith(("image", "foreignObject", "script")), node.tag
            for name, value in node.attrib.items():
                assert "//" not in value, (name, value)
                if name.endswith("href"):
                    assert value[1:] in ids, value
                for target in re.findall(r"url\(([^)]*)\)", value):
                    assert target[1:] in ids, target
        assert "@import" not in svg and "@font-face" not in svg
    assert len(everywhere) > 100 and len(set(everywhere)) == len(everywhere)  # no chart uses another's clip path


def test_the_same_report_renders_byte_identical(tmp_path):
    first = study_page(tmp_path)
    assert study_page(tmp_path) == first
    assert "<dc:date>" not in first and "<metadata>" not in first


def test_charts_drawn_at_once_from_several_threads_match(charts):
    """The app renders dashboards from several threads: each chart still comes out the same."""
    from concurrent.futures import ThreadPoolExecutor

    names = ["one point", "many long labels", "base highest", "line with legend"] * 2
    with ThreadPoolExecutor(4) as pool:
        drawn = list(pool.map(lambda name: CHARTS[name](), names))
    assert drawn == [charts[name] for name in names]


def test_importing_the_report_leaves_matplotlib_unloaded():
    code = "import sys, tunelab.studies.report; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# --- tables fit the page ---------------------------------------------------------------------------------------

def test_confusion_matrix_with_many_labels_scrolls_in_its_own_box(tmp_path):
    labels = [f"customer support category number {i} with a long name" for i in range(40)]
    html = report.render_html([report.load_source(write_run(tmp_path / "run", labels=labels))])
    tags = parse(html)
    [matrix] = [i for i, (t, a) in enumerate(tags.tags) if t == "table" and a.get("class") == "confusion"]
    heads = [a for t, a in tags.tags[matrix:] if t == "th" and a.get("title")]
    assert {a["title"] for a in heads} == set(labels)
    shown = re.findall(r'<div style="writing-mode:vertical-rl[^"]*">([^<]*)</div>', html)
    assert len(shown) == 40 and max(map(len, shown)) <= report.CONFUSION_HEADER_CHARS
    assert shown[3] == labels[3][:report.CONFUSION_HEADER_CHARS - 1] + "\u2026"


def test_every_table_sits_in_a_box_that_scrolls(tmp_path):
    labels = [f"label {i}" for i in range(30)]
    sources = [report.load_source(write_run(tmp_path / "run", labels=labels,
                                            quantization=quantization_report())),
               report.load_source(write_bakeoff(tmp_path / "bakeoff")),
               report.load_source(write_sweep(tmp_path / "sweep"))]
    tags = parse(report.render_html(sources))
    assert len(tags.tables) >= 6
    for ancestors in tags.tables:
        styles = [a.get("style") or "" for t, a in ancestors if t == "div"]
        assert any("overflow:auto" in s and "max-width:100%" in s for s in styles)


# --- a tuned model worse than its base -------------------------------------------------------------------------

def worse_run(tmp_path):
    metrics = {"accuracy": metric_row(0.8, 0.6, [-0.3, -0.1]),        # worse, CI excludes 0
               "macro_f1": metric_row(0.5, 0.7, [0.1, 0.3]),          # better
               "perplexity": metric_row(10.0, 12.5, [-0.5, 4.0], lower_is_better=None),  # worse, not significant
               "mean_loss": metric_row(2.3, 2.1, [-0.3, -0.1], lower_is_better=True)}   # better (lower)
    return write_run(tmp_path / "run", metrics=metrics)


def test_worse_than_base_is_said_in_words_and_colour(tmp_path):
    html = report.render_html([report.load_source(worse_run(tmp_path))])
    warnings = re.findall(r'<p class="worse[^"]*" style="([^"]*)">([^<]*)</p>', html)
    assert len(warnings) == 2
    by_metric = {text.split(" on ")[1].split(" ")[0]: (style, text) for style, text in warnings}
    assert set(by_metric) == {"accuracy", "perplexity"}
    style, text = by_metric["accuracy"]
    assert "color:#c5221f" in style and "significantly worse than base on accuracy" in text
    assert "-0.2" in text and "[-0.3, -0.1]" in text
    style, text = by_metric["perplexity"]
    assert "significantly" not in text and "worse than base on perplexity" in text and "lower is better" in text
    assert "+2.5" in text and "CI includes 0" in text
    rows = re.findall(r'<tr class="worse" style="background:#fce8e6"><td>([^<]*)</td>', html)
    assert rows == ["accuracy", "perplexity"]
    charts = {ET.fromstring(svg).get("aria-label").split(":")[0]: svg for svg in svgs(html)}
    assert bar_fills(charts["accuracy"]) == [COLORS[0], WORSE_COLOR]  # the tuned bar in red, with a legend
    assert "worse than base" in charts["accuracy"]
    assert bar_fills(charts["macro_f1"]) == [COLORS[0], COLORS[1]] and WORSE_COLOR not in charts["macro_f1"]


def test_better_results_raise_no_warning(tmp_path):
    html = report.render_html([report.load_source(write_run(tmp_path / "run"))])
    assert "worse" not in html.split("<style>")[1].split("</style>")[1]


def test_worse_in_markdown_and_bakeoff(tmp_path):
    md = report.render_markdown([report.load_source(worse_run(tmp_path))])
    assert "**Warning:** tuned is significantly worse than base on accuracy" in md
    assert "**Warning:** tuned is worse than base on perplexity" in md
    rows = [bakeoff_row("lora"), bakeoff_row("full", tuned=0.3, delta_ci95=(-0.4, -0.05)),
            bakeoff_row("qlora", tuned=12.0, base=10.0, delta_ci95=(0.5, 3.0), metric="perplexity"),
            bakeoff_row("dora", tuned=9.0, base=10.0, delta_ci95=(-2.0, -0.5), metric="perplexity")]
    html = report.render_html([report.load_source(write_bakeoff(tmp_path / "bakeoff", rows=rows))])
    warnings = re.findall(r'<p class="worse significant"[^>]*>([^<]*)</p>', html)
    assert len(warnings) == 2
    assert "full (tuned) is significantly worse than base on accuracy" in warnings[0]
    assert "qlora (tuned) is significantly worse than base on perplexity" in warnings[1]
    quality_chart = svgs(html)[0]
    fills = bar_fills(quality_chart)
    assert [f == WORSE_COLOR for f in fills] == [False, True, True, False]  # full and qlora in red, no other bar


@pytest.mark.parametrize("delta, ci, lower, expected", [
    (-0.1, [-0.2, -0.01], False, "significant"),
    (-0.1, [-0.2, 0.05], False, "worse"),
    (0.1, [0.05, 0.2], False, None),
    (0.1, [0.05, 0.2], True, "significant"),
    (0.1, [-0.05, 0.2], True, "worse"),
    (-0.1, [-0.2, -0.05], True, None),
    (0.0, [-0.1, 0.1], False, None),
])
def test_worse_than_base_honours_the_direction_of_the_metric(delta, ci, lower, expected):
    finding = report.worse_than_base("m", delta, ci, lower)
    if expected is None:
        assert finding is None
    else:
        assert finding["significant"] == (expected == "significant")
