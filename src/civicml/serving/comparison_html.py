"""Self-contained HTML of a :class:`~civicml.serving.comparison.ShadowComparison`.

One page that loads nothing (the shared skeleton of :mod:`civicml.core.html_page`): the
recommendation and its reasons first, then agreement, score differences, latency of each side as
paired bars (inline SVG with a title and a description), and the most frequent disagreements.
The JSON form is ``comparison.model_dump_json()``.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

from civicml.core.html_page import report_template
from civicml.serving.comparison import LatencySummary, ShadowComparison

__all__ = ["render_html"]

_LIVE = "#2563eb"  # blue
_SHADOW = "#c2410c"  # orange; both >= 4.5:1 on white

_TEMPLATE = """{% extends "page.html" %}
{% block style %}
.verdict { font-weight: 600; padding: .5rem .75rem; border-radius: .4rem; display: inline-block; }
.promote { background: #dcfce7; color: #14532d; }
.hold { background: #fee2e2; color: #7f1d1d; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dt { font-weight: 600; }
{% endblock %}
{% block body %}<main>
<h1>{{ title }}</h1>
<p class="verdict {{ 'promote' if c.recommendation == 'promote' else 'hold' }}">
{{ 'Promote' if c.recommendation == 'promote' else 'Do not promote' }}</p>
<ul>{% for reason in c.reasons %}<li>{{ reason }}</li>{% endfor %}</ul>
<h2>What was compared</h2>
<dl>
<dt>Shadow</dt><dd>{{ c.shadow_variant }}{% if c.shadow_model %}
 ({{ c.shadow_model }}){% endif %}</dd>
<dt>Live</dt><dd>{{ c.live_variants | join(', ') or '—' }}{% if c.live_models %}
 ({{ c.live_models | join(', ') }}){% endif %}</dd>
<dt>Task</dt><dd>{{ c.task }}</dd>
<dt>Pairs</dt><dd>{{ c.pairs }}</dd>
<dt>Shadow records</dt><dd>{{ c.shadow_records }} ({{ c.shadow_errors }} failed,
 {{ c.unpaired }} without a captured live answer)</dd>
</dl>
<h2>Agreement</h2>
<p>{% if c.agreement_rate is none %}No pairs to compare.{% else %}
{{ c.agreements }} of {{ c.pairs }} pairs agree: <strong>{{ pct(c.agreement_rate) }}</strong>
(required: {{ pct(c.min_agreement) }}{% if c.task == 'regression' %}; values agree within
{{ num(c.tolerance) }} &times; max(1, |live|){% endif %}).{% endif %}</p>
{% if c.score_differences %}
<div class="scroll"><table>
<caption>Absolute score differences per pair</caption>
<tr><th scope="col">mean</th><th scope="col">p50</th><th scope="col">p90</th>
<th scope="col">p99</th><th scope="col">max</th></tr>
<tr>{% for v in [s.mean_abs, s.p50, s.p90, s.p99, s.max_abs] %}<td class="n">{{ num(v) }}</td>
{% endfor %}</tr>
</table></div>{% endif %}
<h2>Latency</h2>
<figure><figcaption>Model latency of each side (ms)</figcaption>{{ latency_svg }}</figure>
<div class="scroll"><table>
<tr><th scope="col">side</th><th scope="col">records</th><th scope="col">p50 (ms)</th>
<th scope="col">p99 (ms)</th></tr>
<tr><th scope="row">live</th><td class="n">{{ c.live_latency.n }}</td>
<td class="n">{{ num(c.live_latency.p50_ms) }}</td>
<td class="n">{{ num(c.live_latency.p99_ms) }}</td></tr>
<tr><th scope="row">shadow</th><td class="n">{{ c.shadow_latency.n }}</td>
<td class="n">{{ num(c.shadow_latency.p50_ms) }}</td>
<td class="n">{{ num(c.shadow_latency.p99_ms) }}</td></tr>
</table></div>
{% if c.disagreements %}
<h2>Disagreements</h2>
<div class="scroll"><table>
<tr><th scope="col">live said</th><th scope="col">shadow said</th><th scope="col">pairs</th></tr>
{% for d in c.disagreements %}<tr><td>{{ d.live }}</td><td>{{ d.shadow }}</td>
<td class="n">{{ d.count }}</td></tr>{% endfor %}
</table></div>{% endif %}
</main>{% endblock %}
"""
_COMPILED = report_template(_TEMPLATE)


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _latency_svg(live: LatencySummary, shadow: LatencySummary) -> str:
    values = [v for v in (live.p50_ms, live.p99_ms, shadow.p50_ms, shadow.p99_ms) if v]
    top = max(values, default=1.0)
    width, bar_h, pad_l = 360, 16, 90
    rows = [
        ("live p50", live.p50_ms, _LIVE),
        ("shadow p50", shadow.p50_ms, _SHADOW),
        ("live p99", live.p99_ms, _LIVE),
        ("shadow p99", shadow.p99_ms, _SHADOW),
    ]
    height = len(rows) * (bar_h + 8) + 8
    desc = "; ".join(f"{label} {_num(v)} ms" for label, v, _ in rows)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-labelledby="lat-t lat-d" preserveAspectRatio="xMidYMid meet">'
        '<title id="lat-t">Latency of the live and shadow answers</title>'
        f'<desc id="lat-d">{escape(desc)}</desc>'
    ]
    for i, (label, value, colour) in enumerate(rows):
        y = 8 + i * (bar_h + 8)
        w = 0.0 if not value else (width - pad_l - 60) * value / top
        parts.append(
            f'<text x="0" y="{y + 12}" font-size="11">{escape(label)}</text>'
            f'<rect x="{pad_l}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
            f'<text x="{pad_l + w + 4:.1f}" y="{y + 12}" font-size="11">'
            f"{escape(_num(value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(comparison: ShadowComparison, *, title: str = "Shadow comparison") -> str:
    """The comparison as one self-contained HTML page (no external resources)."""
    svg = Markup(_latency_svg(comparison.live_latency, comparison.shadow_latency))  # noqa: S704
    return _COMPILED.render(
        c=comparison,
        s=comparison.score_differences,
        title=title,
        num=_num,
        pct=_pct,
        latency_svg=svg,
    )
