"""Self-contained HTML rendering of a :class:`~civicml.monitoring.schemas.DriftReport`.

One page, no network: inline CSS, inline SVG plots drawn here (overlaid histograms of reference
vs. current for numeric columns, paired bars of the top values for categorical ones), no
scripts, fonts or CDNs. Each plot has a ``<title>`` and ``<desc>``; the tables have header
cells with ``scope``; the layout reflows on a phone. The JSON form is
``report.model_dump_json()``.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

from civicml.core.html_page import report_template
from civicml.monitoring.schemas import ColumnDrift, DriftReport

__all__ = ["render_html"]

_REF = "#2563eb"  # blue
_CUR = "#c2410c"  # orange; both ≥ 4.5:1 on white
_W, _H, _PAD_L, _PAD_B, _PAD_T = 360, 170, 44, 26, 10


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _svg_open(i: int, title: str, desc: str, height: int) -> str:
    return (
        f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" '
        f'aria-labelledby="svg-t{i} svg-d{i}" preserveAspectRatio="xMidYMid meet">'
        f'<title id="svg-t{i}">{escape(title)}</title><desc id="svg-d{i}">{escape(desc)}</desc>'
    )


def _histogram_svg(i: int, col: ColumnDrift) -> str:
    h = col.histogram
    title = f"Distribution of {col.column}: reference (blue) vs current (orange)"
    if h is None or not h.edges:
        return _empty_svg(i, col)
    top = max(*h.reference_share, *h.current_share, 1e-12)
    plot_w, plot_h = _W - _PAD_L - 8, _H - _PAD_B - _PAD_T
    bw = plot_w / len(h.reference_share)
    parts = [
        _svg_open(
            i,
            title,
            f"Histogram with {len(h.reference_share)} bins from {_num(h.edges[0])} to "
            f"{_num(h.edges[-1])}; tallest bin holds {_pct(top)} of values.",
            _H,
        )
    ]
    for shares, colour in ((h.reference_share, _REF), (h.current_share, _CUR)):
        for k, share in enumerate(shares):
            bh = plot_h * share / top
            parts.append(
                f'<rect x="{_PAD_L + k * bw:.1f}" y="{_PAD_T + plot_h - bh:.1f}" '
                f'width="{max(bw - 1, 0.5):.1f}" height="{bh:.1f}" fill="{colour}" '
                f'fill-opacity="0.5"><title>{_num(h.edges[k])} to {_num(h.edges[k + 1])}: '
                f"{_pct(share)}</title></rect>"
            )
    base_y = _PAD_T + plot_h
    parts.append(
        f'<line x1="{_PAD_L}" y1="{base_y}" x2="{_W - 8}" y2="{base_y}" stroke="#444"/>'
        f'<text x="{_PAD_L}" y="{_H - 8}" font-size="11">{escape(_num(h.edges[0]))}</text>'
        f'<text x="{_W - 8}" y="{_H - 8}" font-size="11" text-anchor="end">'
        f"{escape(_num(h.edges[-1]))}</text>"
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + 10}" font-size="11" text-anchor="end">'
        f"{_pct(top)}</text></svg>"
    )
    return "".join(parts)


def _bars_svg(i: int, col: ColumnDrift) -> str:
    values = col.top_values or []
    if not values:
        return _empty_svg(i, col)
    row = 26
    height = row * len(values) + 12
    top = max(max(v.reference_share, v.current_share) for v in values) or 1.0
    label_w, plot_w = 110, _W - 110 - 50
    parts = [
        _svg_open(
            i,
            f"Top values of {col.column}: reference (blue) vs current (orange)",
            "; ".join(
                f"{v.value}: {_pct(v.reference_share)} vs {_pct(v.current_share)}" for v in values
            ),
            height,
        )
    ]
    for k, v in enumerate(values):
        y = 6 + k * row
        label = v.value if len(v.value) <= 16 else v.value[:15] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        for j, (share, colour) in enumerate(((v.reference_share, _REF), (v.current_share, _CUR))):
            bw = plot_w * share / top
            yy = y + j * 11
            parts.append(
                f'<rect x="{label_w}" y="{yy}" width="{bw:.1f}" height="10" fill="{colour}">'
                f"<title>{escape(v.value)} ({'reference' if j == 0 else 'current'}): "
                f"{_pct(share)}</title></rect>"
                f'<text x="{label_w + bw + 4:.1f}" y="{yy + 9}" font-size="10">'
                f"{_pct(share)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _empty_svg(i: int, col: ColumnDrift) -> str:
    return (
        _svg_open(i, f"No plot for {col.column}", col.note or "No values to plot.", 40)
        + f'<text x="8" y="24" font-size="12">{escape(col.note or "No values to plot.")}</text>'
        "</svg>"
    )


_TEMPLATE = (
    """{% extends "page.html" %}
{% block style %}
.verdict { padding: .75rem 1rem; border-radius: .5rem; font-weight: 600; margin: 1rem 0; }
.drift { background: #fde8e8; color: #8a1111; border: 1px solid #e5a3a3; }
.ok { background: #e6f4ea; color: #14532d; border: 1px solid #9ccaa9; }
.unjudged { background: #fff7e0; color: #5c4400; border: 1px solid #e0c36b; }
.badge { display: inline-block; padding: .1rem .5rem; border-radius: 1rem; font-size: .85rem;
  font-weight: 600; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
.cards { grid-template-columns: repeat(auto-fill, minmax(18rem, 1fr)); }
.key { display: inline-block; width: .8rem; height: .8rem; vertical-align: middle;
  margin: 0 .25rem 0 .5rem; }
.ref { background: """
    + _REF
    + """; opacity: .6; }
.cur { background: """
    + _CUR
    + """; opacity: .6; }
{% endblock %}
{% block body %}
<main>
<h1>{{ title }}</h1>
<p>Reference: {{ "{:,}".format(r.reference_rows) }} rows · Current:
 {{ "{:,}".format(r.current_rows) }} rows · {{ r.n_columns }} columns compared.</p>
{% if r.verdict == "insufficient_data" %}
<p class="verdict unjudged" role="status">Insufficient data: {{ r.insufficient_data }}.
 No column is judged, so this report says neither "drift" nor "no drift"; the statistics below
 are shown for information only.</p>
{% else %}
<p class="verdict {{ 'drift' if r.dataset_drift else 'ok' }}" role="status">
{% if r.dataset_drift %}Dataset drift detected{% else %}No dataset drift{% endif %}:
 {{ r.n_drifted }} of {{ r.n_columns }} columns drifted ({{ pct(r.share_drifted) }});
 the threshold is {{ pct(r.drift_share) }}.</p>
{% endif %}

<h2 id="summary">Columns</h2>
<div class="scroll">
<table>
<caption class="visually-hidden">Per-column drift tests</caption>
<thead><tr>
<th scope="col">Column</th><th scope="col">Kind</th><th scope="col">Test</th>
<th scope="col">Statistic</th><th scope="col">p-value</th><th scope="col">Threshold</th>
<th scope="col">Verdict</th><th scope="col">PSI</th><th scope="col">Missing (ref)</th>
<th scope="col">Missing (cur)</th><th scope="col">Type violations</th>
</tr></thead>
<tbody>
{% for c in r.columns %}<tr class="col-row">
<th scope="row"><a href="#col-{{ loop.index }}">{{ c.column }}</a></th><td>{{ c.kind }}</td>
<td>{{ c.stattest_label }}</td><td class="n">{{ num(c.statistic) }}</td>
<td class="n">{{ num(c.p_value) }}</td><td class="n">{{ num(c.threshold) }}</td>
<td>{{ badge(c) }}</td>
<td class="n">{{ num(c.psi) }}</td><td class="n">{{ pct(c.missing_share_reference) }}</td>
<td class="n">{{ pct(c.missing_share_current) }}</td><td class="n">{{ c.type_violations }}</td>
</tr>
{% endfor %}</tbody>
</table>
</div>

<h2 id="violations">Constraint violations</h2>
{% if r.violations %}
<div class="scroll">
<table>
<thead><tr><th scope="col">Column</th><th scope="col">Check</th>
<th scope="col">Description</th></tr></thead>
<tbody>
{% for v in r.violations %}<tr class="violation-row"><th scope="row">{{ v.feature_name }}</th>
<td><code>{{ v.constraint_check_type }}</code></td><td>{{ v.description }}</td></tr>
{% endfor %}</tbody>
</table>
</div>
{% else %}<p>None.</p>{% endif %}

<h2 id="plots">Distributions</h2>
<p><span class="key ref"></span>reference <span class="key cur"></span>current</p>
<div class="cards">
{% for c, svg in plots %}<figure id="col-{{ loop.index }}">
<figcaption><strong>{{ c.column }}</strong> —
{{ badge(c) }}
{{ c.stattest_label }} {{ num(c.drift_score) }} (threshold {{ num(c.threshold) }})
{% if c.note %}<br>{{ c.note }}{% endif %}</figcaption>
{{ svg }}
</figure>
{% endfor %}</div>
</main>
{% endblock %}
"""
)

_COMPILED = report_template(_TEMPLATE)


def render_html(report: DriftReport, *, title: str = "Data drift report") -> str:
    """The report as one self-contained HTML page (no external resources).

    Args:
        report: from :func:`~civicml.monitoring.drift.drift_report`.
        title: page heading.

    Returns:
        The HTML text; write it to a ``.html`` file.
    """
    plots = [
        (c, Markup(_histogram_svg(i, c) if c.kind == "numeric" else _bars_svg(i, c)))  # noqa: S704
        for i, c in enumerate(report.columns, start=1)
    ]
    return _COMPILED.render(r=report, plots=plots, title=title, num=_num, pct=_pct, badge=_badge)


def _badge(col: ColumnDrift) -> Markup:
    """The column's verdict as a badge: Drift, No drift, or Not judged (too few values)."""
    if col.drift_detected is None:
        return Markup('<span class="badge unjudged">Not judged</span>')
    if col.drift_detected:
        return Markup('<span class="badge drift">Drift</span>')
    return Markup('<span class="badge ok">No drift</span>')
