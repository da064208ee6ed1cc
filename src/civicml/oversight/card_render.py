"""Model cards as a self-contained HTML page (inline CSS and SVG, nothing loaded) and Markdown.

Fields a person must still write are shown as "TO COMPLETE" in both forms, so a reviewer sees at
a glance what is missing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jinja2 import Environment, PackageLoader

from civicml.oversight.card_fields import EDITABLE_FIELDS, ModelCard

__all__ = ["markdown_text", "render_card_html", "render_card_markdown"]

_SECTIONS = (
    ("model_overview", "Model overview"),
    ("business_details", "Business details"),
    ("intended_uses", "Intended uses"),
    ("training_details", "Training details"),
    ("additional_information", "Limitations and ethical considerations"),
)
_TODO = "TO COMPLETE"


def _rows(card: ModelCard, section: str) -> list[tuple[str, str, bool]]:
    """(label, text, to_complete) rows of one section, written fields first."""
    values = card.content.get(section, {})
    out: list[tuple[str, str, bool]] = []
    for path, spec in EDITABLE_FIELDS.items():
        if path.split(".", 1)[0] != section:
            continue
        value = values.get(path.split(".", 1)[1])
        if value in (None, ""):
            if spec.required or path in card.missing:
                out.append((spec.label, f"{_TODO}: {spec.prompt}", True))
            continue
        out.append((spec.label, _text(value), path in card.missing))
    written = {p.split(".", 1)[1] for p in EDITABLE_FIELDS if p.startswith(section + ".")}
    for key, value in values.items():
        if key == "training_job_details" and isinstance(value, dict):
            out.extend(_job_rows(value))
        elif key == "inference_environment" and isinstance(value, dict):
            images = value.get("container_image") or []
            out.append(("Inference environment", ", ".join(map(str, images)) or "—", False))
        elif key not in written and value not in (None, "", [], {}):
            out.append((key.replace("_", " ").capitalize(), _text(value), False))
    return out


def _job_rows(job: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The training job in a few readable rows (its datasets get their own table)."""
    params = ", ".join(f"{p['name']}={p['value']}" for p in job.get("hyper_parameters", []))
    rows = [
        ("Training run", str(job.get("run_id") or "—"), False),
        ("Target", str(job.get("target") or "—"), False),
        ("Seed", str(job.get("seed")), False),
        ("Hyper-parameters", params or "—", False),
    ]
    training = job.get("training") or {}
    if training:
        rows.append(
            (
                "Rows (train / validation)",
                f"{training.get('train_rows')} / {training.get('validation_rows')}",
                False,
            )
        )
    return rows


def _datasets(card: ModelCard) -> list[dict[str, Any]]:
    job = card.content.get("training_details", {}).get("training_job_details") or {}
    out = []
    for d in job.get("datasets", []):
        columns = []
        for p in d.get("profile", []):
            if p.get("kind") == "numeric":
                summary = (
                    f"{_num(p.get('min'))} to {_num(p.get('max'))}, mean {_num(p.get('mean'))}"
                )
            else:
                summary = ", ".join(f"{k} ({v})" for k, v in (p.get("top") or {}).items())
            columns.append((p["column"], p.get("kind", ""), p.get("missing", 0), summary))
        out.append({**d, "columns_summary": columns})
    return out


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return json.dumps(value, sort_keys=True, default=str)


def _bars(group: dict[str, Any]) -> list[tuple[str, float, float]]:
    data = [d for d in group.get("metric_data", []) if isinstance(d.get("value"), int | float)]
    top = max((abs(float(d["value"])) for d in data), default=0.0) or 1.0
    return [(str(d["name"]), float(d["value"]), 300 * abs(float(d["value"])) / top) for d in data]


