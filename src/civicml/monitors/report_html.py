"""Self-contained HTML pages of monitors: one per execution, and one per monitor with its time
series.

The house style of every report (:mod:`civicml.core.html_page`): one file, inline CSS and SVG,
no scripts, fonts or fetches; each plot has a ``<title>`` and ``<desc>``; tables have header
cells with ``scope``. The monitor page plots each figure of the monitor over its executions
(oldest left), with the constraint's threshold as a dashed line where one applies, and marks
executions with violations in red.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from markupsafe import Markup

from civicml.core.html_page import report_template

__all__ = ["render_execution", "render_monitor_page"]

_LINE = "#2563eb"
_BAD = "#b91c1c"
_OK = "#15803d"
_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 420, 180, 52, 10, 12, 28
#: Most series plotted on a monitor's page (its headline figures first).
MAX_SERIES = 12


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value == 0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e6:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def _series_svg(
    i: int, name: str, points: Sequence[tuple[str, float | None, bool]], threshold: float | None
) -> str:
    """A line chart of one figure over executions (label, value, violated)."""
    values = [v for _, v, _ in points if v is not None and math.isfinite(v)]
    if not values:
        desc = "No value in any execution."
        return (
            f'<svg viewBox="0 0 {_W} 40" width="100%" role="img" aria-labelledby="ts-t{i} '
            f'ts-d{i}"><title id="ts-t{i}">{escape(name)}</title><desc id="ts-d{i}">{desc}</desc>'
            f'<text x="8" y="24" font-size="12">{desc}</text></svg>'
        )
    low, high = min(values), max(values)
    if threshold is not None and math.isfinite(threshold):
        low, high = min(low, threshold), max(high, threshold)
    if high == low:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    step = plot_w / max(len(points) - 1, 1)

    def y(value: float) -> float:
        return _PAD_T + plot_h * (1 - (value - low) / (high - low))

    desc = (
        f"{len(points)} executions from {points[0][0]} to {points[-1][0]}; values from "
        f"{_num(min(values))} to {_num(max(values))}; latest {_num(points[-1][1])}"
        + (f"; threshold {_num(threshold)}" if threshold is not None else "")
        + "."
    )
    parts = [
        f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" '
        f'aria-labelledby="ts-t{i} ts-d{i}" preserveAspectRatio="xMidYMid meet">'
        f'<title id="ts-t{i}">{escape(name)} over executions</title>'
        f'<desc id="ts-d{i}">{escape(desc)}</desc>'
    ]
    path: list[str] = []
    for k, (_, value, _) in enumerate(points):
        if value is None or not math.isfinite(value):
            continue
        path.append(f"{'M' if not path else 'L'}{_PAD_L + k * step:.1f},{y(value):.1f}")
    parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{_LINE}" stroke-width="2"/>')
    for k, (label, value, bad) in enumerate(points):
        if value is None or not math.isfinite(value):
            continue
        colour = _BAD if bad else _OK
        parts.append(
            f'<circle cx="{_PAD_L + k * step:.1f}" cy="{y(value):.1f}" r="3.5" fill="{colour}">'
            f"<title>{escape(label)}: {escape(_num(value))}"
            f"{' (violations)' if bad else ''}</title></circle>"
        )
    if threshold is not None and math.isfinite(threshold):
        ty = y(threshold)
        parts.append(
            f'<line x1="{_PAD_L}" y1="{ty:.1f}" x2="{_W - _PAD_R}" y2="{ty:.1f}" '
            f'stroke="{_BAD}" stroke-dasharray="5 4"/>'
            f'<text x="{_W - _PAD_R}" y="{ty - 4:.1f}" font-size="10" text-anchor="end">'
            f"threshold {escape(_num(threshold))}</text>"
        )
    base = _PAD_T + plot_h
    parts.append(
        f'<line x1="{_PAD_L}" y1="{base}" x2="{_W - _PAD_R}" y2="{base}" stroke="#444"/>'
        f'<text x="{_PAD_L - 4}" y="{_PAD_T + 8}" font-size="10" text-anchor="end">'
        f"{escape(_num(high))}</text>"
        f'<text x="{_PAD_L - 4}" y="{base}" font-size="10" text-anchor="end">'
        f"{escape(_num(low))}</text>"
        f'<text x="{_PAD_L}" y="{_H - 8}" font-size="10">{escape(points[0][0])}</text>'
        f'<text x="{_W - _PAD_R}" y="{_H - 8}" font-size="10" text-anchor="end">'
        f"{escape(points[-1][0])}</text></svg>"
    )
    return "".join(parts)


def _bars_svg(
    i: int, label: str, baseline: Mapping[str, float], current: Mapping[str, float]
) -> str:
    """Baseline vs window attribution per feature (paired horizontal bars)."""
    features = sorted(baseline, key=lambda f: (-baseline[f], f))[:15]
    row = 26
    height = row * len(features) + 12
    top = max([*baseline.values(), *current.values(), 1e-12])
    label_w, plot_w = 130, _W - 130 - 60
    parts = [
        f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" '
        f'aria-labelledby="at-t{i} at-d{i}"><title id="at-t{i}">Mean |SHAP| per feature for '
        f"{escape(label)}: baseline (blue) vs window (orange)</title>"
        f'<desc id="at-d{i}">'
        + escape("; ".join(f"{f}: {_num(baseline[f])} vs {_num(current.get(f))}" for f in features))
        + "</desc>"
    ]
    for k, feature in enumerate(features):
        y0 = 6 + k * row
        name = feature if len(feature) <= 18 else feature[:17] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + 15}" font-size="11" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        for j, (value, colour) in enumerate(
            ((baseline[feature], _LINE), (current.get(feature, 0.0), "#c2410c"))
        ):
            width = plot_w * value / top
            parts.append(
                f'<rect x="{label_w}" y="{y0 + j * 11}" width="{width:.1f}" height="10" '
                f'fill="{colour}"><title>{escape(feature)} '
                f"({'baseline' if j == 0 else 'window'}): {escape(_num(value))}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
.status { padding: .75rem 1rem; border-radius: .5rem; font-weight: 600; margin: 1rem 0; }
.bad { background: #fde8e8; color: #8a1111; border: 1px solid #e5a3a3; }
.good { background: #e6f4ea; color: #14532d; border: 1px solid #9ccaa9; }
.none { background: #fff7e0; color: #5c4400; border: 1px solid #e0c36b; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
"""

