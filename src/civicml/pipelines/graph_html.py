"""The HTML view of a pipeline execution: its graph with each step's status, duration and cache
hit, and a table of the steps.

One self-contained page (inline SVG and one ``<style>`` block; no scripts, no ``style=``
attributes, nothing fetched), so the server can serve it with the strict report policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from civicml.core.html_page import report_template
from civicml.pipelines.schemas import Execution, StepExecution

__all__ = ["duration", "layers", "render_graph"]

_W, _H = 180, 56  # a node's box
_GAP_X, _GAP_Y = 70, 24
_PAD = 16

_TEMPLATE = report_template(
    """{% extends "page.html" %}
{% block style %}
svg { display: block; max-width: 100%; height: auto; }
.node rect { stroke: #555; stroke-width: 1; }
.node text { font-size: 12px; fill: #111; }
.node .meta { font-size: 11px; fill: #333; }
.edge { stroke: #888; stroke-width: 1.5; fill: none; }
.arrow { fill: #888; }
.s-succeeded rect { fill: #c6f0c2; }
.s-cached rect { fill: #cfe3fb; }
.s-failed rect { fill: #f8c4c4; }
.s-running rect { fill: #fde9a9; }
.s-waiting rect { fill: #fcd9a8; }
.s-skipped rect { fill: #e5e7eb; }
.s-pending rect { fill: #fff; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: .3rem; }
.b-succeeded { background: #c6f0c2; } .b-cached { background: #cfe3fb; }
.b-failed { background: #f8c4c4; } .b-running { background: #fde9a9; }
.b-waiting { background: #fcd9a8; } .b-skipped { background: #e5e7eb; }
.b-pending { background: #f3f4f6; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
{% endblock %}
{% block body %}<main>
<h1>{{ title }}</h1>
<dl>
<dt>execution</dt><dd>{{ ex.id }}</dd>
<dt>project</dt><dd>{{ ex.project }}</dd>
<dt>status</dt>
<dd><span class="badge b-{{ ex.status.value }}">{{ ex.status.value }}</span></dd>
<dt>version</dt><dd>{{ ex.version[:12] }}</dd>
<dt>started</dt>
<dd>{{ ex.started_at.strftime("%Y-%m-%d %H:%M:%S") }} UTC by {{ ex.created_by }}</dd>
<dt>duration</dt><dd>{{ total }}</dd>
<dt>parameters</dt>
<dd>{% for k, v in ex.parameters.items() %}{{ k }}={{ v }}
{%- if not loop.last %}, {% endif %}{% endfor %}</dd>
</dl>
<h2>Graph</h2>
<div class="scroll">
<svg xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}"
 viewBox="0 0 {{ width }} {{ height }}" role="img" aria-label="Steps of {{ ex.pipeline }}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
 markerHeight="7" orient="auto-start-reverse">
<path class="arrow" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>
{% for e in edges %}<path class="edge" marker-end="url(#arrow)"
 d="M {{ e.x1 }} {{ e.y1 }} C {{ e.cx }} {{ e.y1 }}, {{ e.cx }} {{ e.y2 }}, {{ e.x2 }} {{ e.y2 }}"/>
{% endfor %}{% for n in nodes %}<g class="node s-{{ n.status }}">
<title>{{ n.name }}: {{ n.status }}{% if n.error %} ({{ n.error }}){% endif %}</title>
<rect x="{{ n.x }}" y="{{ n.y }}" width="{{ w }}" height="{{ h }}" rx="6"/>
<text x="{{ n.x + 8 }}" y="{{ n.y + 20 }}">{{ n.label }}</text>
<text class="meta" x="{{ n.x + 8 }}" y="{{ n.y + 40 }}">{{ n.status }}
{%- if n.duration %} · {{ n.duration }}{% endif %}{% if n.cached %} · cached{% endif %}</text>
</g>
{% endfor %}</svg>
</div>
<h2>Steps</h2>
<div class="scroll"><table>
<thead><tr><th>step</th><th>status</th><th>duration</th><th>cached from</th><th>run</th>
<th>error</th></tr></thead>
<tbody>
{% for s in ex.steps %}<tr><td>{{ s.step }}</td>
<td><span class="badge b-{{ s.status.value }}">{{ s.status.value }}</span></td>
<td class="n">{{ durations[s.step] }}</td><td>{{ s.cached_from or "" }}</td>
<td>{{ s.run_id or "" }}</td><td>{{ s.error or "" }}</td></tr>
{% endfor %}</tbody>
</table></div>
</main>{% endblock %}
"""
)


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    label: str
    status: str
    duration: str
    cached: bool
    error: str | None
    x: int
    y: int


def duration(step: StepExecution) -> str:
    """How long a step took, e.g. ``"1.25 s"``; ``""`` when it has not ended."""
    if step.started_at is None or step.ended_at is None:
        return ""
    return _seconds((step.ended_at - step.started_at).total_seconds())


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes} min {seconds} s"


def layers(steps: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """The steps in topological layers: a step sits one layer right of its deepest input."""
    depth: dict[str, int] = {}
    upstream: dict[str, list[str]] = {name: [] for name in steps}
    for source, target in edges:
        if target in upstream and source in upstream:
            upstream[target].append(source)
    for name in steps:  # steps are in topological order
        depth[name] = 1 + max((depth.get(u, 0) for u in upstream[name]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in steps:
        out[depth[name]].append(name)
    return out


def render_graph(execution: Execution) -> str:
    """The execution as one self-contained HTML page."""
    by_name = {s.step: s for s in execution.steps}
    grid = layers(list(by_name), list(execution.edges))
    nodes: dict[str, _Node] = {}
    for col, names in enumerate(grid):
        for row, name in enumerate(names):
            step = by_name[name]
            nodes[name] = _Node(
                name=name,
                label=name if len(name) <= 24 else name[:23] + "…",
                status=step.status.value,
                duration=duration(step),
                cached=step.cached_from is not None,
                error=step.error,
                x=_PAD + col * (_W + _GAP_X),
                y=_PAD + row * (_H + _GAP_Y),
            )
    edges = []
    for source, target in execution.edges:
        if source in nodes and target in nodes:
            a, b = nodes[source], nodes[target]
            x1, y1, x2, y2 = a.x + _W, a.y + _H // 2, b.x, b.y + _H // 2
            edges.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "cx": (x1 + x2) // 2})
    width = _PAD * 2 + max(len(grid), 1) * (_W + _GAP_X) - _GAP_X
    height = _PAD * 2 + max((len(c) for c in grid), default=1) * (_H + _GAP_Y) - _GAP_Y
    total = ""
    if execution.ended_at is not None:
        total = _seconds((execution.ended_at - execution.started_at).total_seconds())
    return _TEMPLATE.render(
        title=f"Pipeline {execution.pipeline}: execution {execution.status.value}",
        ex=execution,
        nodes=list(nodes.values()),
        edges=edges,
        w=_W,
        h=_H,
        width=width,
        height=height,
        total=total or "(not ended)",
        durations={s.step: duration(s) for s in execution.steps},
    )
