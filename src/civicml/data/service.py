"""The dataset service: ingest immutable, content-addressed dataset versions and read them back.

Ingesting streams the source into Parquet in a temp file (bounded memory, profiled and hashed by
its logical content on the way, :mod:`civicml.data.content`), stores the file in the artifact
store by SHA-256, then records the version in one unit of work: the version row, its
artifact-index entry, its lineage node and the ``dataset_version.created`` audit event commit
together. The dataset's row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
writers are serialised by ``BEGIN IMMEDIATE``), so version numbers have no gaps or duplicates and
identical content is never recorded twice.

A version's identity is its *content hash* (column names, types and values); the file's SHA-256
(``digest``) is where its bytes are stored and how they are checked when read. Versions recorded
before migration 0025 have no content hash: an ingest computes it, from their stored Parquet,
for those of the same dataset that could hold the same rows (same row count and columns), and
records it (a lazy back-fill; see :meth:`DatasetService._backfill`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import pyarrow.parquet as pq  # type: ignore[import-untyped]
from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import (
    CivicMLError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    closest,
)
from civicml.core.ids import new_id, validate_name
from civicml.core.names import name_key
from civicml.core.types import INT64_MAX
from civicml.data import _checks
from civicml.data._tables import dataset_versions, datasets
from civicml.data.content import content_hash_of_parquet
from civicml.data.ingest import DEFAULT_CHUNK_BYTES, Converted, open_source, write_canonical
from civicml.data.schemas import (
    Classification,
    ColumnProfile,
    ColumnSchema,
    Dataset,
    DatasetVersion,
    ReadOptions,
    SchemaChanges,
    SourceFormat,
    TypeChange,
)
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.artifacts import Stored
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["DatasetService"]

_log = logging.getLogger(__name__)

_Row: TypeAlias = "Row[*tuple[Any, ...]]"
_RETRIES = 3
_DATA_PATH = "data.parquet"
_MEDIA_TYPE = "application/vnd.apache.parquet"


class DatasetService:
    """Ingests datasets as immutable versions and reads them back, verified.

    Args:
        ctx: The stores, principal and clock every call runs with.

    Example:
        >>> svc = DatasetService(ctx)  # doctest: +SKIP
        >>> v = svc.ingest("benefits", "applications", "applications.csv")  # doctest: +SKIP
        >>> svc.to_pandas(v).shape  # doctest: +SKIP
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)

    # Ingest -----------------------------------------------------------------------------------
    def ingest(
        self,
        project: str,
        name: str,
        source: Any,
        *,
        format: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        description: str = "",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        progress: bool | None = None,
        recorded: Callable[[UnitOfWork, DatasetVersion], None] | None = None,
        redaction: dict[str, Any] | None = None,
        same_columns: tuple[DatasetVersion, Sequence[str]] | None = None,
    ) -> DatasetVersion:
        """Store ``source`` as a new version of dataset ``name`` (created when missing).

        The rows are written as Parquet; the version's identity is its content hash: the
        column names, types and values, whatever the source format, chunk size or Parquet
        encoding. When the dataset already has a version with the same content (the same
        content hash, or the same file digest), that version is returned and no version is
        recorded.

        Args:
            project: Project name (it must exist).
            name: Dataset name, e.g. ``"applications"``.
            source: A CSV, Parquet or JSON Lines file path; a seekable binary file object (with
                ``format``); a pandas DataFrame, a pyarrow Table or a ``pyarrow.RecordBatchReader``
                (a stream of batches, written as it is read: a batch job's output).
            format: ``csv``, ``parquet`` or ``jsonl``; guessed from a file's suffix when None.
            encoding: Text encoding of a CSV source, e.g. ``"cp1252"``; None: detected (UTF-8,
                UTF-8/UTF-16 with a byte-order mark, Windows-1252 and other code pages).
            delimiter: Field delimiter of a CSV source, e.g. ``";"``; None: detected among
                ``,`` ``;`` tab ``|``. What was used is the version's ``read_options``.
            description: Free text, kept with the version.
            chunk_bytes: Bytes read per chunk (memory stays bounded by about this much plus one
                Parquet row group).
            progress: Show a progress bar on stderr; None: only when stderr is a terminal.
            recorded: Called with the unit of work that records the version (and the version,
                new or identical) before it commits: the caller's own rows commit with the
                version or not at all (a batch job's outcome and lineage).
            redaction: What redaction made the rows (set by ``PersonalDataService.redact``).
            same_columns: A stored version and columns of ``source`` whose values are,
                row for row, that version's columns of the same names (a batch job's input
                columns); the caller vouches for it. Their profiles are that version's, and
                so are their personal-data findings when its scan looked at the same rows
                (:meth:`PersonalDataService.scan
                <civicml.data.personal.PersonalDataService.scan>`), not computed again; the
                other columns are profiled and scanned as always.

        Returns:
            The new version, or the existing one with identical content. A new version is
            scanned for personal data and checked against the dataset's expectations
            (:mod:`civicml.data.checks`); its ``classification`` and ``quality_status`` say
            what they found.

        Raises:
            InvalidInputError: Bad name, unknown format or encoding, or a source that is missing,
                a directory or symbolic link, empty, binary, undecodable or unreadable (the
                message names the line where it can).
            NotFoundError: The project does not exist.
        """
        validate_name("Dataset", name)
        if chunk_bytes < 1024:
            raise InvalidInputError(
                f"chunk_bytes {chunk_bytes} is too small.", hint="Use 1024 bytes or more."
            )
        proj = self._projects.get(project, "datasets.write")
        src = open_source(source, format, encoding=encoding, delimiter=delimiter)
        # A plaintext copy for the checks after recording, only where one will read it: the
        # expectations (the personal-data scan reads rows gathered as the file is written).
        # Expectations added meanwhile read a copy made from the store instead.
        with self._ctx.db.read() as conn:
            found = _find_dataset(conn, proj.id, name)
        keep = _checks.has_expectations(self._ctx, None if found is None else found.id)
        with self._temp_path() as tmp:
            converted = write_canonical(
                src,
                tmp if keep else None,
                chunk_bytes=chunk_bytes,
                progress=progress,
                known_profiles=_known_profiles(same_columns),
                store=self._ctx.artifacts.put_stream,  # stored as written
                # the rows the personal-data scan after recording looks at, kept as written
                sample_rows=(
                    self._ctx.settings.datasets_pii_scan_rows
                    if self._ctx.settings.datasets_pii_scan
                    else None
                ),
            )
            # Bytes first: a row never lacks them.
            stored = converted.stored or self._ctx.artifacts.put_file(tmp)
            # plaintext Parquet for the checks after recording
            canonical = self._keep(tmp) if keep else None
        profile = converted.profiler.result()
        columns = _columns(converted, profile)
        self._backfill(proj, name, converted.rows, columns)
        for attempt in range(1, _RETRIES + 1):
            try:
                with self._ctx.db.write() as uow:
                    version = self._record(
                        uow,
                        proj,
                        name,
                        digest=stored.digest,
                        content_hash=converted.content_hash,
                        size=stored.size,
                        source_format=src.format,
                        source_name=src.name,
                        fingerprint=converted.fingerprint,
                        read_options=converted.read_options,
                        rows=converted.rows,
                        columns=columns,
                        profile=profile,
                        description=description,
                        redaction=redaction,
                    )
                    if recorded is not None:
                        recorded(uow, version)
                break
            except IntegrityError as err:  # a concurrent ingest created the dataset first
                if attempt == _RETRIES:
                    raise ConflictError(
                        f"Dataset {name!r} changed concurrently and the version could not be "
                        "recorded.",
                        hint="Try again.",
                    ) from err
        else:  # pragma: no cover
            raise AssertionError("unreachable")
        try:
            if version.classification is None and version.quality_status is None:
                from civicml.data.checks import after_ingest  # the checks build on this service

                return after_ingest(
                    self._ctx,
                    version,
                    path=canonical,
                    same_columns=same_columns,
                    sample=converted.sample,
                )
            return version
        finally:
            if canonical is not None:
                with contextlib.suppress(FileNotFoundError):
                    canonical.unlink()

    # Reading ----------------------------------------------------------------------------------
    def get_dataset(self, project: str, name: str) -> Dataset:
        """The dataset ``name`` of ``project``.

        Raises:
            NotFoundError: The project or dataset does not exist (with close names as a hint).
        """
        proj = self._projects.get(project, "datasets.read")
        with self._ctx.db.read() as conn:
            return _dataset(conn, proj.name, _dataset_row(conn, proj, name))

    def list_datasets(self, project: str) -> list[Dataset]:
        """Every dataset of ``project``, by name."""
        proj = self._projects.get(project, "datasets.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(datasets).where(datasets.c.project_id == proj.id).order_by(datasets.c.name)
            ).all()
            return [_dataset(conn, proj.name, r) for r in rows]

    def get_version(self, project: str, name: str, version: int | str = "latest") -> DatasetVersion:
        """One version, by number (``3`` or ``"3"``) or ``"latest"``.

        Raises:
            NotFoundError: The project, dataset or version does not exist.
            InvalidInputError: ``version`` is neither a positive number nor ``"latest"``.
        """
        number = _parse_version(version)
        proj = self._projects.get(project, "datasets.read")
        with self._ctx.db.read() as conn:
            ds = _dataset_row(conn, proj, name)
            query = select(dataset_versions).where(dataset_versions.c.dataset_id == ds.id)
            if number is None:
                query = query.order_by(dataset_versions.c.version.desc()).limit(1)
            else:
                query = query.where(dataset_versions.c.version == number)
            row = conn.execute(query).first()
        if row is None:
            what = "has no versions" if number is None else f"has no version {number}"
            raise NotFoundError(
                f"Dataset {name!r} of project {project!r} {what}.",
                hint=f"List its versions: civicml datasets versions {name} -p {project}",
            )
        return _version(row, proj.name, ds.name)

    def get_version_by_id(self, version_id: str) -> DatasetVersion:
        """The version with id ``version_id`` (as lineage and reports name it).

        Raises:
            NotFoundError: No dataset version has that id.
        """
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(
                    dataset_versions,
                    datasets.c.name.label("dataset_name"),
                    projects.c.id.label("project_id"),
                    projects.c.name.label("project_name"),
                )
                .join(datasets, datasets.c.id == dataset_versions.c.dataset_id)
                .join(projects, projects.c.id == datasets.c.project_id)
                .where(dataset_versions.c.id == version_id)
            ).first()

        def missing() -> NotFoundError:
            return NotFoundError(
                f"Dataset version {version_id!r} does not exist.",
                hint="List dataset versions: civicml datasets versions NAME -p PROJECT",
            )

        if row is None:
            raise missing()
        self._projects.access.require(
            row.project_id, row.project_name, "datasets.read", hidden=missing
        )
        values = dict(row._mapping)
        return _version(values, row.project_name, row.dataset_name)

    def list_versions(self, project: str, name: str) -> list[DatasetVersion]:
        """The versions of a dataset, oldest first."""
        proj = self._projects.get(project, "datasets.read")
        with self._ctx.db.read() as conn:
            ds = _dataset_row(conn, proj, name)
            rows = conn.execute(
                select(dataset_versions)
                .where(dataset_versions.c.dataset_id == ds.id)
                .order_by(dataset_versions.c.version)
            ).all()
        return [_version(r, proj.name, ds.name) for r in rows]

    def open(self, version: DatasetVersion) -> BinaryIO:
        """The version's Parquet bytes, checked against its SHA-256 first (the caller closes it).

        Raises:
            NotFoundError: The file is not in the artifact store.
            ArtifactIntegrityError: The stored bytes no longer match the digest.
        """
        return self._ctx.artifacts.open(version.digest)

    def read(self, version: DatasetVersion, *, columns: list[str] | None = None) -> Any:
        """The version's rows as a ``pyarrow.Table`` (verified against the digest first)."""
        with self.open(version) as handle:
            return pq.read_table(handle, columns=columns)

    def iter_batches(self, version: DatasetVersion, *, batch_size: int = 65_536) -> Iterator[Any]:
        """The version's rows as ``pyarrow.RecordBatch`` es, for datasets too big for memory."""
        with self.open(version) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size)

    def to_pandas(self, version: DatasetVersion, *, columns: list[str] | None = None) -> Any:
        """The version's rows as a pandas ``DataFrame``."""
        return self.read(version, columns=columns).to_pandas()

    def get_classification(self, project: str, name: str) -> Classification | None:
        """Dataset ``name``'s classification: the most sensitive of its versions' personal-data
        scans (public < internal < confidential < personal); None until one is scanned."""
        return self.get_dataset(project, name).classification

    def check_usable(self, version: DatasetVersion, *, purpose: str = "training") -> None:
        """Refuse a version that training runs and pipelines may not consume: quarantined by a
        blocking expectation (and not released), never checked against the dataset's blocking
        expectations, or classified personal under the ``datasets_personal_training`` policy
        without a recorded justification.

        Raises:
            ConflictError: Why, with the command that resolves it as a hint.
        """
        from civicml.data.checks import check_usable

        check_usable(self._ctx, version, purpose=purpose)

    # Internals --------------------------------------------------------------------------------
    def _record(
        self,
        uow: UnitOfWork,
        proj: Project,
        name: str,
        *,
        digest: str,
        content_hash: str,
        size: int,
        source_format: SourceFormat,
        source_name: str | None,
        fingerprint: str | None,
        read_options: dict[str, str] | None,
        rows: int,
        columns: list[ColumnSchema],
        profile: list[ColumnProfile],
        description: str,
        redaction: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        conn = uow.conn
        ds = _find_dataset(conn, proj.id, name, lock=True)
        if ds is None:
            ds = self._insert_dataset(uow, proj, name)
        name = ds.name  # as created: names are found case-insensitively
        same = conn.execute(  # the same content; the same bytes (a version not back-filled)
            select(dataset_versions)
            .where(
                dataset_versions.c.dataset_id == ds.id,
                (dataset_versions.c.content_hash == content_hash)
                | (dataset_versions.c.digest == digest),
            )
            .order_by(dataset_versions.c.version)
            .limit(1)
        ).first()
        if same is not None:
            return _version(same, proj.name, ds.name)
        previous = conn.execute(
            select(dataset_versions.c.version, dataset_versions.c.schema)
            .where(dataset_versions.c.dataset_id == ds.id)
            .order_by(dataset_versions.c.version.desc())
            .limit(1)
        ).first()
        changes = None
        if previous is not None:
            before = [ColumnSchema.model_validate(c) for c in previous.schema]
            changes = diff_schemas(before, columns, previous_version=previous.version)
        number = int(ds.next_version)
        conn.execute(update(datasets).where(datasets.c.id == ds.id).values(next_version=number + 1))
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        values: dict[str, Any] = {
            "id": new_id(),
            "dataset_id": ds.id,
            "version": number,
            "digest": digest,
            "content_hash": content_hash,
            "size": size,
            "source_format": source_format.value,
            "source_name": source_name,
            "source_fingerprint": fingerprint,
            "row_count": rows,
            "schema": [c.model_dump(mode="json") for c in columns],
            "profile": [p.model_dump(mode="json", exclude_none=True) for p in profile],
            "schema_changes": None if changes is None else changes.model_dump(mode="json"),
            "read_options": read_options,
            "description": description,
            "created_at": now,
            "created_by": user,
            "redaction": redaction,
        }
        conn.execute(insert(dataset_versions).values(**values))
        ArtifactIndex.add(
            uow,
            project_id=proj.id,
            owner_kind="dataset_version",
            owner_id=values["id"],
            path=_DATA_PATH,
            stored=Stored(digest=digest, size=size),
            created_by=user,
            created_at=now,
            media_type=_MEDIA_TYPE,
        )
        self._lineage.node(
            uow,
            "dataset_version",
            values["id"],
            name=f"{name} v{number}",
            project_id=proj.id,
            properties={"digest": digest, "rows": rows},
        )
        self._audit.record(
            uow,
            "dataset_version.created",
            "dataset_version",
            values["id"],
            project=proj.name,
            after={
                "name": name,
                "version": number,
                "digest": digest,
                "content_hash": content_hash,
                "size": size,
                "source_format": source_format.value,
                "source_name": source_name,
                "source_fingerprint": fingerprint,
                "read_options": read_options,
                "row_count": rows,
                "columns": len(columns),
                "schema_changes": values["schema_changes"],
            },
        )
        return _version(values, proj.name, name)

    def _backfill(self, proj: Project, name: str, rows: int, columns: list[ColumnSchema]) -> None:
        """Record the content hash of this dataset's versions made before migration 0025 that
        could hold the rows being ingested (the same row count and column names and types),
        computed from their stored Parquet, so that the same content is recognised as the same
        version. Each old version is read at most once: afterwards its hash is in its row.

        Done lazily, here, because the migration cannot read the artifact store (it may be
        encrypted with keys from a provider, or remote); and only for look-alike versions,
        because computing a hash means reading the whole file. Runs before the write
        transaction, so no lock is held while reading; a version whose bytes are gone (purged
        by retention or erasure) or unreadable keeps no hash and is matched by digest only.
        """
        shape = [(c.name, c.type) for c in columns]
        with self._ctx.db.read() as conn:
            ds = _find_dataset(conn, proj.id, name)
            if ds is None:
                return
            candidates = conn.execute(
                select(dataset_versions.c.id, dataset_versions.c.digest, dataset_versions.c.schema)
                .where(
                    dataset_versions.c.dataset_id == ds.id,
                    dataset_versions.c.content_hash.is_(None),
                    dataset_versions.c.row_count == rows,
                )
                .order_by(dataset_versions.c.version)
            ).all()
        for row in candidates:
            if [(c["name"], c["type"]) for c in row.schema] != shape:
                continue
            try:
                with self._ctx.artifacts.open(row.digest) as handle:
                    found = content_hash_of_parquet(handle)
            except (CivicMLError, OSError, ValueError) as err:  # gone, damaged: digest only
                _log.warning("dataset version %s: no content hash (%s)", row.id, err)
                continue
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    update(dataset_versions)
                    .where(
                        dataset_versions.c.id == row.id, dataset_versions.c.content_hash.is_(None)
                    )
                    .values(content_hash=found)
                )

    def _insert_dataset(self, uow: UnitOfWork, proj: Project, name: str) -> _Row:
        dataset_id = new_id()
        uow.conn.execute(
            insert(datasets).values(
                id=dataset_id,
                project_id=proj.id,
                name=name,
                description="",
                next_version=1,
                created_at=self._ctx.clock.now(),
                created_by=self._ctx.principal.user,
            )
        )
        self._audit.record(
            uow, "dataset.created", "dataset", dataset_id, project=proj.name, after={"name": name}
        )
        return uow.conn.execute(select(datasets).where(datasets.c.id == dataset_id)).one()

    def _keep(self, tmp: Path) -> Path:
        """A second name for the canonical file (a hard link, or a copy where links fail),
        named as ``_temp_path`` names files so ``recover()`` removes it after a crash."""
        kept = tmp.with_name(f"{os.getpid()}-{os.urandom(8).hex()}.part")
        try:
            os.link(tmp, kept)
        except OSError:
            shutil.copyfile(tmp, kept)
        return kept

    @contextlib.contextmanager
    def _temp_path(self) -> Iterator[Path]:
        """A temp file in the artifact store's temp folder, named so that ``recover()`` removes
        it when this process dies mid-ingest."""
        folder = self._ctx.artifacts.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{os.urandom(8).hex()}.part"
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def diff_schemas(
    before: list[ColumnSchema], after: list[ColumnSchema], *, previous_version: int
) -> SchemaChanges:
    """Columns added, removed, retyped and changed in nullability from ``before`` to ``after``."""
    old = {c.name: c for c in before}
    new = {c.name: c for c in after}
    return SchemaChanges(
        previous_version=previous_version,
        added=[c for c in after if c.name not in old],
        removed=[c for c in before if c.name not in new],
        retyped=[
            TypeChange(name=c.name, before=old[c.name].type, after=c.type)
            for c in after
            if c.name in old and old[c.name].type != c.type
        ],
        nullability_changed=[
            c.name for c in after if c.name in old and old[c.name].nullable != c.nullable
        ],
    )


