"""Self-contained HTML rendering of a :class:`~civicml.costs.schemas.CostReport`.

One page that loads nothing: the house page skeleton (:mod:`civicml.core.html_page`), a bar
chart of the most expensive rows drawn here as inline SVG (by cost, or by CPU seconds when the
rate card prices nothing), a table of every row, the totals, the rate card and the budgets. No
scripts: the server's Content-Security-Policy forbids them.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

from civicml.core.html_page import report_template
from civicml.costs.schemas import CostLine, CostReport

__all__ = ["render_report"]

_BAR = "#2563eb"  # ≥ 4.5:1 on white
_CHART_ROWS = 15
_ROW_H, _LABEL_W, _W = 22, 220, 720

_TEMPLATE = report_template(
    """{% extends "page.html" %}
{% block style %}
.meta { color: #444; margin: 0 0 1rem; }
.state-warning { color: #92400e; font-weight: 600; }
.state-exceeded { color: #b91c1c; font-weight: 600; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; }
{% endblock %}
{% block body %}<main>
<h1>{{ title }}</h1>
<p class="meta">{{ period }} · grouped by {{ report.by }} · amounts in {{ report.currency }}</p>
<h2>Total</h2>
<dl>
<dt>Cost</dt><dd>{{ money(report.total.cost) }}</dd>
<dt>CPU</dt><dd>{{ hours(report.total.cpu_s) }}</dd>
<dt>GPU</dt><dd>{{ hours(report.total.gpu_s) }}</dd>
<dt>Memory</dt><dd>{{ gb_hours(report.total.memory_gb_s) }}</dd>
<dt>Wall time</dt><dd>{{ hours(report.total.wall_s) }}</dd>
<dt>Storage</dt><dd>{{ size(report.total.storage_bytes) }} (deduplicated by content)</dd>
<dt>Invocations</dt><dd>{{ report.total.invocations }}</dd>
</dl>
{% if report.budgets %}<h2>Budgets ({{ report.budgets[0].month }})</h2>
<div class="scroll"><table>
<tr><th scope="col">Project</th><th scope="col">Budget</th><th scope="col">Spent</th>
<th scope="col">Share</th><th scope="col">State</th><th scope="col">Hard stop</th></tr>
{% for b in report.budgets %}<tr><td>{{ b.budget.project }}</td>
<td class="n">{{ money(b.budget.amount) }}</td><td class="n">{{ money(b.spend) }}</td>
<td class="n">{{ "%.0f" % (100 * b.fraction) }} %</td>
<td class="state-{{ b.state.value }}">{{ b.state.value }}</td>
<td>{{ "yes" if b.budget.hard_stop else "no" }}</td></tr>
{% endfor %}</table></div>{% endif %}
<h2>By {{ report.by }}</h2>
{% if report.lines %}<figure>{{ chart }}</figure>
<div class="scroll"><table>
<tr><th scope="col">{{ report.by|capitalize }}</th><th scope="col">Project</th>
<th scope="col">Cost</th><th scope="col">CPU s</th><th scope="col">GPU s</th>
<th scope="col">Memory GB·h</th><th scope="col">Peak memory</th><th scope="col">Wall s</th>
<th scope="col">Runs</th><th scope="col">Invocations</th><th scope="col">Storage</th></tr>
{% for line in report.lines %}<tr><td>{{ line.name }}<br><small>{{ line.id }}</small></td>
<td>{{ line.project }}</td><td class="n">{{ money(line.cost) }}</td>
<td class="n">{{ "%.2f" % line.cpu_s }}</td><td class="n">{{ "%.2f" % line.gpu_s }}</td>
<td class="n">{{ "%.4f" % (line.memory_gb_s / 3600) }}</td>
<td class="n">{{ size(line.peak_memory_bytes) }}</td><td class="n">{{ "%.2f" % line.wall_s }}</td>
<td class="n">{{ line.runs }}</td><td class="n">{{ line.invocations }}</td>
<td class="n">{{ size(line.storage_bytes) }}</td></tr>
{% endfor %}</table></div>
{% else %}<p>Nothing was measured in this period.</p>{% endif %}
<h2>Rate card</h2>
<dl>{% for name, value in report.rates.items() %}<dt>{{ name }}</dt>
<dd>{{ value }} {{ report.currency }}</dd>{% endfor %}</dl>
</main>{% endblock %}
"""
)


def render_report(report: CostReport) -> str:
    """The report as one HTML page (inline CSS and SVG; nothing fetched, no scripts)."""
    title = "Costs of " + (", ".join(report.projects) if report.projects else "no project")
    period = f"{report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
    return _TEMPLATE.render(
        title=title,
        period=period,
        report=report,
        chart=Markup(_chart(report.lines[:_CHART_ROWS], report.currency)),  # noqa: S704 - built from escaped parts
        money=lambda v: f"{v:,.4f}" if abs(v) < 1 else f"{v:,.2f}",
        hours=lambda s: f"{s / 3600:.4f} h ({s:,.1f} s)",
        gb_hours=lambda gs: f"{gs / 3600:.4f} GB·h",
        size=_size,
    )


def _chart(lines: list[CostLine], currency: str) -> str:
    """Horizontal bars, one per row: cost, or CPU seconds when nothing has a price."""
    by_cost = any(line.cost > 0 for line in lines)
    values = [line.cost if by_cost else line.cpu_s for line in lines]
    unit = currency if by_cost else "CPU s"
    top = max([*values, 1e-12])
    height = _ROW_H * len(lines) + 10
    what = "cost" if by_cost else "CPU seconds"
    parts = [
        f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" '
        f'aria-labelledby="chart-t chart-d" preserveAspectRatio="xMinYMin meet">'
        f'<title id="chart-t">{escape(what.capitalize())} by row</title>'
        f'<desc id="chart-d">{len(lines)} bars; the largest is {top:,.4g} {escape(unit)}.</desc>'
    ]
    span = _W - _LABEL_W - 110
    for i, (line, value) in enumerate(zip(lines, values, strict=True)):
        y = 5 + i * _ROW_H
        width = max(0.5, span * value / top)
        label = line.name if len(line.name) <= 32 else line.name[:31] + "…"
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 15}" font-size="12" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{_LABEL_W}" y="{y + 3}" width="{width:.1f}" height="{_ROW_H - 6}" '
            f'fill="{_BAR}"><title>{escape(line.name)}: {value:,.4g} {escape(unit)}</title></rect>'
            f'<text x="{_LABEL_W + width + 4:.1f}" y="{y + 15}" font-size="11">'
            f"{value:,.4g} {escape(unit)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover
