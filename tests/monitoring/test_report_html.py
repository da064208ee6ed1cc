"""The HTML report renders offline: tables, one SVG per column, no remote resources."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np

from civicml.monitoring import drift_report, render_html
from tests.monitoring.conftest import make_frame


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_renders_self_contained(rng: np.random.Generator) -> None:
    ref, cur = make_frame(rng, 3000, drifted=False), make_frame(rng, 2000, drifted=True)
    ref.loc[ref.index[:5], "region"] = None
    report = drift_report(ref, cur)
    html = render_html(report)

    parser = _Collector()
    parser.feed(html)
    tags = parser.tags
    rows = [a for t, a in tags if t == "tr" and a.get("class") == "col-row"]
    assert len(rows) == report.n_columns == 6
    assert sum(1 for t, _ in tags if t == "svg") == report.n_columns
    assert sum(1 for t, _ in tags if t == "title") >= report.n_columns + 1
    assert all(a.get("role") == "img" for t, a in tags if t == "svg")
    assert any(t == "th" and a.get("scope") == "col" for t, a in tags)
    assert any(t == "meta" and a.get("name") == "viewport" for t, a in tags)
    assert not any(t in {"script", "link", "img", "iframe"} for t, _ in tags)
    assert "http://" not in html
    assert "https://" not in html
    assert "Dataset drift detected" in html or "No dataset drift" in html
    for column in report.columns:
        assert column.column in html


def test_report_escapes_column_names() -> None:
    import pandas as pd

    frame = pd.DataFrame({"<b>x</b>": np.arange(50.0), "c": ["<i>"] * 50})
    html = render_html(drift_report(frame, frame))
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<i>" not in html