_EXECUTION = (
    """{% extends "page.html" %}
{% block style %}"""
    + _STYLE
    + """{% endblock %}
{% block body %}
<main>
<h1>{{ title }}</h1>
<p>Monitor <strong>{{ r.monitor }}</strong> ({{ r.type }}) on endpoint {{ r.endpoint }} ·
 window {{ r.window.start }} to {{ r.window.end }} · {{ num(r.records) }} captured records
 {% if r.labeled is not none %}· {{ num(r.labeled) }} with ground truth{% endif %} ·
 baseline {{ r.baseline.dataset.dataset }} v{{ r.baseline.dataset.version }}
 ({{ r.baseline.model.name }} v{{ r.baseline.model.version }}).</p>
<p class="status {{ cls }}" role="status">Status: {{ r.status }}{% if r.violations %} —
 {{ r.violations | length }} violation(s){% endif %}{% if r.note %}. {{ r.note }}{% endif %}
{% if r.error %}. {{ r.error }}{% endif %}</p>

<h2 id="metrics">Figures</h2>
{% if r.metrics %}<div class="scroll"><table>
<caption class="visually-hidden">The execution's figures</caption>
<thead><tr><th scope="col">Figure</th><th scope="col">Value</th>
<th scope="col">Standard deviation</th><th scope="col">Constraint</th></tr></thead>
<tbody>{% for name, value in r.metrics.items() %}<tr><th scope="row">{{ name }}</th>
<td class="n">{{ num(value) }}</td><td class="n">{{ num(sd.get(name)) }}</td>
<td>{{ limits.get(name, "") }}</td></tr>{% endfor %}</tbody></table></div>
{% else %}<p>None.</p>{% endif %}

<h2 id="violations">Violations</h2>
{% if r.violations %}<div class="scroll"><table>
<thead><tr><th scope="col">Check</th><th scope="col">Feature / metric</th>
<th scope="col">Description</th></tr></thead>
<tbody>{% for v in r.violations %}<tr><td><code>{{ v.constraint_check_type }}</code></td>
<th scope="row">{{ v.feature_name or v.metric_name or "" }}{% if v.facet %}
 ({{ v.facet }}={{ v.facet_value }}){% endif %}{% if v.label %} ({{ v.label }}){% endif %}</th>
<td>{{ v.description }}</td></tr>{% endfor %}</tbody></table></div>
{% else %}<p>None.</p>{% endif %}

{% if findings %}<h2 id="bias">Bias metrics with bootstrap intervals</h2>
<div class="scroll"><table><thead><tr><th scope="col">Metric</th><th scope="col">Value</th>
<th scope="col">Interval ({{ pct }})</th><th scope="col">Allowed</th><th scope="col">Verdict</th>
</tr></thead><tbody>{% for f in findings %}<tr><th scope="row">{{ f.metric }}
 {{ f.facet }}={{ f.facet_value }}</th><td class="n">{{ num(f.value) }}</td>
<td class="n">{{ num(f.interval[0]) }} to {{ num(f.interval[1]) }}</td><td>{{ f.allowed }}</td>
<td>{{ "violation" if f.violated else ("not judged" if f.value is none else "within") }}</td>
</tr>{% endfor %}</tbody></table></div>{% endif %}

{% if drift %}<h2 id="drift">Columns</h2>
<p>The drift engine's page with each column's distributions is stored as drift.html.</p>
<div class="scroll"><table><thead><tr><th scope="col">Column</th><th scope="col">Test</th>
<th scope="col">Score</th><th scope="col">Threshold</th><th scope="col">Drift</th></tr></thead>
<tbody>{% for c in drift.columns %}<tr><th scope="row">{{ c.column }}</th>
<td>{{ c.stattest_label }}</td><td class="n">{{ num(c.drift_score) }}</td>
<td class="n">{{ num(c.threshold) }}</td><td>{{ "not judged" if c.drift_detected is none
 else ("yes" if c.drift_detected else "no") }}</td></tr>{% endfor %}</tbody></table></div>
{% endif %}

{% if bars %}<h2 id="attributions">Attributions</h2>
<div class="cards">{% for label, svg in bars %}<figure><figcaption>{{ label }}</figcaption>
{{ svg }}</figure>{% endfor %}</div>{% endif %}
</main>
{% endblock %}
"""
)

