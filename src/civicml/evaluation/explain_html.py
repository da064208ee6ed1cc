"""Self-contained HTML rendering of an explanation report (:class:`ExplanationReport`).

One page, no network: inline CSS and inline SVG drawn here — a bar chart of global importance,
one line chart of partial dependence per column, one waterfall per explained row — and no
scripts, fonts or CDNs. Every string from the data is escaped; each plot has a ``<title>`` and
``<desc>``. The JSON form is ``report.model_dump_json()``.

Each SVG is drawn at its own size in CSS pixels (``width``/``height`` attributes, shrunk only to
fit a narrower screen, never stretched), so its 9-11 px labels stay 9-11 px on a wide page. The
page says which output the attributions explain: for a binary classifier, the positive class
with its label value (``eligible = 1``) and the class it is weighed against.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

from civicml.core.html_page import report_template
from civicml.evaluation.explain_schemas import (
    ExplanationReport,
    GlobalExplanation,
    LocalExplanation,
    OutputAttribution,
    PartialDependence,
)

__all__ = ["render_explanation_html"]

_W = 420  # width of the partial dependence and waterfall plots (CSS px)
_IMPORTANCE_W = 640
_BAR = "#2563eb"  # blue
_UP = "#b91c1c"  # red: pushes the output up
_DOWN = "#1d4ed8"  # blue: pushes it down; both >= 4.5:1 on white
_LINES = ("#2563eb", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#0f766e")
_WATERFALL_COLUMNS = 8


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _short(text: object, size: int = 18) -> str:
    text = str(text)
    return text if len(text) <= size else text[: size - 1] + "…"


def _svg_open(i: int, title: str, desc: str, height: float, width: int = _W) -> str:
    """An SVG drawn at ``width`` x ``height`` CSS pixels (the ``plot`` class lets it shrink to a
    narrow screen, never grow), so font sizes in user units are pixels."""
    return (
        f'<svg class="plot" viewBox="0 0 {width} {height:.0f}" width="{width}" '
        f'height="{height:.0f}" role="img" aria-labelledby="svg-t{i} svg-d{i}" '
        f'preserveAspectRatio="xMidYMid meet">'
        f'<title id="svg-t{i}">{escape(title)}</title><desc id="svg-d{i}">{escape(desc)}</desc>'
    )


def explained_output(g: GlobalExplanation) -> tuple[str, str]:
    """In words, what the attributions of ``g`` explain, as (the output, how to read it): for
    a binary classifier the positive class with its label value and the class it is weighed
    against, e.g. ``("class 1, the positive class (eligible = 1)", "in log-odds: ...")``."""
    target = g.target
    space = {
        "margin": "log-odds" if len(g.outputs) == 1 else "softmax scores (margin)",
        "probability": "probability",
        "value": "the units of the prediction",
    }[g.output_space]
    if g.task == "regression":
        return ("the predicted value" + (f" of {target}" if target else ""), f"in {space}")
    labels = [o for o in g.outputs if o is not None]
    if len(labels) != 1:
        column = f" of {target}" if target else ""
        return (f"each class{column} ({', '.join(str(c) for c in labels)})", f"in {space}")
    positive = labels[0]
    named = f"{target} = {positive}" if target else f"class {positive}"
    head = f"class {positive}, the positive class ({named})"
    others = [c for c in g.classes if c != positive]
    if not others:
        return head, f"in {space}"
    other = f"{target} = {others[0]}" if target else f"class {others[0]}"
    return head, (
        f"in {space}: a positive attribution pushes a row towards {named}, a negative one "
        f"towards {other}"
    )


def _importance_svg(i: int, g: GlobalExplanation) -> str:
    row, label_w, svg_w = 22, 170, _IMPORTANCE_W
    plot_w = svg_w - label_w - 70
    height = row * len(g.importance) + 10
    top = max((c.importance for c in g.importance), default=0.0) or 1.0
    parts = [
        _svg_open(
            i,
            "Global importance: mean absolute SHAP attribution per column",
            "; ".join(f"{c.column}: {_num(c.importance)}" for c in g.importance),
            height,
            svg_w,
        )
    ]
    for k, c in enumerate(g.importance):
        y = 5 + k * row
        width = plot_w * c.importance / top
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escape(_short(c.column, 24))}<title>{escape(c.column)}</title></text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="14" fill="{_BAR}">'
            f"<title>{escape(c.column)}: {_num(c.importance)} ({100 * c.share:.1f}%)</title></rect>"
            f'<text x="{label_w + width + 4:.1f}" y="{y + 14}" font-size="10">'
            f"{_num(c.importance)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _pd_svg(i: int, p: PartialDependence) -> str:
    height, left, right, top_pad, bottom = 200, 48, 12, 10, 40
    plot_w, plot_h = _W - left - right, height - top_pad - bottom
    values = [v for curve in p.curves for v in curve.average]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    n = len(p.grid)
    if p.kind == "numeric":
        numbers = [float(v) for v in p.grid]
        x_low, x_high = numbers[0], numbers[-1]
        span = (x_high - x_low) or 1.0
        xs = [left + plot_w * (v - x_low) / span for v in numbers]
    else:
        xs = [left + plot_w * (k + 0.5) / n for k in range(n)]

    def y_of(v: float) -> float:
        return top_pad + plot_h * (1 - (v - low) / (high - low))

    desc = "; ".join(
        f"{'value' if c.label is None else c.label}: {_num(c.average[0])} at {p.grid[0]} to "
        f"{_num(c.average[-1])} at {p.grid[-1]}"
        for c in p.curves
    )
    parts = [_svg_open(i, f"Partial dependence on {p.column}", desc, height)]
    base_y = top_pad + plot_h
    parts.append(
        f'<line x1="{left}" y1="{base_y}" x2="{_W - right}" y2="{base_y}" stroke="#444"/>'
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{base_y}" stroke="#444"/>'
        f'<text x="{left - 4}" y="{top_pad + 10}" font-size="10" text-anchor="end">'
        f"{_num(high)}</text>"
        f'<text x="{left - 4}" y="{base_y}" font-size="10" text-anchor="end">{_num(low)}</text>'
    )
    for k, curve in enumerate(p.curves):
        colour = _LINES[k % len(_LINES)]
        points = " ".join(f"{x:.1f},{y_of(v):.1f}" for x, v in zip(xs, curve.average, strict=True))
        name = "value" if curve.label is None else str(curve.label)
        if p.kind == "numeric":
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2">'
                f"<title>{escape(name)}</title></polyline>"
            )
        for x, v, g in zip(xs, curve.average, p.grid, strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)} at {escape(str(g))}: {_num(v)}</title></circle>"
            )
    if p.kind == "numeric":
        parts.append(
            f'<text x="{left}" y="{height - 24}" font-size="10">{escape(_num(float(p.grid[0])))}'
            f'</text><text x="{_W - right}" y="{height - 24}" font-size="10" text-anchor="end">'
            f"{escape(_num(float(p.grid[-1])))}</text>"
        )
    else:
        for x, g in zip(xs, p.grid, strict=True):
            parts.append(
                f'<text x="{x:.1f}" y="{height - 24}" font-size="9" text-anchor="middle">'
                f"{escape(_short(g, 10))}</text>"
            )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" font-size="11" '
        f'text-anchor="middle">{escape(p.column)}</text></svg>'
    )
    return "".join(parts)


def _waterfall_output(local: LocalExplanation) -> OutputAttribution:
    """The output a waterfall shows: the only one (binary, regression) or the predicted class."""
    return next((o for o in local.outputs if o.label == local.prediction), local.outputs[0])


def _waterfall_caption(local: LocalExplanation, target: str | None) -> str:
    label = _waterfall_output(local).label
    if label is None:
        return "Red pushes the predicted value up, blue down."
    named = f"{target} = {label}" if target else f"class {label}"
    return f"Attributions to {named}: red pushes towards it, blue away from it."


def _waterfall_svg(i: int, local: LocalExplanation) -> str:
    output = _waterfall_output(local)
    ranked = sorted(output.attributions.items(), key=lambda kv: -abs(kv[1]))
    steps = ranked[:_WATERFALL_COLUMNS]
    rest = ranked[_WATERFALL_COLUMNS:]
    if rest:
        steps.append((f"{len(rest)} other columns", sum(v for _, v in rest)))
    row, label_w, right = 22, 190, 16
    plot_w = _W - label_w - right
    height = row * (len(steps) + 2) + 10
    running = [output.base_value]
    for _, v in steps:
        running.append(running[-1] + v)
    low, high = min(running), max(running)
    span = (high - low) or 1.0

    def x_of(v: float) -> float:
        return label_w + plot_w * (v - low) / span

    label = "value" if output.label is None else f"class {output.label}"
    parts = [
        _svg_open(
            i,
            f"Row {local.row}: attributions to {label} ({local.output_space})",
            f"Base value {_num(output.base_value)}, output {_num(output.output)}; "
            + "; ".join(f"{c}: {_num(v)}" for c, v in steps),
            height,
        )
    ]

    def marker(y: float, text: str, value: float) -> str:
        return (
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escape(text)}</text>"
            f'<line x1="{x_of(value):.1f}" y1="{y + 2}" x2="{x_of(value):.1f}" y2="{y + 20}" '
            f'stroke="#111" stroke-width="2"/>'
            + (
                f'<text x="{x_of(value) + 4:.1f}" y="{y + 14}" font-size="10">'
                if x_of(value) < _W - 60
                else f'<text x="{x_of(value) - 4:.1f}" y="{y + 14}" font-size="10" '
                'text-anchor="end">'
            )
            + f"{_num(value)}</text>"
        )

    parts.append(marker(5, "base value", output.base_value))
    for k, (column, v) in enumerate(steps):
        y = 5 + (k + 1) * row
        start, end = running[k], running[k + 1]
        x0, x1 = sorted((x_of(start), x_of(end)))
        value = local.values.get(column)
        text = _short(column) if value is None else f"{_short(column, 16)} = {_short(value, 8)}"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escape(text)}</text>"
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 0.5):.1f}" height="14" '
            f'fill="{_UP if v >= 0 else _DOWN}"><title>{escape(column)}: {v:+.4g}</title></rect>'
        )
    parts.append(marker(5 + (len(steps) + 1) * row, "output", output.output))
    parts.append("</svg>")
    return "".join(parts)


_TEMPLATE = """{% extends "page.html" %}
{% block style %}
svg.plot { display: block; max-width: 100%; height: auto; }
.cards { grid-template-columns: repeat(auto-fill, minmax(min(100%, 28rem), 1fr)); }
th.n { text-align: right; }
table.importance { width: auto; min-width: 50%; }
{% endblock %}
{% block body %}
<main>
<h1>{{ title }}</h1>
<p>{{ g.algorithm }} {{ g.task }} model{% if g.target %} predicting <code>{{ g.target }}</code>
{%- endif %} · SHAP {{ g.explainer }} explainer ·
 {{ "{:,}".format(g.rows_explained) }} of {{ "{:,}".format(g.rows_total) }} rows explained.</p>
