"""The personal-data service: scan versions, classify datasets, redact into successor versions.

Scanning takes ``datasets.write`` (it stores a report and sets the classification), reading a
scan ``datasets.read``, redacting ``datasets.write``; justifying training on a version classified
personal takes ``datasets.override_quarantine``. Audit events: ``dataset_version.pii_scanned``,
``dataset_version.redacted`` (rules, k, the successor), ``dataset_version.personal_use_justified``.

Every ingested version is scanned (``DatasetService.ingest``), on an evenly spread sample of at
most ``datasets_pii_scan_rows`` rows (every ``stride``-th row: :mod:`civicml.data._sample`)
within ``datasets_pii_scan_s`` seconds; an ingest gathers the sample as it writes the rows. A
dataset's classification is the most sensitive of its versions' (``Dataset.classification``;
:meth:`PersonalDataService.get_classification`).

Keyed hashing uses a per-project secret made on first use: 32 random bytes, wrapped by the
artifact store's key provider (the current key-encryption key, AES-256-GCM, bound to the project
and the secret's name) and stored wrapped; it is unwrapped only in memory, and re-wrapped under
the current key whenever it is used after ``civicml keys rotate``.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import CivicMLError, ConfigurationError, ConflictError
from civicml.data import _checks
from civicml.data._sample import RowSample, sample_size, sample_stride, scanned_columns
from civicml.data._tables import dataset_versions, pseudonym_keys
from civicml.data.pii import Scan, _best_first, classify, scan_table
from civicml.data.pii_schemas import (
    PiiFinding,
    PiiReport,
    RedactAction,
    RedactionResult,
    RedactRequest,
)
from civicml.data.redaction import k_anonymity, redact_file
from civicml.data.report_html import render_pii
from civicml.data.schemas import Classification, DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.store.context import Context

__all__ = ["PersonalDataService"]

_AAD = b"civicml/pseudonym-key/v1|"


class PersonalDataService:
    """Personal-data scans, classifications and redactions, for ``ctx.principal``.

    Example:
        >>> svc = PersonalDataService(ctx)  # doctest: +SKIP
        >>> svc.scan(version).classification  # doctest: +SKIP
        <Classification.PERSONAL: 'personal'>
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._datasets = DatasetService(ctx)
        self._projects = ProjectService(ctx)

    # Scanning ---------------------------------------------------------------------------------
    def scan(
        self,
        version: DatasetVersion,
        *,
        trigger: str = "manual",
        path: Path | None = None,
        same_columns: tuple[DatasetVersion, Sequence[str]] | None = None,
        sample: RowSample | None = None,
    ) -> PiiReport:
        """Scan ``version`` for personal data; store the report and its classification.

        ``sample``: the rows to look at, gathered while the version was written (an ingest's
        :class:`~civicml.data._sample.RowSample` with the ``datasets_pii_scan_rows`` limit):
        the rows a scan of the stored file reads.

        ``same_columns``: a stored version and columns of ``version`` whose values are, row
        for row, its columns of the same names (a batch job's input columns). When that
        version's newest scan is complete and looked at the rows this scan looks at (the same
        row count and sample size), its findings for those columns are taken instead of
        scanning them again: the report is the one a scan of every column makes.
        """
        target = _checks.target_of(self._ctx, version, "datasets.write")
        limit = self._ctx.settings.datasets_pii_scan_rows
        reused = self._reusable(target.rows, limit, version, same_columns)
        if sample is not None and sample.rows == target.rows and sample.limit == limit:
            schema, rows = _gathered(sample, skip=list(reused))
        else:
            with contextlib.ExitStack() as stack:
                if path is None:
                    path = stack.enter_context(_checks.plaintext(self._ctx, target.digest))
                schema, rows = _sample(path, target.rows, limit, skip=list(reused))
        found = scan_table(
            rows, time_budget_s=self._ctx.settings.datasets_pii_scan_s, schema=schema
        )
        if reused:
            found = _merged(found, reused, [c.name for c in version.columns])
        redacted = {r["column"]: r["action"] for r in (target.row.redaction or {}).get("rules", [])}
        findings = [
            f.model_copy(update={"redacted": redacted.get(f.column)}) if f.column in redacted else f
            for f in found.findings
        ]
        classification = classify(findings)
        if (
            redacted
            and classification is Classification.INTERNAL
            and any(action != "drop" for action in redacted.values())
        ):  # pseudonymised or generalised columns remain: not personal, but not plain internal
            classification = Classification.CONFIDENTIAL
        report = PiiReport(
            id=_checks.new_report_id(),
            project=target.project,
            dataset=target.dataset,
            version=target.version,
            dataset_version_id=target.version_id,
            classification=classification,
            findings=findings,
            columns_scanned=found.columns_scanned,
            rows_scanned=found.rows_scanned,
            rows=target.rows,
            complete=found.complete,
            trigger=trigger,
            created_at=self._ctx.clock.now(),
            created_by=self._ctx.principal.user,
        )
        document = report.model_dump(mode="json")
        _checks.store_check(
            self._ctx,
            target,
            kind="pii",
            report_id=report.id,
            trigger=trigger,
            status=classification.value,
            summary={
                "classification": classification.value,
                "columns": sorted({f.column for f in findings}),
                "types": sorted({f.type.value for f in findings}),
            },
            document=document,
            html=render_pii(document, title=f"Personal data in {target.dataset} v{target.version}"),
            version_values={"classification": classification.value},
            dataset_values={"classification": self._dataset_level(target, classification).value},
            action="dataset_version.pii_scanned",
        )
        return report

    def _reusable(
        self,
        rows: int,
        limit: int,
        version: DatasetVersion,
        same_columns: tuple[DatasetVersion, Sequence[str]] | None,
    ) -> dict[str, list[PiiFinding]]:
        """The findings of the columns ``same_columns`` names, by column, from its version's
        newest scan when that scan is complete and sampled the rows this one samples; {}
        when none can be reused (or every column could: a scan needs a column of its own)."""
        if same_columns is None:
            return {}
        source, names = same_columns
        try:
            report = self.report(source)
        except CivicMLError:  # never scanned, its report gone or hidden: scan every column
            return {}
        if (
            not report.complete
            or report.rows != rows
            or report.rows_scanned != sample_size(rows, limit)
        ):
            return {}
        have = {c.name for c in version.columns}
        reused: dict[str, list[PiiFinding]] = {n: [] for n in names if n in have}
        if not reused or len(reused) == len(have):
            return {}
        for f in report.findings:  # the source's redaction is not this version's
            if f.column in reused:
                reused[f.column].append(f.model_copy(update={"redacted": None}))
        return reused

    def _dataset_level(self, target: _checks.Target, new: Classification) -> Classification:
        with self._ctx.db.read() as conn:
            found = (
                conn.execute(
                    select(dataset_versions.c.classification).where(
                        dataset_versions.c.dataset_id == target.dataset_id,
                        dataset_versions.c.id != target.version_id,
                        dataset_versions.c.classification.is_not(None),
                    )
                )
                .scalars()
                .all()
            )
        return max([new, *(Classification(c) for c in found)], key=lambda c: c.rank)

    def report(self, version: DatasetVersion) -> PiiReport:
        """The newest personal-data scan of ``version``.

        Raises:
            NotFoundError: It has none yet.
        """
        target = _checks.target_of(self._ctx, version, "datasets.read")
        return PiiReport.model_validate_json(
            _checks.read_check_file(self._ctx, target, "pii", "report.json")
        )

    def report_html(self, version: DatasetVersion) -> bytes:
        """The newest scan's HTML page."""
        target = _checks.target_of(self._ctx, version, "datasets.read")
        return _checks.read_check_file(self._ctx, target, "pii", "report.html")

    def get_classification(self, project: str, name: str) -> Classification | None:
        """Dataset ``name``'s classification: the most sensitive of its versions' (None: none
        of them scanned yet)."""
        return self._datasets.get_dataset(project, name).classification

    def justify_personal_use(
        self, version: DatasetVersion, *, justification: str
    ) -> DatasetVersion:
        """Record why a version classified personal may be trained on (policy
        ``datasets_personal_training = "redacted_or_justified"``), in the audit trail.

        Raises:
            PermissionDeniedError: The caller lacks ``datasets.override_quarantine``.
            ConflictError: The version is not classified personal.
        """
        text = _checks.justification(justification)
        target = _checks.target_of(self._ctx, version, "datasets.override_quarantine")
        if target.row.classification != Classification.PERSONAL.value:
            raise ConflictError(
                f"Dataset version {target.dataset} v{target.version} is not classified personal "
                f"({target.row.classification or 'not scanned'}).",
                hint="Only a version classified personal needs a justification.",
            )
        _checks.record_approval(
            self._ctx, target, "personal", text, {}, "dataset_version.personal_use_justified"
        )
        return self._datasets.get_version_by_id(target.version_id)

    # Redaction --------------------------------------------------------------------------------
    def redact(self, version: DatasetVersion, request: RedactRequest) -> RedactionResult:
        """Write ``version`` through ``request.rules`` as a successor version (of the same
        dataset, or ``request.target``), with ``DerivedFrom`` lineage to ``version``.

        Raises:
            InvalidInputError: A rule names a missing column or does not fit its type; a
                quasi-identifier is not in the result.
            ConflictError: The result is not ``min_k``-anonymous over the quasi-identifiers.
        """
        source = _checks.target_of(self._ctx, version, "datasets.write")
        self._projects.get(source.project, "datasets.write")
        secrets = {
            r.key: self._secret(source, r.key)
            for r in request.rules
            if r.action is RedactAction.HASH
        }
        folder = self._ctx.artifacts.scratch_dir / f"{os.getpid()}-{os.urandom(8).hex()}.redact"
        folder.mkdir(parents=True)
        out = folder / f"{source.dataset}-v{source.version}-redacted.parquet"  # its source_name
        try:
            with _checks.plaintext(self._ctx, source.digest) as path:
                redact_file(path, out, list(request.rules), secrets=secrets)
            anonymity = None
            if request.quasi_identifiers:
                anonymity = k_anonymity(out, request.quasi_identifiers)
                if anonymity.k < request.min_k:
                    raise ConflictError(
                        f"The redacted rows are only {anonymity.k}-anonymous over "
                        f"{', '.join(request.quasi_identifiers)} (min_k {request.min_k}); "
                        "nothing was written.",
                        hint="Generalise more (wider age bands, shorter postcode prefixes, "
                        "dates to the year) or drop a quasi-identifier.",
                    )
            redaction = {
                "from": source.version_id,
                "rules": [r.model_dump(mode="json") for r in request.rules],
                "k": None if anonymity is None else anonymity.k,
            }
            successor = self._datasets.ingest(
                source.project,
                request.target or source.dataset,
                out,
                format="parquet",
                description=request.description
                or f"Redaction of {source.dataset} v{source.version}",
                progress=False,
                redaction=redaction,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._link(source, successor, request, anonymity)
        return RedactionResult(
            source=self._datasets.get_version_by_id(source.version_id),
            version=successor,
            rules=list(request.rules),
            k_anonymity=anonymity,
            classification=successor.classification,
        )

    def _link(
        self,
        source: _checks.Target,
        successor: DatasetVersion,
        request: RedactRequest,
        anonymity: Any,
    ) -> None:
        lineage = LineageService(self._ctx)
        with self._ctx.db.write() as uow:
            made = lineage.node(
                uow,
                "dataset_version",
                successor.id,
                name=f"{successor.name} v{successor.version}",
                project_id=source.project_id,
            )
            origin = lineage.node(
                uow,
                "dataset_version",
                source.version_id,
                name=f"{source.dataset} v{source.version}",
                project_id=source.project_id,
            )
            lineage.link(uow, origin, made, "DerivedFrom")  # data flows original → successor
            AuditTrail(self._ctx).record(
                uow,
                "dataset_version.redacted",
                "dataset_version",
                successor.id,
                project=source.project,
                after={
                    "from": {
                        "dataset": source.dataset,
                        "version": source.version,
                        "id": source.version_id,
                    },
                    "to": {"dataset": successor.name, "version": successor.version},
                    "rules": [
                        {"column": r.column, "action": r.action.value} for r in request.rules
                    ],
                    "quasi_identifiers": request.quasi_identifiers,
                    "k": None if anonymity is None else anonymity.k,
                },
            )

    def _secret(self, target: _checks.Target, name: str) -> bytes:
        keys = self._ctx.artifacts.keys
        if keys is None:
            raise ConfigurationError(
                "Keyed hashing needs a key provider, and this artifact store has none.",
                hint="Set keys_dir (default $CIVICML_HOME/keys).",
            )
        aad = _AAD + target.project_id.encode() + b"|" + name.encode()
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(pseudonym_keys).where(
                    pseudonym_keys.c.project_id == target.project_id, pseudonym_keys.c.name == name
                )
            ).first()
        if row is None:
            secret = os.urandom(32)
            key_id = keys.current_key_id()
            wrapped = base64.b64encode(keys.wrap(key_id, secret, aad)).decode()
            try:
                with self._ctx.db.write() as uow:
                    uow.conn.execute(
                        insert(pseudonym_keys).values(
                            project_id=target.project_id,
                            name=name,
                            key_id=key_id,
                            wrapped=wrapped,
                            created_at=self._ctx.clock.now(),
                            created_by=self._ctx.principal.user,
                        )
                    )
                    AuditTrail(self._ctx).record(
                        uow,
                        "pseudonym_key.created",
                        "pseudonym_key",
                        f"{target.project}/{name}",
                        project=target.project,
                        after={"name": name, "key_id": key_id},
                    )
                return secret
            except IntegrityError:  # made concurrently: use that one
                return self._secret(target, name)
        secret = keys.unwrap(row.key_id, base64.b64decode(row.wrapped), aad)
        current = keys.current_key_id()
        if row.key_id != current:  # rotated since: re-wrap under the current key
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    update(pseudonym_keys)
                    .where(
                        pseudonym_keys.c.project_id == target.project_id,
                        pseudonym_keys.c.name == name,
                    )
                    .values(
                        key_id=current,
                        wrapped=base64.b64encode(keys.wrap(current, secret, aad)).decode(),
                    )
                )
        return secret


