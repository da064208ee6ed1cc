"""Self-contained HTML rendering of a :class:`~civicml.evaluation.schemas.BiasReport`.

One page, no network: inline CSS and one inline SVG bar chart per metric (a bar per facet value,
drawn from the parity line — 0, or 1 for DI — so bars to the right of it are above parity), no
scripts, fonts or CDNs. Every user-supplied string (column names, facet values, notes) is
escaped. Each plot has a ``<title>`` and ``<desc>``; tables have header cells with ``scope``.
The JSON form is ``report.model_dump_json()``.

The metrics table is transposed, one table per facet column: a row per metric (up to 13 of
them) and a column per facet value, so it fits the page (a facet with many values scrolls
inside its own box, never the page). SVGs are drawn at their size in CSS pixels and only shrink,
so their labels stay 10-11 px.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

from civicml.core.html_page import report_template
from civicml.evaluation.schemas import BiasFacetResult, BiasMetric, BiasReport

__all__ = ["render_bias_html"]

_POS = "#6d28d9"  # above parity: violet; below: teal; both ≥ 4.5:1 on white
_NEG = "#0f766e"
_W, _ROW, _LABEL_W, _VALUE_W, _PAD = 420, 22, 150, 56, 8


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _metric_svg(i: int, code: str, rows: list[tuple[str, BiasMetric]]) -> str:
    """Horizontal bars of one metric, one per facet value, around the parity line."""
    parity = rows[0][1].parity
    spread = max((abs(m.value - parity) for _, m in rows if m.value is not None), default=0.0)
    spread = spread or 1.0
    height = _ROW * len(rows) + 2 * _PAD + 14
    plot_w = _W - _LABEL_W - _VALUE_W
    mid = _LABEL_W + plot_w / 2
    desc = "; ".join(f"{label}: {_num(m.value)}" for label, m in rows)
    parts = [
        f'<svg viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" role="img" '
        f'class="metric-plot" '
        f'aria-labelledby="bt{i} bd{i}" preserveAspectRatio="xMidYMid meet">'
        f'<title id="bt{i}">{escape(code)} by facet value (parity {_num(parity)})</title>'
        f'<desc id="bd{i}">{escape(desc)}</desc>'
    ]
    for k, (label, m) in enumerate(rows):
        y = _PAD + k * _ROW
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 15}" font-size="11" text-anchor="end">'
            f"{escape(_short(label))}<title>{escape(label)}</title></text>"
        )
        if m.value is None:
            parts.append(
                f'<text x="{mid + 4:.1f}" y="{y + 15}" font-size="11" fill="#555">n/a'
                f"<title>{escape(m.note or 'undefined')}</title></text>"
            )
            continue
        delta = m.value - parity
        w = (plot_w / 2 - 4) * abs(delta) / spread
        x = mid if delta >= 0 else mid - w
        colour = _POS if delta >= 0 else _NEG
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{_ROW - 8}" '
            f'fill="{colour}"><title>{escape(label)}: {escape(code)} = {_num(m.value)}</title>'
            f'</rect><text x="{_W - _VALUE_W + 4}" y="{y + 15}" font-size="11">'
            f"{_num(m.value)}</text>"
        )
    base = _PAD + len(rows) * _ROW
    parts.append(
        f'<line x1="{mid:.1f}" y1="{_PAD - 2}" x2="{mid:.1f}" y2="{base + 2}" stroke="#111" '
        f'stroke-dasharray="3 2"/><text x="{mid:.1f}" y="{base + 14}" font-size="10" '
        f'text-anchor="middle">parity {_num(parity)}</text>'
        f'<text x="{_LABEL_W}" y="{base + 14}" font-size="10">{_num(parity - spread)}</text>'
        f'<text x="{_W - _VALUE_W}" y="{base + 14}" font-size="10" text-anchor="end">'
        f"{_num(parity + spread)}</text></svg>"
    )
    return "".join(parts)


_TEMPLATE = """{% extends "page.html" %}
{% block style %}
.cards { grid-template-columns: repeat(auto-fill, minmax(min(100%, 28rem), 1fr)); }
.muted { color: #555; font-size: .85rem; }
svg.metric-plot { display: block; max-width: 100%; height: auto; }
table.metrics { width: auto; min-width: 50%; }
table.metrics th, table.metrics td { overflow-wrap: anywhere; }
th.n { text-align: right; }
th .muted { font-weight: normal; }
{% endblock %}
{% block body %}
<main>
<h1>{{ title }}</h1>
<p>{{ 'Pre-training (observed labels)' if r.stage == 'pre_training'
      else 'Post-training (predicted labels)' }} ·
 label <code>{{ r.label }}</code>, positive = {{ r.positive_label | join(', ') }}
{% if r.predicted %} · predictions from {{ r.prediction_source }} <code>{{ r.predicted }}</code>
{% if r.probability_threshold is not none %}(scores above {{ r.probability_threshold }}){% endif %}
{% endif %}{% if r.group %} · strata <code>{{ r.group }}</code>{% endif %}
 · {{ "{:,}".format(r.n_rows) }} rows.</p>
<p class="muted">Facet d is the facet value named in each row; facet a is every other row
(SageMaker Clarify's convention).</p>
{% if r.notes %}<ul>{% for n in r.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}

<h2 id="summary">Metrics by facet value</h2>
{% for facet, results in by_facet %}<h3>Facet <code>{{ facet }}</code></h3>
<div class="scroll">
<table class="metrics">
<thead><tr><th scope="col">Metric</th>
{% for f in results %}<th scope="col" class="n">{{ f.facet_value }}</th>{% endfor %}</tr></thead>
<tbody>
<tr class="count-row"><th scope="row">n_d (rows in facet d)</th>
{% for f in results %}<td class="n">{{ "{:,}".format(f.n_d) }}</td>{% endfor %}</tr>
<tr class="count-row"><th scope="row">n_a (every other row)</th>
{% for f in results %}<td class="n">{{ "{:,}".format(f.n_a) }}</td>{% endfor %}</tr>
{% for code in codes %}<tr class="metric-row"><th scope="row"><a href="#m-{{ code }}">{{ code }}</a>
 <span class="muted">{{ names[code] }}</span></th>
{% for f in results %}{% set m = f.metric(code) %}<td class="n"
{%- if m.note %} title="{{ m.note }}"{% endif %}>{{ num(m.value) }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
</div>
{% endfor %}
<h2 id="plots">Plots</h2>
<p class="muted">Bars start at the parity line; violet bars are above parity,
teal bars below; whether above is worse depends on the metric (see its reading).</p>
<div class="cards">
{% for code, info, svg in plots %}<figure id="m-{{ code }}">
<figcaption><strong>{{ code }}</strong> — {{ info.name }}<br>
<span class="muted">{{ info.description }} · range {{ info.range }}</span><br>
{{ info.interpretation }}</figcaption>
{{ svg }}
</figure>
{% endfor %}</div>

{% if undefined %}<h2 id="undefined">Undefined values</h2>
<div class="scroll"><table>
<thead><tr><th scope="col">Facet</th><th scope="col">Facet d</th><th scope="col">Metric</th>
<th scope="col">Why</th></tr></thead>
<tbody>{% for f, m in undefined %}<tr><th scope="row">{{ f.facet }}</th>
<td>{{ f.facet_value }}</td><td>{{ m.code }}</td><td>{{ m.note }}</td></tr>{% endfor %}</tbody>
</table></div>{% endif %}
</main>
{% endblock %}
"""

_COMPILED = report_template(_TEMPLATE)


def render_bias_html(report: BiasReport, *, title: str = "Bias report") -> str:
    """The report as one self-contained HTML page (no external resources, no scripts).

    Args:
        report: From :func:`~civicml.evaluation.bias.pretraining_bias` or
            :func:`~civicml.evaluation.bias.posttraining_bias`.
        title: Page heading.

    Returns:
        The HTML text, with one SVG bar chart per metric; write it to a ``.html`` file.
    """
    codes = [m.code for m in report.facets[0].metrics] if report.facets else []
    plots = []
    for i, code in enumerate(codes, start=1):
        rows = [(f"{f.facet} = {f.facet_value}", f.metric(code)) for f in report.facets]
        plots.append((code, rows[0][1], Markup(_metric_svg(i, code, rows))))  # noqa: S704
    undefined = [(f, m) for f in report.facets for m in f.metrics if m.value is None]
    by_facet: dict[str, list[BiasFacetResult]] = {}
    for f in report.facets:
        by_facet.setdefault(f.facet, []).append(f)
    names = {m.code: m.name for m in report.facets[0].metrics} if report.facets else {}
    return _COMPILED.render(
        r=report,
        codes=codes,
        names=names,
        by_facet=list(by_facet.items()),
        plots=plots,
        undefined=undefined,
        title=title,
        num=_num,
    )