<p class="explained">The attributions explain <strong>{{ explained[0] }}</strong>,
 {{ explained[1] }}.
 One-hot and other transformed columns are summed back to the input column they came from.</p>

<h2 id="importance">Global importance</h2>
<figure><figcaption>Mean absolute attribution per input column.</figcaption>{{ importance }}
</figure>
<div class="scroll">
<table class="importance">
<thead><tr><th scope="col">Column</th><th scope="col" class="n">Mean |attribution|</th>
<th scope="col" class="n">Share</th></tr></thead>
<tbody>
{% for c in g.importance %}<tr class="importance-row"><th scope="row">{{ c.column }}</th>
<td class="n">{{ num(c.importance) }}</td><td class="n">{{ "%.1f"|format(100 * c.share) }}%</td>
</tr>
{% endfor %}</tbody>
</table>
</div>

<h2 id="partial-dependence">Partial dependence</h2>
{% if pd_plots %}<div class="cards">
{% for p, svg in pd_plots %}<figure><figcaption><strong>{{ p.column }}</strong> — average
 predicted {{ p.output_space }} over {{ p.rows }} rows as the column varies.</figcaption>
{{ svg }}</figure>
{% endfor %}</div>{% else %}<p>None computed.</p>{% endif %}

<h2 id="local">Example predictions</h2>
{% if local_plots %}<div class="cards">
{% for l, svg, caption in local_plots %}<figure><figcaption><strong>Row {{ l.row }}</strong> —
 predicted {{ l.prediction }}. {{ caption }}</figcaption>
{{ svg }}</figure>
{% endfor %}</div>{% else %}<p>None.</p>{% endif %}
</main>
{% endblock %}
"""

_COMPILED = report_template(_TEMPLATE)


def render_explanation_html(report: ExplanationReport, *, title: str = "Model explanation") -> str:
    """The report as one self-contained HTML page (no external resources).

    Args:
        report: from :func:`~civicml.evaluation.explain.explain`.
        title: page heading.

    Returns:
        The HTML text; write it to a ``.html`` file.
    """
    g = report.global_explanation
    n = 1
    importance = Markup(_importance_svg(n, g))  # noqa: S704 - built from escaped parts
    pd_plots = []
    for p in report.partial_dependence:
        n += 1
        pd_plots.append((p, Markup(_pd_svg(n, p))))  # noqa: S704
    local_plots = []
    for local in report.local:
        n += 1
        svg = Markup(_waterfall_svg(n, local))  # noqa: S704
        local_plots.append((local, svg, _waterfall_caption(local, g.target)))
    return _COMPILED.render(
        g=g,
        title=title,
        explained=explained_output(g),
        importance=importance,
        pd_plots=pd_plots,
        local_plots=local_plots,
        num=_num,
    )