def _merged(found: Scan, reused: dict[str, list[PiiFinding]], columns: list[str]) -> Scan:
    """The scan of every column: ``found`` (the other columns) with the reused findings, in
    the order a scan of every column reports them (by column, then best first)."""
    position = {name: i for i, name in enumerate(columns)}
    every = [f for fs in reused.values() for f in fs] + found.findings
    every.sort(key=lambda f: position.get(f.column, len(columns)))
    return Scan(
        _best_first(every), found.columns_scanned + len(reused), found.rows_scanned, found.complete
    )


def _sample(path: Path, rows: int, limit: int, skip: Sequence[str] = ()) -> tuple[Any, Any]:
    """The schema of the columns to scan (all but those ``skip`` names) and the sampled rows
    (every ``stride``-th: :func:`~civicml.data._sample.sample_stride`) of the Parquet file, read
    one row group at a time (memory: one row group plus the sample); the columns whose values a
    scan does not look at are not read."""
    parquet = pq.ParquetFile(str(path))
    schema = pa.schema([f for f in parquet.schema_arrow if f.name not in set(skip)])
    return schema, _sample_rows(parquet, rows, limit, scanned_columns(schema))


def _gathered(sample: RowSample, skip: Sequence[str]) -> tuple[Any, Any]:
    """What :func:`_sample` reads, from the rows an ingest gathered as it wrote them."""
    schema = pa.schema([f for f in sample.schema if f.name not in set(skip)])
    return schema, sample.table().select(scanned_columns(schema))


def _sample_rows(parquet: Any, rows: int, limit: int, columns: list[str]) -> Any:
    stride = sample_stride(rows, limit)
    if stride == 1 or not columns:  # no columns: as many rows as a sample has, nothing read
        return parquet.read(columns=columns).slice(0, sample_size(rows, limit))
    parts, start = [], 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        first = -(-start // stride) * stride
        if first < start + size:
            part = parquet.read_row_group(group, columns=columns)
            parts.append(part.take(pa.array(range(first - start, size, stride), pa.int64())))
        start += size
    return pa.concat_tables(parts) if parts else parquet.schema_arrow.empty_table().select(columns)
