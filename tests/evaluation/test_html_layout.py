"""Layout of the HTML reports (issue 8): the explanation report says which class its
attributions explain, its table headers line up with their cells, its SVG labels keep their
pixel size on a wide page; the bias metrics table fits the page."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from civicml.data.samples import benefit_applications
from civicml.evaluation import posttraining_bias
from civicml.evaluation.explain import explain
from civicml.evaluation.explain_html import explained_output, render_explanation_html
from civicml.evaluation.report_html import render_bias_html
from civicml.training import fit_tabular

FEATURES = ["income", "household_size", "age", "region", "months_at_address"]


class _Layout(HTMLParser):
    """Tables (their header and body rows of cell classes) and SVG / text attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[list[str]]]] = []
        self.svgs: list[dict[str, str | None]] = []
        self.text_sizes: list[str | None] = []
        self._part = "body"
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append({"head": [], "body": []})
        elif tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "body"
        elif tag == "tr":
            self._row = []
            self.tables[-1][self._part].append(self._row)
        elif tag in ("th", "td") and self._row is not None:
            self._row.append(found.get("class") or "")
        elif tag == "svg":
            self.svgs.append(found)
        elif tag == "text":
            self.text_sizes.append(found.get("font-size"))


def _layout(page: str) -> _Layout:
    parser = _Layout()
    parser.feed(page)
    parser.close()
    return parser


def _assert_svgs_keep_their_pixel_size(page: str, layout: _Layout) -> None:
    assert layout.svgs
    for svg in layout.svgs:
        assert svg.get("width") != "100%", svg  # stretched to the page, labels grew to ~30 px
        width, height = int(str(svg["width"])), int(str(svg["height"]))
        assert svg["viewbox"] == f"0 0 {width} {height}", svg  # 1 user unit = 1 CSS px
    assert re.search(r"svg\.[\w-]+ \{[^}]*max-width: 100%; height: auto;", page)  # shrink only
    assert layout.text_sizes and all(s is not None and 9 <= int(s) <= 11 for s in layout.text_sizes)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return benefit_applications(400, seed=3)


def test_the_explanation_report_names_the_class_and_lines_up(data: pd.DataFrame) -> None:
    model = fit_tabular(
        data,
        "eligible",
        algorithm="lightgbm",
        params={"n_estimators": 20},
        seed=1,
        features=FEATURES,
    )
    report = explain(model, data, top_k=2, local_rows=2)
    g = report.global_explanation
    assert (g.target, g.classes, g.outputs) == ("eligible", [0, 1], [1])
    page = render_explanation_html(report)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page))
    assert "The attributions explain class 1, the positive class (eligible = 1), in log-odds" in (
        text
    )
    assert "towards eligible = 1, a negative one towards eligible = 0" in text
    assert "Attributions to eligible = 1: red pushes towards it" in text
    layout = _layout(page)
    [importance] = layout.tables
    [header] = importance["head"]
    assert len(importance["body"]) == len(FEATURES)
    for row in importance["body"]:
        assert len(row) == len(header)  # one header cell per data cell
        assert row[1:] == ["n", "n"] == header[1:]  # numbers and their headers right-aligned
    assert re.search(r"th\.n \{ text-align: right; \}", page)
    _assert_svgs_keep_their_pixel_size(page, layout)


def test_older_explanations_without_target_still_say_the_class(data: pd.DataFrame) -> None:
    model = fit_tabular(data, "eligible", algorithm="logistic", seed=1, features=FEATURES)
    g = explain(model, data, top_k=1, local_rows=1).global_explanation
    old = g.model_copy(update={"target": None, "classes": []})
    assert explained_output(old) == ("class 1, the positive class (class 1)", "in log-odds")
    features = ["household_size", "region", "months_at_address"]
    regression = fit_tabular(data, "age", algorithm="linear", seed=1, features=features)
    value = explain(regression, data, top_k=1, local_rows=1).global_explanation
    assert explained_output(value)[0] == "the predicted value of age"


def test_the_bias_table_fits_the_page(data: pd.DataFrame) -> None:
    frame = data.assign(predicted=(data["income"] < data["income"].median()).astype(int))
    report = posttraining_bias(
        frame,
        label="eligible",
        positive_label=1,
        predicted="predicted",
        facet=["sex", "region"],
        features=["income", "age"],
    )
    page = render_bias_html(report)
    layout = _layout(page)
    by_facet: dict[str, int] = {}
    for f in report.facets:
        by_facet[f.facet] = by_facet.get(f.facet, 0) + 1
    codes = [m.code for m in report.facets[0].metrics]
    metric_tables = layout.tables[: len(by_facet)]
    for table, values in zip(metric_tables, by_facet.values(), strict=True):
        [header] = table["head"]
        # Transposed: one column per facet value (not one per metric), one row per metric.
        assert len(header) == values + 1
        assert len(table["body"]) == len(codes) + 2  # n_d, n_a, then the metrics
        assert all(len(row) == len(header) for row in table["body"])
    assert page.count('<table class="metrics">') == len(by_facet)
    assert page.index("Facet <code>sex</code>") < page.index("Facet <code>region</code>")
    _assert_svgs_keep_their_pixel_size(page, layout)
