"""Self-contained HTML pages of quality reports and personal-data scans (core/html_page.py)."""

from __future__ import annotations

import json
from typing import Any

from civicml.core.html_page import report_template

__all__ = ["render_pii", "render_quality"]

_QUALITY = report_template(
    """{% extends "page.html" %}
{% block style %}
.passed { color: #14532d; } .failed, .error, .quarantined { color: #991b1b; font-weight: 600; }
.warned { color: #92400e; font-weight: 600; } .released { color: #1e3a8a; }
pre { white-space: pre-wrap; font-size: .8rem; margin: 0; }
{% endblock %}
{% block body %}<main>
<h1>{{ title }}</h1>
<p>Verdict: <strong class="{{ r.status }}">{{ r.status }}</strong> — {{ r.evaluated }}
expectation(s) on {{ "{:,}".format(r.rows) }} rows, {{ r.failed }} failed
({{ r.blocking_failed }} blocking). Run by {{ r.created_by }} at {{ r.created_at }}
({{ r.trigger }}).</p>
<div class="scroll"><table>
<thead><tr><th scope="col">expectation</th><th scope="col">kind</th><th scope="col">column</th>
<th scope="col">blocking</th><th scope="col">result</th><th scope="col">failing rows</th>
<th scope="col">what was found</th></tr></thead>
<tbody>{% for x in r.results %}<tr>
<td>{{ x.name }}</td><td>{{ x.kind }}</td><td>{{ x.column or "" }}</td>
<td>{{ "yes" if x.blocking else "no" }}</td><td class="{{ x.status }}">{{ x.status }}</td>
<td class="n">{{ "" if x.failing_rows is none else "{:,}".format(x.failing_rows) }}</td>
<td>{{ x.message }}</td></tr>{% endfor %}</tbody></table></div>
{% for x in r.results if x.sample %}
<h2>Failing rows of {{ x.name }} (first {{ x.sample|length }})</h2>
<div class="scroll"><table><thead><tr>{% for k in x.sample[0] %}<th scope="col">{{ k }}</th>
{% endfor %}</tr></thead><tbody>{% for row in x.sample %}<tr>{% for v in row.values() %}
<td>{{ show(v) }}</td>{% endfor %}</tr>{% endfor %}</tbody></table></div>
{% endfor %}
</main>{% endblock %}"""
)

_PII = report_template(
    """{% extends "page.html" %}
{% block style %}.personal { color: #991b1b; font-weight: 600; }
.confidential { color: #92400e; font-weight: 600; }{% endblock %}
{% block body %}<main>
<h1>{{ title }}</h1>
<p>Classification: <strong class="{{ r.classification }}">{{ r.classification }}</strong> —
{{ r.columns_scanned }} column(s), {{ "{:,}".format(r.rows_scanned) }} of
{{ "{:,}".format(r.rows) }} rows sampled{% if not r.complete %} (time budget reached before
every column was scanned){% endif %}. Run by {{ r.created_by }} at {{ r.created_at }}.</p>
{% if r.findings %}<div class="scroll"><table>
<thead><tr><th scope="col">column</th><th scope="col">personal data</th>
<th scope="col">confidence</th><th scope="col">matched / sampled</th>
<th scope="col">evidence</th><th scope="col">redacted</th></tr></thead>
<tbody>{% for f in r.findings %}<tr><td>{{ f.column }}</td><td>{{ f.type }}</td>
<td class="n">{{ "%.2f"|format(f.confidence) }}</td>
<td class="n">{{ "{:,}".format(f.matched) }} / {{ "{:,}".format(f.sampled) }}</td>
<td>{{ f.evidence }}</td><td>{{ f.redacted or "" }}</td></tr>{% endfor %}</tbody>
</table></div>{% else %}<p>No personal data found.</p>{% endif %}
<p>No value is shown here: a scan reports where personal data is, never the data.</p>
</main>{% endblock %}"""
)


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def render_quality(report: dict[str, Any], *, title: str) -> str:
    """The page of a quality report (``QualityReport`` as JSON)."""
    return _QUALITY.render(title=title, r=report, show=_show)


def render_pii(report: dict[str, Any], *, title: str) -> str:
    """The page of a personal-data scan (``PiiReport`` as JSON)."""
    return _PII.render(title=title, r=report)