def _known_profiles(
    same_columns: tuple[DatasetVersion, Sequence[str]] | None,
) -> dict[str, ColumnProfile]:
    if same_columns is None:
        return {}
    version, names = same_columns
    return {p.name: p for p in version.profile if p.name in set(names)}


def _columns(converted: Converted, profile: list[ColumnProfile]) -> list[ColumnSchema]:
    missing = {p.name: p.missing > 0 for p in profile}
    return [
        ColumnSchema(name=f.name, type=str(f.type), nullable=missing[f.name])
        for f in converted.schema
    ]


def _parse_version(version: int | str) -> int | None:
    if isinstance(version, str) and version.strip().lower() == "latest":
        return None
    text = str(version).strip()
    if isinstance(version, bool) or not (text.isascii() and text.isdigit()):
        number = 0
    else:
        number = int(text)
    if not 1 <= number <= INT64_MAX:
        raise InvalidInputError(
            f"Dataset version {version!r} is not valid.",
            hint="Use a version number from 1, or 'latest'.",
        )
    return number


def _find_dataset(
    conn: Connection, project_id: str, name: str, *, lock: bool = False
) -> _Row | None:
    query = select(datasets).where(  # names are case-insensitive
        datasets.c.project_id == project_id, func.lower(datasets.c.name) == name_key(name)
    )
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def _dataset_row(conn: Connection, proj: Project, name: str) -> _Row:
    row = _find_dataset(conn, proj.id, name)
    if row is None:
        names = conn.execute(
            select(datasets.c.name).where(datasets.c.project_id == proj.id)
        ).scalars()
        raise NotFoundError(
            f"Dataset {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, names)
            or f"Ingest it: civicml datasets ingest {name} FILE -p {proj.name}",
        )
    return row


