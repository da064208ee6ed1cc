"""The erasure certificate: a JSON document and the same as a self-contained HTML page.

It says what was found (dataset versions, capture files, model versions), what was removed, the
SHA-256 of every file before and after, and the ids of the audit events that record it. It
never holds the subject's value: only the key column, and the salted hash with its salt, so the
person who knows the value can check that it was this subject's erasure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from civicml.core.html_page import report_template
from civicml.privacy.schemas import ErasureSummary

__all__ = ["FORMAT", "certificate_document", "render_certificate"]

FORMAT = "civicml-erasure-certificate/1"

_TEMPLATE = report_template(
    """{% extends "page.html" %}
{% block style %}code { font-size: .85rem; word-break: break-all; }{% endblock %}
{% block body %}<main>
<h1>Erasure certificate</h1>
<p>Erasure <code>{{ c.erasure_id }}</code> in project <strong>{{ c.project }}</strong>,
carried out by {{ c.requested_by }} at {{ c.carried_out_at }}.</p>
<table><tbody>
<tr><th scope="row">Key column</th><td><code>{{ c.subject.key_column }}</code></td></tr>
<tr><th scope="row">Subject hash</th><td><code>{{ c.subject.hash }}</code>
 (SHA-256 of salt, key column and value; salt <code>{{ c.subject.salt }}</code>)</td></tr>
<tr><th scope="row">Reason</th><td>{{ c.reason or "—" }}</td></tr>
<tr><th scope="row">Scanned</th><td>{{ c.scanned.dataset_versions }} dataset version(s),
 {{ c.scanned.capture_files }} capture file(s)</td></tr>
</tbody></table>
<h2>Dataset versions</h2>
{% if c.dataset_versions %}<div class="scroll"><table>
<thead><tr><th scope="col">Dataset</th><th scope="col">Version</th><th scope="col">Rows removed</th>
<th scope="col">SHA-256 before</th><th scope="col">Successor</th><th scope="col">SHA-256 after</th>
<th scope="col">Old bytes deleted</th></tr></thead><tbody>
{% for v in c.dataset_versions %}<tr><td>{{ v.dataset }}</td><td class="n">{{ v.version }}</td>
<td class="n">{{ v.rows_removed }} of {{ v.rows_before }}</td>
<td><code>{{ v.digest_before }}</code></td>
<td>{{ ("v" ~ v.successor_version) if v.successor_version else "none (no rows left)" }}</td>
<td><code>{{ v.digest_after or "—" }}</code></td>
<td>{{ "yes" if v.bytes_deleted else "no: shared" }}</td></tr>
{% endfor %}</tbody></table></div>{% else %}<p>None held the subject.</p>{% endif %}
<h2>Captured requests</h2>
{% if c.captures %}<div class="scroll"><table>
<thead><tr><th scope="col">Endpoint</th><th scope="col">File</th>
<th scope="col">Records removed</th>
<th scope="col">SHA-256 before</th><th scope="col">SHA-256 after</th></tr></thead><tbody>
{% for f in c.captures %}<tr><td>{{ f.endpoint }}</td><td><code>{{ f.path_before }}</code></td>
<td class="n">{{ f.records_removed }}</td><td><code>{{ f.digest_before }}</code></td>
<td><code>{{ f.digest_after or "— (file removed)" }}</code></td></tr>
{% endfor %}</tbody></table></div>{% else %}<p>None held the subject.</p>{% endif %}
<h2>Models trained on the erased data</h2>
{% if c.models %}<ul>{% for m in c.models %}
<li>{{ m.project }}/{{ m.model }} version {{ m.version }}:
 marked "trained on erased data"</li>{% endfor %}</ul>{% else %}<p>None.</p>{% endif %}
{% if c.withheld %}<h2>Withheld under a legal hold</h2><ul>
{% for w in c.withheld %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Audit events</h2><ul>{% for e in c.audit_event_ids %}<li><code>{{ e }}</code></li>{% endfor %}
</ul><p>The <code>erasure.completed</code> event records this certificate's SHA-256.</p>
</main>{% endblock %}"""
)


def certificate_document(
    *,
    erasure_id: str,
    project: str,
    key_column: str,
    subject_hash: str,
    salt: str,
    reason: str,
    at: datetime,
    by: str,
    summary: ErasureSummary,
) -> dict[str, Any]:
    """The certificate as a JSON-ready document."""
    data = summary.model_dump(mode="json")
    return {
        "format": FORMAT,
        "erasure_id": erasure_id,
        "project": project,
        "requested_by": by,
        "carried_out_at": at.isoformat(),
        "reason": reason,
        "subject": {"key_column": key_column, "hash": subject_hash, "salt": salt},
        "scanned": {
            "dataset_versions": summary.scanned_versions,
            "capture_files": summary.scanned_capture_files,
        },
        "dataset_versions": data["versions"],
        "captures": data["captures"],
        "models": data["models"],
        "withheld": data["withheld"],
        "audit_event_ids": data["audit_event_ids"],
    }


def render_certificate(doc: dict[str, Any]) -> str:
    """The certificate document as a self-contained, accessible HTML page."""
    return _TEMPLATE.render(title=f"Erasure certificate {doc['erasure_id']}", c=doc)
