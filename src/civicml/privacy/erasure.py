"""Erasure of a data subject: every dataset version and captured request that holds them.

``erase(project, key_column, value)``:

1. **Find.** Every dataset version of the project whose latest schema has the key column, and
   every capture file of its endpoints, is scanned out of core (Parquet batch by batch, capture
   files line by line; :mod:`civicml.privacy._scan`). Targets under a legal hold are reported
   and left alone.
2. **Write successors.** Each version that holds the subject gets a successor version of the
   same dataset without the subject's rows (ingested like any version, so it is profiled and
   audited), linked ``old --DerivedFrom--> new`` in lineage. Each capture file is rewritten
   without the subject's records under a new path of the same hour.
3. **Commit.** In one transaction: the old versions are marked purged and lose their index rows,
   their lineage nodes are marked deleted, the capture files' index rows are swapped, every
   model version trained on the old versions (``dataset version → run → model version``) is
   marked "trained on erased data" with a ``data.erased`` audit event (a pipeline schedule can
   retrain on it), the certificate (JSON and HTML) is stored, and ``erasure.completed`` binds its
   digest. No audit event holds the subject's value: only a salted SHA-256 of it, whose salt is
   written in the certificate alone.
4. **Delete.** After the commit, the old bytes are deleted where no other owner shares them. A
   crash before that leaves the erasure ``deleting``; the next retention pass finishes it.

Rerunning an erasure is safe: successors already written are found again by their content.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.core.ids import new_id
from civicml.data._tables import dataset_versions, datasets
from civicml.data.service import DatasetService
from civicml.governance._tables import audit_events
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.privacy._flag import flag_models
from civicml.privacy._purge import (
    delete_unreferenced,
    drop_check_reports,
    drop_index_rows,
    referenced,
)
from civicml.privacy._scan import count_rows, drop_lines, line_matches, write_without
from civicml.privacy._tables import erasures, purged_versions
from civicml.privacy.certificate import certificate_document, render_certificate
from civicml.privacy.rules import held
from civicml.privacy.schemas import (
    CaptureErasure,
    Erasure,
    ErasureSummary,
    FlaggedModel,
    VersionErasure,
)
from civicml.serving._tables import endpoints
from civicml.store._tables import artifacts
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.artifacts import Stored
from civicml.store.context import Context

__all__ = ["ErasureService", "subject_hash"]

_MAX_LIST = 500


def subject_hash(salt: str, key_column: str, value: str) -> str:
    """SHA-256 over the salt, the key column and the value (unlinkable without the salt)."""
    return hashlib.sha256(f"{salt}\x00{key_column}\x00{value}".encode()).hexdigest()


class ErasureService:
    """Carries out erasure requests and reads them back (``privacy.erase``).

    Args:
        ctx: The stores, principal and clock.
        writer: This process's capture writer, flushed first so the newest requests are in
            the capture files that are scanned.
    """

    def __init__(self, ctx: Context, writer: Any = None) -> None:
        self._ctx = ctx
        self._writer = writer
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._report_digests: set[str] = set()

    # Reading ----------------------------------------------------------------------------------
    def list(self, project: str) -> builtins.list[Erasure]:
        """The project's erasures, newest first (at most 500)."""
        proj = self._projects.get(project, "privacy.erase")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(erasures)
                .where(erasures.c.project_id == proj.id)
                .order_by(erasures.c.created_at.desc(), erasures.c.id)
                .limit(_MAX_LIST)
            ).all()
            events = _completed_events(conn, [r.id for r in rows])
        return [_erasure(r, proj.name, events.get(r.id)) for r in rows]

    def get(self, project: str, erasure_id: str) -> Erasure:
        """One erasure."""
        proj = self._projects.get(project, "privacy.erase")
        row = self._row(proj, erasure_id)
        with self._ctx.db.read() as conn:
            event = _completed_events(conn, [row.id]).get(row.id)
        return _erasure(row, proj.name, event)

    def certificate(self, project: str, erasure_id: str, *, html: bool = False) -> bytes:
        """The erasure's certificate: ``certificate.json``, or the HTML page."""
        proj = self._projects.get(project, "privacy.erase")
        self._row(proj, erasure_id)
        path = "certificate.html" if html else "certificate.json"
        with self._ctx.db.read() as conn:
            info = ArtifactIndex.get(conn, "erasure", erasure_id, path)
        return self._ctx.artifacts.read_bytes(info.digest)

    def _row(self, proj: Project, erasure_id: str) -> Any:
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(erasures).where(
                    erasures.c.id == erasure_id, erasures.c.project_id == proj.id
                )
            ).first()
        if row is None:
            raise NotFoundError(
                f"Erasure {erasure_id!r} does not exist in project {proj.name!r}.",
                hint=f"List them: civicml privacy erasures -p {proj.name}",
            )
        return row

    # Erasing ----------------------------------------------------------------------------------
    def erase(
        self, project: str, key_column: str, value: str | int, *, reason: str = ""
    ) -> Erasure:
        """Erase the subject whose ``key_column`` holds ``value`` from the project's data.

        Needs ``privacy.erase`` (and ``datasets.write``, to write the successor versions).

        Raises:
            InvalidInputError: The key column or value is empty or too long.
        """
        column = key_column.strip()
        subject = value if isinstance(value, str) else str(int(value))  # exact: not stripped
        if not column or len(column) > 256 or not subject or len(subject) > 1024:
            raise InvalidInputError(
                "An erasure needs a key column (1-256 characters) and a value (1-1024).",
                hint="e.g. civicml privacy erase --key applicant_id --value A-1029 -p PROJECT",
            )
        if len(reason) > 2000:
            raise InvalidInputError("The reason is longer than 2000 characters.")
        if "\x00" in column + subject + reason:
            raise InvalidInputError(
                "The key column, value and reason must not contain NUL characters."
            )
        proj = self._projects.get(project, "privacy.erase")
        self._report_digests = set()
        if self._writer is not None:
            self._writer.flush()
        erasure_id = new_id()
        salt = os.urandom(16).hex()
        digest = subject_hash(salt, column, subject)
        found, captures, withheld, scanned = self._find(proj, column, subject)
        written = [self._successor(proj, erasure_id, column, subject, v) for v in found]
        rewritten = [self._rewrite(c, column, subject) for c in captures]
        with self._ctx.db.write() as uow:
            models = flag_models(
                self._lineage, self._audit, uow, proj, erasure_id, [v["id"] for v in found]
            )
            events: builtins.list[str] = []
            versions = [self._supersede(uow, proj, erasure_id, w, events) for w in written]
            capture_rows = [self._swap(uow, proj, erasure_id, c, events) for c in rewritten]
            events += [m.pop("event") for m in models]
            summary = ErasureSummary(
                versions=versions,
                captures=capture_rows,
                models=[FlaggedModel(**m) for m in models],
                withheld=withheld,
                scanned_versions=scanned[0],
                scanned_capture_files=scanned[1],
                audit_event_ids=events,
            )
            doomed = sorted(
                {v.digest_before for v in versions}
                | {c.digest_before for c in capture_rows}
                | self._report_digests
            )
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            doc = certificate_document(
                erasure_id=erasure_id,
                project=proj.name,
                key_column=column,
                subject_hash=digest,
                salt=salt,
                reason=reason,
                at=now,
                by=user,
                summary=summary,
            )
            cert = self._store_certificate(uow, proj, erasure_id, doc, now, user)
            uow.conn.execute(
                insert(erasures).values(
                    id=erasure_id,
                    project_id=proj.id,
                    key_column=column,
                    subject_hash=digest,
                    status="deleting" if doomed else "completed",
                    reason=reason,
                    summary=summary.model_dump(mode="json"),
                    pending=doomed,
                    certificate_digest=cert,
                    created_at=now,
                    created_by=user,
                )
            )
            final = self._audit.record(
                uow,
                "erasure.completed",
                "erasure",
                erasure_id,
                project=proj.name,
                after={
                    "key_column": column,
                    "subject_hash": digest,
                    "versions": len(versions),
                    "captures": len(capture_rows),
                    "models": len(models),
                    "withheld": withheld,
                    "certificate_digest": cert,
                    "reason": reason,
                },
            )
        gone = delete_unreferenced(self._ctx, doomed)
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                update(erasures)
                .where(erasures.c.id == erasure_id)
                .values(status="completed", pending=[])
            )
        result = self.get(proj.name, erasure_id)
        fixed = result.summary.model_copy(
            update={
                "versions": [
                    v.model_copy(update={"bytes_deleted": v.digest_before in gone})
                    for v in result.summary.versions
                ],
                "captures": [
                    c.model_copy(update={"bytes_deleted": c.digest_before in gone})
                    for c in result.summary.captures
                ],
            }
        )
        return result.model_copy(update={"summary": fixed, "audit_event_id": final})

    # Find -------------------------------------------------------------------------------------
    def _find(
        self, proj: Project, column: str, subject: str
    ) -> tuple[
        builtins.list[dict[str, Any]],
        builtins.list[dict[str, Any]],
        builtins.list[str],
        tuple[int, int],
    ]:
        with self._ctx.db.read() as conn:
            holds = held(conn, proj.id)
            purged = select(purged_versions.c.dataset_version_id)
            rows = conn.execute(
                select(
                    dataset_versions.c.id,
                    dataset_versions.c.dataset_id,
                    dataset_versions.c.version,
                    dataset_versions.c.digest,
                    dataset_versions.c.row_count,
                    dataset_versions.c.schema,
                    datasets.c.name.label("dataset_name"),
                )
                .join(datasets, datasets.c.id == dataset_versions.c.dataset_id)
                .where(datasets.c.project_id == proj.id, dataset_versions.c.id.not_in(purged))
                .order_by(datasets.c.name, dataset_versions.c.version)
            ).all()
            files = conn.execute(
                select(artifacts.c.owner_id, artifacts.c.path, artifacts.c.digest, endpoints.c.name)
                .outerjoin(endpoints, endpoints.c.id == artifacts.c.owner_id)
                .where(
                    artifacts.c.project_id == proj.id,
                    artifacts.c.owner_kind == "endpoint",
                    artifacts.c.path.startswith("capture/"),
                )
                .order_by(artifacts.c.owner_id, artifacts.c.path)
            ).all()
        withheld: set[str] = set()
        found: builtins.list[dict[str, Any]] = []
        scanned = 0
        for row in rows:
            if column not in {c["name"] for c in row.schema}:
                continue
            if ("dataset", row.dataset_id) in holds:
                withheld.add(f"dataset {row.dataset_name}")
                continue
            scanned += 1
            with self._ctx.artifacts.open(row.digest) as handle:
                hits = count_rows(handle, column, subject)
            if hits:
                found.append({**row._mapping, "hits": hits})
        captures: builtins.list[dict[str, Any]] = []
        for f in files:
            name = f.name or f.owner_id
            if ("endpoint", f.owner_id) in holds:
                withheld.add(f"endpoint {name}")
                continue
            data = self._ctx.artifacts.read_bytes(f.digest)  # one file: at most capture max_bytes
            if any(line_matches(line, column, subject) for line in data.splitlines()):
                captures.append({**f._mapping, "endpoint": name})
            del data
        return found, captures, sorted(withheld), (scanned, len(files))

    # Write ------------------------------------------------------------------------------------
    def _successor(
        self, proj: Project, erasure_id: str, column: str, subject: str, row: dict[str, Any]
    ) -> dict[str, Any]:
        out = {**row, "successor": None}
        with self._temp_path() as tmp:
            with self._ctx.artifacts.open(row["digest"]) as handle:
                kept = write_without(handle, column, subject, tmp)
            if kept:
                version = DatasetService(self._ctx).ingest(
                    proj.name,
                    row["dataset_name"],
                    tmp,
                    format="parquet",
                    description=f"Erasure {erasure_id}: version {row['version']} without one "
                    "data subject's rows.",
                    progress=False,
                )
                out["successor"] = version
        return out

    def _rewrite(self, capture: dict[str, Any], column: str, subject: str) -> dict[str, Any]:
        data, dropped = drop_lines(
            self._ctx.artifacts.read_bytes(capture["digest"]), column, subject
        )
        stored = self._ctx.artifacts.put_bytes(data) if data else None
        hour = "/".join(capture["path"].split("/")[:5])
        return {
            **capture,
            "dropped": dropped,
            "stored": stored,
            "new_path": None if stored is None else f"{hour}/{uuid.uuid4()}.jsonl",
        }

    # Commit -----------------------------------------------------------------------------------
    def _supersede(
        self,
        uow: Any,
        proj: Project,
        erasure_id: str,
        w: dict[str, Any],
        events: builtins.list[str],
    ) -> VersionErasure:
        conn = uow.conn
        successor = w["successor"]
        conn.execute(
            insert(purged_versions).values(
                dataset_version_id=w["id"],
                project_id=proj.id,
                reason="erasure",
                erasure_id=erasure_id,
                successor_id=None if successor is None else successor.id,
                purged_at=self._ctx.clock.now(),
                purged_by=self._ctx.principal.user,
            )
        )
        drop_index_rows(conn, "dataset_version", w["id"], None)
        reports = drop_check_reports(conn, w["id"])
        self._report_digests.update(reports)
        old = self._lineage.node(uow, "dataset_version", w["id"], project_id=proj.id)
        if successor is not None:
            new = self._lineage.node(uow, "dataset_version", successor.id, project_id=proj.id)
            self._lineage.link(uow, old, new, "DerivedFrom")
            if successor.description.startswith(f"Erasure {erasure_id}:"):  # written now
                events += _created_events(conn, successor.id)
        self._lineage.mark_deleted(uow, "dataset_version", w["id"])
        after = {
            "erasure_id": erasure_id,
            "name": w["dataset_name"],
            "version": w["version"],
            "rows_removed": w["hits"],
            "digest_before": w["digest"],
            "successor_version": None if successor is None else successor.version,
            "digest_after": None if successor is None else successor.digest,
        }
        events.append(
            self._audit.record(
                uow,
                "dataset_version.erased",
                "dataset_version",
                w["id"],
                project=proj.name,
                after=after,
            )
        )
        return VersionErasure(
            dataset=w["dataset_name"],
            version=w["version"],
            version_id=w["id"],
            rows_before=w["row_count"],
            rows_removed=w["hits"],
            digest_before=w["digest"],
            successor_version=None if successor is None else successor.version,
            successor_id=None if successor is None else successor.id,
            digest_after=None if successor is None else successor.digest,
            bytes_deleted=referenced(conn, w["digest"]) == 0,
            check_reports_removed=len(reports),
        )

    def _swap(
        self,
        uow: Any,
        proj: Project,
        erasure_id: str,
        c: dict[str, Any],
        events: builtins.list[str],
    ) -> CaptureErasure:
        conn = uow.conn
        drop_index_rows(conn, "endpoint", c["owner_id"], c["path"])
        stored: Stored | None = c["stored"]
        if stored is not None:
            ArtifactIndex.add(
                uow,
                project_id=proj.id,
                owner_kind="endpoint",
                owner_id=c["owner_id"],
                path=c["new_path"],
                stored=stored,
                created_by=self._ctx.principal.user,
                created_at=self._ctx.clock.now(),
                media_type="application/x-ndjson",
            )
        row = CaptureErasure(
            endpoint=c["endpoint"],
            path_before=c["path"],
            digest_before=c["digest"],
            records_removed=c["dropped"],
            path_after=c["new_path"],
            digest_after=None if stored is None else stored.digest,
            bytes_deleted=referenced(conn, c["digest"]) == 0,
        )
        events.append(
            self._audit.record(
                uow,
                "endpoint.capture_erased",
                "endpoint",
                c["owner_id"],
                project=proj.name,
                after={"erasure_id": erasure_id, **row.model_dump(exclude={"bytes_deleted"})},
            )
        )
        return row

    def _store_certificate(
        self, uow: Any, proj: Project, erasure_id: str, doc: dict[str, Any], now: Any, user: str
    ) -> str:
        import json

        data = json.dumps(doc, indent=2, sort_keys=True).encode()
        page = render_certificate(doc).encode()
        stored = {
            "certificate.json": self._ctx.artifacts.put_bytes(data),
            "certificate.html": self._ctx.artifacts.put_bytes(page),
        }
        ArtifactIndex.add_files(
            uow,
            project_id=proj.id,
            owner_kind="erasure",
            owner_id=erasure_id,
            stored=stored,
            media_types={"certificate.json": "application/json", "certificate.html": "text/html"},
            created_by=user,
            created_at=now,
        )
        return stored["certificate.json"].digest

    @contextlib.contextmanager
    def _temp_path(self) -> Iterator[Path]:
        folder = self._ctx.artifacts.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{os.urandom(8).hex()}.part"
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _created_events(conn: Any, version_id: str) -> builtins.list[str]:
    return list(
        conn.execute(
            select(audit_events.c.id).where(
                audit_events.c.entity_kind == "dataset_version",
                audit_events.c.entity_id == version_id,
                audit_events.c.action == "dataset_version.created",
            )
        ).scalars()
    )


def _completed_events(conn: Any, erasure_ids: builtins.list[str]) -> dict[str, str]:
    """The ``erasure.completed`` event id of each erasure."""
    if not erasure_ids:
        return {}
    rows = conn.execute(
        select(audit_events.c.entity_id, audit_events.c.id).where(
            audit_events.c.entity_kind == "erasure",
            audit_events.c.entity_id.in_(erasure_ids),
            audit_events.c.action == "erasure.completed",
        )
    ).all()
    return {r[0]: r[1] for r in rows}


def _erasure(row: Any, project: str, event: str | None = None) -> Erasure:
    return Erasure(
        id=row.id,
        project=project,
        key_column=row.key_column,
        subject_hash=row.subject_hash,
        status=row.status,
        reason=row.reason,
        summary=ErasureSummary.model_validate(row.summary),
        certificate_digest=row.certificate_digest,
        audit_event_id=event,
        created_at=row.created_at,
        created_by=row.created_by,
    )