def _dataset(conn: Connection, project: str, row: _Row) -> Dataset:
    latest = conn.execute(
        select(func.max(dataset_versions.c.version)).where(dataset_versions.c.dataset_id == row.id)
    ).scalar()
    return Dataset(
        id=row.id,
        project=project,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
        latest_version=latest,
        classification=row._mapping.get("classification"),
    )


def _version(row: Any, project: str, name: str) -> DatasetVersion:
    values = row if isinstance(row, dict) else row._mapping
    changes = values["schema_changes"]
    read_options = values.get("read_options")
    return DatasetVersion(
        id=values["id"],
        project=project,
        name=name,
        version=values["version"],
        digest=values["digest"],
        content_hash=values.get("content_hash"),
        size=values["size"],
        source_format=SourceFormat(values["source_format"]),
        source_name=values["source_name"],
        source_fingerprint=values["source_fingerprint"],
        row_count=values["row_count"],
        columns=[ColumnSchema.model_validate(c) for c in values["schema"]],
        profile=[ColumnProfile.model_validate(p) for p in values["profile"]],
        schema_changes=None if changes is None else SchemaChanges.model_validate(changes),
        read_options=None if read_options is None else ReadOptions.model_validate(read_options),
        description=values["description"],
        created_at=values["created_at"],
        created_by=values["created_by"],
        quality_status=values.get("quality_status"),
        classification=values.get("classification"),
        redacted_from=(values.get("redaction") or {}).get("from"),
    )