_PAGE = (
    """{% extends "page.html" %}
{% block style %}"""
    + _STYLE
    + """{% endblock %}
{% block body %}
<main>
<h1>{{ title }}</h1>
<p>{{ m.type }} monitor on endpoint {{ m.endpoint }} · {{ schedule }} · window
 {{ num(m.window_s) }} s · baseline {{ m.baseline.dataset.dataset }}
 v{{ m.baseline.dataset.version }} ({{ m.baseline.model.name }} v{{ m.baseline.model.version }})
 · {{ "enabled" if m.enabled else "paused" }}.</p>
{% if latest %}<p class="status {{ cls }}" role="status">Latest execution
 ({{ latest.started_at }}): {{ latest.status }}, {{ latest.violations | length }}
 violation(s).</p>{% else %}<p class="status none" role="status">No execution yet.</p>{% endif %}
<h2 id="series">Over time</h2>
<div class="cards">{% for name, svg in plots %}<figure><figcaption>{{ name }}</figcaption>
{{ svg }}</figure>{% endfor %}</div>
<h2 id="executions">Executions</h2>
<div class="scroll"><table><caption class="visually-hidden">Executions, newest first</caption>
<thead><tr><th scope="col">Started</th><th scope="col">Trigger</th><th scope="col">Status</th>
<th scope="col">Records</th><th scope="col">Violations</th><th scope="col">Note</th></tr>
</thead><tbody>{% for e in executions %}<tr><th scope="row">{{ e.started_at }}</th>
<td>{{ e.trigger }}</td><td>{{ e.status }}</td><td class="n">{{ num(e.records) }}</td>
<td class="n">{{ e.violations | length }}</td><td>{{ e.error or "" }}</td></tr>{% endfor %}
</tbody></table></div>
</main>
{% endblock %}
"""
)

_EXECUTION_T = report_template(_EXECUTION)
_PAGE_T = report_template(_PAGE)


def _status_class(status: str) -> str:
    return {"completed": "good", "completed_with_violations": "bad", "failed": "bad"}.get(
        status, "none"
    )


def render_execution(report: Mapping[str, Any], *, title: str) -> str:
    """One execution's ``report.json`` content as a page."""
    details = report.get("details") or {}
    constraints = details.get("constraints") or {}
    limits = {
        name: f"{rule['comparison_operator']} {rule['threshold']:g}"
        for name, rule in (constraints.get("metrics") or {}).items()
    }
    bars = [
        (label, Markup(_bars_svg(i, label, data["baseline"], data["current"])))  # noqa: S704
        for i, (label, data) in enumerate((details.get("labels") or {}).items(), start=1)
    ]
    confidence = details.get("confidence")
    return _EXECUTION_T.render(
        title=title,
        r=report,
        cls=_status_class(str(report.get("status"))),
        num=_num,
        sd=details.get("standard_deviation") or {},
        limits=limits,
        findings=details.get("findings") or [],
        pct=f"{confidence:.0%}" if isinstance(confidence, float) else "",
        drift=details.get("drift"),
        bars=bars,
    )


def render_monitor_page(
    monitor: Any, executions: Sequence[Any], *, thresholds: Mapping[str, float], schedule: str
) -> str:
    """The monitor's page: a plot per figure over ``executions`` (newest first as given)."""
    ordered = list(reversed(list(executions)))
    names: list[str] = []
    for execution in ordered:
        for name in execution.metrics:
            if name not in names:
                names.append(name)
    names.sort(key=lambda n: ("/" in n, n))
    plots = []
    for i, name in enumerate(names[:MAX_SERIES], start=1):
        points = [
            (
                e.started_at.strftime("%Y-%m-%d %H:%M"),
                e.metrics.get(name),
                e.status.value == "completed_with_violations",
            )
            for e in ordered
        ]
        svg = _series_svg(i, name, points, thresholds.get(name))
        plots.append((name, Markup(svg)))  # noqa: S704
    latest = executions[0] if executions else None
    return _PAGE_T.render(
        title=f"Monitor {monitor.name}",
        m=monitor,
        schedule=schedule,
        latest=latest,
        cls=_status_class(latest.status.value) if latest else "none",
        plots=plots,
        executions=list(executions),
        num=_num,
    )
