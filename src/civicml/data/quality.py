"""The quality service: expectations of datasets, their reports, quarantine and its override.

Adding and removing expectations and running them take ``datasets.write`` on the project,
listing them and reading reports ``datasets.read``; releasing a quarantined version takes
``datasets.override_quarantine`` (a role apart from the people who ingest, like an approval).
Every change is one unit of work with its audit event: ``dataset.expectation_added``,
``…expectation_removed``, ``dataset_version.quality_checked`` (with the report's file digests),
``dataset_version.quarantine_overridden`` (with the justification).

The expectations run at every ingestion (:meth:`QualityService.check` from
``DatasetService.ingest``), on demand, and as the ``validate`` pipeline step. A version whose
blocking expectation failed is *quarantined*: it stays readable, but
:func:`civicml.data.usage.check_usable` refuses it to training and pipelines until a holder of
``datasets.override_quarantine`` releases it.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.ids import new_id, validate_name
from civicml.core.names import name_key
from civicml.data import _checks
from civicml.data._tables import dataset_expectations
from civicml.data.expectation_schemas import (
    Expectation,
    ExpectationCreate,
    ExpectationKind,
    QualityReport,
    QualityStatus,
)
from civicml.data.expectations import DEFAULT_SAMPLE_ROWS, check_expectation, evaluate
from civicml.data.report_html import render_quality
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.store.context import Context

__all__ = ["MAX_EXPECTATIONS", "QualityService"]

MAX_EXPECTATIONS = 200
MAX_SAMPLE_ROWS = 100
_TRIGGERS = ("ingest", "manual", "pipeline")


class QualityService:
    """Quality expectations of a project's datasets, for ``ctx.principal``.

    Example:
        >>> svc = QualityService(ctx)  # doctest: +SKIP
        >>> svc.add("benefits", "applications", ExpectationCreate(
        ...     name="age-range", kind="between", column="age", min=0, max=120))  # doctest: +SKIP
        >>> svc.run(version).status  # doctest: +SKIP
        <QualityStatus.PASSED: 'passed'>
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._datasets = DatasetService(ctx)
        self._audit = AuditTrail(ctx)

    # Expectations -----------------------------------------------------------------------------
    def add(self, project: str, name: str, spec: ExpectationCreate) -> Expectation:
        """Add an expectation to dataset ``name`` (checked against its latest version's columns).

        Raises:
            InvalidInputError: A column the dataset lacks, a bad pattern or SQL.
            ConflictError: An expectation of that name exists, or the dataset has too many.
        """
        proj = self._projects.get(project, "datasets.write")
        validate_name("Expectation", spec.name)
        dataset = self._datasets.get_dataset(proj.name, name)
        schema = None
        if dataset.latest_version is not None:
            latest = self._datasets.get_version(proj.name, dataset.name, "latest")
            with self._datasets.open(latest) as handle:
                import pyarrow.parquet as pq  # type: ignore[import-untyped]

                schema = pq.read_schema(handle)
        check_expectation(spec, schema)
        if spec.kind is ExpectationKind.REFERENCES:
            self._datasets.get_dataset(proj.name, str(spec.dataset))  # it must exist
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        values: dict[str, Any] = {
            "id": new_id(),
            "dataset_id": dataset.id,
            "name": spec.name,
            "kind": spec.kind.value,
            "spec": spec.model_dump(mode="json"),
            "blocking": spec.blocking,
            "created_at": now,
            "created_by": user,
        }
        try:
            with self._ctx.db.write() as uow:
                count = uow.conn.execute(
                    select(func.count()).where(dataset_expectations.c.dataset_id == dataset.id)
                ).scalar_one()
                if count >= MAX_EXPECTATIONS:
                    raise ConflictError(
                        f"Dataset {dataset.name!r} has {count} expectations, the most it may have.",
                        hint="Remove one, or combine checks into one SQL expectation.",
                    )
                same = uow.conn.execute(
                    select(dataset_expectations.c.id).where(
                        dataset_expectations.c.dataset_id == dataset.id,
                        func.lower(dataset_expectations.c.name) == name_key(spec.name),
                    )
                ).first()
                if same is not None:  # names are unique regardless of letter case
                    raise IntegrityError("duplicate", None, ValueError(spec.name))
                uow.conn.execute(insert(dataset_expectations).values(**values))
                self._audit.record(
                    uow,
                    "dataset.expectation_added",
                    "dataset",
                    dataset.id,
                    project=proj.name,
                    after={"dataset": dataset.name, **values["spec"]},
                )
        except IntegrityError as err:
            raise ConflictError(
                f"Dataset {dataset.name!r} already has an expectation {spec.name!r}.",
                hint="Choose another name, or remove it first: civicml datasets expect remove "
                f"{dataset.name} {spec.name} -p {proj.name}",
            ) from err
        return _expectation(values, proj.name, dataset.name)

    def list(self, project: str, name: str) -> builtins.list[Expectation]:
        """The expectations of dataset ``name``, by name."""
        dataset = self._datasets.get_dataset(project, name)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(dataset_expectations)
                .where(dataset_expectations.c.dataset_id == dataset.id)
                .order_by(dataset_expectations.c.name)
            ).all()
        return [_expectation(r._mapping, dataset.project, dataset.name) for r in rows]

    def remove(self, project: str, name: str, expectation: str) -> None:
        """Remove an expectation (versions already checked keep their status and reports).

        Raises:
            NotFoundError: The dataset has no such expectation (close names as a hint).
        """
        proj = self._projects.get(project, "datasets.write")
        dataset = self._datasets.get_dataset(proj.name, name)
        with self._ctx.db.write() as uow:
            row = uow.conn.execute(
                select(dataset_expectations).where(
                    dataset_expectations.c.dataset_id == dataset.id,
                    func.lower(dataset_expectations.c.name) == name_key(expectation),
                )
            ).first()
            if row is None:
                names = uow.conn.execute(
                    select(dataset_expectations.c.name).where(
                        dataset_expectations.c.dataset_id == dataset.id
                    )
                ).scalars()
                raise NotFoundError(
                    f"Dataset {dataset.name!r} has no expectation {expectation!r}.",
                    hint=closest(expectation, names)
                    or f"List them: civicml datasets expect list {dataset.name} -p {proj.name}",
                )
            uow.conn.execute(
                delete(dataset_expectations).where(dataset_expectations.c.id == row.id)
            )
            self._audit.record(
                uow,
                "dataset.expectation_removed",
                "dataset",
                dataset.id,
                project=proj.name,
                before={"dataset": dataset.name, **row.spec},
            )

    # Running ----------------------------------------------------------------------------------
    def run(
        self,
        version: DatasetVersion,
        *,
        trigger: str = "manual",
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        path: Path | None = None,
    ) -> QualityReport | None:
        """Evaluate the dataset's expectations on ``version``; store the report and the
        version's new status. Returns None when the dataset has no expectations.

        Args:
            version: The version to check.
            trigger: ``manual``, ``ingest`` or ``pipeline`` (recorded).
            sample_rows: Failing rows kept per expectation (0-100).
            path: A plaintext copy of its Parquet file when the caller has one.
        """
        if trigger not in _TRIGGERS:
            raise InvalidInputError(f"Trigger {trigger!r} is not known.")
        if not 0 <= sample_rows <= MAX_SAMPLE_ROWS:
            raise InvalidInputError(
                f"sample_rows {sample_rows} is out of range.", hint="Use 0 to 100."
            )
        target = _checks.target_of(self._ctx, version, "datasets.write")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(dataset_expectations)
                .where(dataset_expectations.c.dataset_id == target.dataset_id)
                .order_by(dataset_expectations.c.name)
            ).all()
        if not rows:
            return None
        specs = [ExpectationCreate.model_validate(r.spec) for r in rows]
        if path is None:
            with _checks.plaintext(self._ctx, target.digest) as copy:
                results = self._evaluate(target, specs, copy, sample_rows)
        else:
            results = self._evaluate(target, specs, path, sample_rows)
        failed = [r for r in results if r.status != "passed"]
        blocking = [r for r in failed if r.blocking]
        status = (
            QualityStatus.QUARANTINED
            if blocking
            else QualityStatus.WARNED
            if failed
            else QualityStatus.PASSED
        )
        if status is QualityStatus.QUARANTINED and target.row.quality_status == "released":
            status = QualityStatus.RELEASED  # the override stands for this version
        report = QualityReport(
            id=_checks.new_report_id(),
            project=target.project,
            dataset=target.dataset,
            version=target.version,
            dataset_version_id=target.version_id,
            trigger=trigger,
            status=status,
            rows=target.rows,
            evaluated=len(results),
            failed=len(failed),
            blocking_failed=len(blocking),
            results=results,
            created_at=self._ctx.clock.now(),
            created_by=self._ctx.principal.user,
        )
        document = report.model_dump(mode="json")
        _checks.store_check(
            self._ctx,
            target,
            kind="quality",
            report_id=report.id,
            trigger=trigger,
            status=status.value,
            summary={
                "evaluated": len(results),
                "failed": [r.name for r in failed],
                "blocking_failed": [r.name for r in blocking],
            },
            document=document,
            html=render_quality(document, title=f"Quality of {target.dataset} v{target.version}"),
            version_values={"quality_status": status.value},
            action="dataset_version.quality_checked",
        )
        return report

    def _evaluate(self, target: _checks.Target, specs: Any, path: Path, sample_rows: int) -> Any:
        copies: builtins.list[Any] = []

        def references(name: str, number: int | None) -> Path | None:
            try:
                other = self._datasets.get_version(target.project, name, number or "latest")
            except NotFoundError:
                return None
            cm = _checks.plaintext(self._ctx, other.digest)
            copies.append(cm)
            return cm.__enter__()

        try:
            return evaluate(
                path,
                specs,
                now=self._ctx.clock.now(),
                references=references,
                sample_rows=sample_rows,
                timeout_s=self._ctx.settings.datasets_check_timeout_s,
            )
        finally:
            for cm in copies:
                cm.__exit__(None, None, None)

    def report(self, version: DatasetVersion) -> QualityReport:
        """The newest quality report of ``version``.

        Raises:
            NotFoundError: It has none yet.
        """
        target = _checks.target_of(self._ctx, version, "datasets.read")
        data = _checks.read_check_file(self._ctx, target, "quality", "report.json")
        return QualityReport.model_validate_json(data)

    def report_html(self, version: DatasetVersion) -> bytes:
        """The newest quality report's HTML page."""
        target = _checks.target_of(self._ctx, version, "datasets.read")
        return _checks.read_check_file(self._ctx, target, "quality", "report.html")

    # Override ---------------------------------------------------------------------------------
    def override_quarantine(self, version: DatasetVersion, *, justification: str) -> DatasetVersion:
        """Release a quarantined version for training and pipelines, with a justification
        recorded in the audit trail.

        Raises:
            PermissionDeniedError: The caller lacks ``datasets.override_quarantine``.
            ConflictError: The version is not quarantined.
            InvalidInputError: No justification.
        """
        text = _checks.justification(justification)
        target = _checks.target_of(self._ctx, version, "datasets.override_quarantine")
        if target.row.quality_status != QualityStatus.QUARANTINED.value:
            raise ConflictError(
                f"Dataset version {target.dataset} v{target.version} is not quarantined "
                f"(quality status: {target.row.quality_status or 'not checked'}).",
                hint="Only a quarantined version needs an override.",
            )
        _checks.record_approval(
            self._ctx,
            target,
            "quarantine",
            text,
            {"quality_status": QualityStatus.RELEASED.value},
            "dataset_version.quarantine_overridden",
        )
        return self._datasets.get_version_by_id(target.version_id)


def _expectation(values: Any, project: str, dataset: str) -> Expectation:
    return Expectation(
        **values["spec"],
        id=values["id"],
        project=project,
        dataset_name=dataset,
        created_at=values["created_at"],
        created_by=values["created_by"],
    )
