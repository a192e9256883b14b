"""The HTML report without training: every value from a run folder escaped, layouts that fit, worse
results flagged. Folders are written by hand in the shape tunelab writes them (tests/report_fixtures.py)."""

import itertools
import re
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
from tunelab.studies.charts import HEIGHT, WIDTH, bar_chart, line_chart

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


# --- layout of the charts -------------------------------------------------------------------------------------

def text_boxes(svg: str) -> list[tuple[str, float, float, float, float]]:
    """(text, left, top, right, bottom) of each <text>, from its font size (average glyph 0.6 em)."""
    boxes = []
    for node in ET.fromstring(svg).iter("text"):
        content = "".join(node.itertext())
        size = float(node.get("font-size"))
        x, y, width = float(node.get("x")), float(node.get("y")), len(content) * size * 0.6
        left = {"middle": x - width / 2, "end": x - width}.get(node.get("text-anchor"), x)
        boxes.append((content, left, y - size, left + width, y + 0.3 * size))
    return boxes


def shape_tops(svg: str) -> list[float]:
    tops = []
    for node in ET.fromstring(svg).iter():
        if node.tag == "rect":
            tops.append(float(node.get("y")))
        elif node.tag == "line":
            tops.append(min(float(node.get("y1")), float(node.get("y2"))))
        elif node.tag == "circle":
            tops.append(float(node.get("cy")) - float(node.get("r")))
        elif node.tag == "polyline":
            tops.append(min(float(p.split(",")[1]) for p in node.get("points").split()))
    return tops


def overlapping(boxes):
    return [(a[0], b[0]) for a, b in itertools.combinations(boxes, 2)
            if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]


LONG_TITLE = "macro_f1_over_a_rather_long_metric_name: base vs tuned (tuned with 95% CI), tuned worse than base"
CHARTS = {
    "base highest": bar_chart("accuracy: base vs tuned (tuned with 95% CI)",
                              [("base", 0.9, None), ("tuned", 0.5, (0.45, 0.62))]),
    "CI reaches the top": bar_chart(LONG_TITLE, [("base", 0.5, None), ("tuned", 0.8, (0.6, 0.99))]),
    "negative values": bar_chart("delta by method", [("lora", -0.25, (-0.4, -0.1)), ("full", 0.1, (-0.05, 0.2))]),
    "many long labels": bar_chart("train seconds by method",
                                  [(f"a-very-long-method-name-{i}", 10.0 + i * 1234.567, None) for i in range(12)]),
    "one bar": bar_chart("peak RSS (MiB) by method", [("lora", 812.25, None)]),
    "line with legend": line_chart(LONG_TITLE, {"train loss with a long series name": [(0, 2.0), (10, 1.0)],
                                                "validation loss of the held-out split": [(5, 1.5), (10, 1.2)],
                                                "a third series": [(0, 0.5)]}),
}


@pytest.mark.parametrize("name", CHARTS)
def test_chart_texts_never_overlap_and_stay_inside(name):
    svg = CHARTS[name]
    boxes = text_boxes(svg)
    assert overlapping(boxes) == []
    for content, left, top, right, bottom in boxes:
        assert 0 <= left and right <= WIDTH and 0 <= top and bottom <= HEIGHT, content


@pytest.mark.parametrize("name", CHARTS)
def test_title_has_a_band_of_its_own(name):
    svg = CHARTS[name]
    title = text_boxes(svg)[0]
    assert title[2] < 10  # the first text is the title, at the top
    assert all(top >= title[4] for top in shape_tops(svg))


def test_long_labels_are_shortened_with_the_full_text_kept():
    svg = CHARTS["many long labels"]
    shown = [b[0] for b in text_boxes(svg)]
    assert not any("a-very-long-method-name-11" == s for s in shown)
    assert "<title>a-very-long-method-name-11</title>" in svg
    assert f"<title>{LONG_TITLE}</title>" in CHARTS["line with legend"]


def test_charts_scale_down_with_the_page():
    svg = CHARTS["one bar"]
    root = ET.fromstring(svg)
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}" and "max-width:100%" in root.get("style")


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
    accuracy_chart = html.split('aria-label="accuracy: base vs tuned')[1].split("</svg>")[0]
    assert 'fill="#d93025"' in accuracy_chart  # the tuned bar in red
    f1_chart = html.split('aria-label="macro_f1: base vs tuned')[1].split("</svg>")[0]
    assert 'fill="#d93025"' not in f1_chart


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
    quality_chart = html.split("<svg")[1].split("</svg>")[0]
    assert quality_chart.count('fill="#d93025"') == 2  # full and qlora in red, no other bar


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