def _context(card: ModelCard) -> dict[str, Any]:
    sections = [(title, _rows(card, key)) for key, title in _SECTIONS[:-1]]
    closing = [(title, _rows(card, key)) for key, title in _SECTIONS[-1:]]
    evaluations = []
    for ev in card.content.get("evaluation_details", []):
        groups = []
        for g in ev.get("metric_groups", []):
            if g.get("type") == "matrix":
                groups.append(
                    {
                        "name": g["name"],
                        "kind": "matrix",
                        "labels": g.get("x_axis_name", []),
                        "matrix": g.get("value", []),
                    }
                )
            else:
                groups.append(
                    {"name": g["name"], "kind": g.get("type", "simple"), "bars": _bars(g)}
                )
        evaluations.append(
            {"name": ev.get("name", ""), "datasets": ev.get("datasets", []), "groups": groups}
        )
    return {
        "card": card,
        "sections": sections,
        "closing": closing,
        "evaluations": evaluations,
        "approval": card.content.get("approval", {}),
        "datasets": _datasets(card),
        "deployments": card.content.get("deployments", []),
        "todo": _TODO,
    }


class _Markdown(str):
    """Text that is already Markdown (built here from escaped parts): not escaped again."""

    __slots__ = ()


# Markdown's inline syntax: code, emphasis, links and images, raw HTML and entities,
# strikethrough, table cells, headings; a backslash makes each one plain text (CommonMark).
_INLINE = re.compile(r"([\\`*\[\]<>|#~&])")
# an underscore starts emphasis only next to something that is not a letter or a digit
_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# what makes a line a block (list item, heading underline, ordered list) when it starts it
_BLOCK_START = re.compile(r"^(?:([-+=])|(\d{1,9})([.)]))")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def markdown_text(value: Any) -> str:
    """``value`` as Markdown that renders as exactly that text, on one line.

    Every character Markdown would read as syntax is backslash-escaped (so ``<script>`` is
    text, ``[x](javascript:...)`` is not a link and ``|`` does not end a table cell), and line
    breaks become spaces (a written value cannot start a heading, a list or a table row).
    """
    if isinstance(value, _Markdown):
        return value
    text = value if isinstance(value, str) else str(value)
    text = _LINE_BREAKS.sub(" ", text)
    return _UNDERSCORE.sub(r"\\_", _INLINE.sub(r"\\\1", text))


def _md_block(value: Any) -> _Markdown:
    """Written text that may span lines, inside a list item: each line escaped (its start
    too), joined by hard line breaks indented into the item."""
    text = value if isinstance(value, str) else _text(value)
    lines = [line.strip() for line in _LINE_BREAKS.split(text)]
    escaped = [_BLOCK_START.sub(_escape_block, markdown_text(line)) for line in lines if line]
    return _Markdown("  \n  ".join(escaped))


def _escape_block(match: re.Match[str]) -> str:
    bullet, number, delimiter = match.groups()
    return "\\" + bullet if bullet else f"{number}\\{delimiter}"


def _md_cells(values: Any) -> _Markdown:
    """Table cells, each escaped, joined by ``|``."""
    return _Markdown(" | ".join(markdown_text(v) for v in values))


_LOADER = PackageLoader("civicml.oversight", "templates")
_HTML_ENV = Environment(loader=_LOADER, autoescape=True, keep_trailing_newline=True)
# Markdown is not HTML (HTML escaping would print entities into the text): every value is
# escaped for Markdown instead, by `finalize`; the template's own markup is literal text.
_MD_ENV = Environment(
    loader=_LOADER,
    autoescape=False,  # noqa: S701 (escaped for Markdown by finalize)
    keep_trailing_newline=True,
    finalize=markdown_text,
)
_MD_ENV.filters["md_block"] = _md_block
_MD_ENV.filters["md_cells"] = _md_cells


def render_card_html(card: ModelCard) -> str:
    """The card as one self-contained HTML page; every value is escaped."""
    return _HTML_ENV.get_template("card.html.j2").render(_context(card))


def render_card_markdown(card: ModelCard) -> str:
    """The card as Markdown; what people wrote (and every other value) is escaped, so it
    renders as the text it is and never as links, HTML or table structure."""
    return _MD_ENV.get_template("card.md.j2").render(_context(card))
