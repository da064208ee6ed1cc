"""``proj.monitoring``: drift reports between dataset versions, embedded or against a server."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.errors import InvalidInputError
from civicml.core.ids import validate_name
from civicml.data.schemas import DatasetVersion
from civicml.monitoring.records import Report
from civicml.monitoring.schemas import DriftReport
from civicml.monitoring.service import MonitoringService
from civicml.sdk.endpoints import Endpoint

__all__ = ["MonitoringHandle"]

_REPORTS = TypeAdapter(list[Report])
VersionLike = DatasetVersion | tuple[str, int | str] | Endpoint


class MonitoringHandle:
    """The monitoring reports of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> report = proj.monitoring.drift(captured, baseline=training)  # doctest: +SKIP
        >>> report.summary.verdict, report.summary.drifted_columns  # doctest: +SKIP
        ('drift', ['income', 'region'])
        >>> Path("drift.html").write_text(proj.monitoring.html(report))  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    @property
    def _svc(self) -> MonitoringService:
        return MonitoringService(self._backend.ctx)

    def drift(
        self,
        current: VersionLike,
        *,
        baseline: VersionLike,
        columns: Sequence[str] | None = None,
        title: str | None = None,
        categorical: Sequence[str] | None = None,
        numerical: Sequence[str] | None = None,
        drift_share: float = 0.5,
        min_rows: int | None = None,
    ) -> Report:
        """Compare ``current`` with ``baseline`` and store the drift report.

        Args:
            current: The data to check: a dataset version, ``(name, version)`` where the
                version may be ``"latest"``, or an endpoint — its captured requests so far are
                stored as a dataset version first (``endpoint.capture_to_dataset()``).
            baseline: The reference (e.g. the training data), in the same forms.
            columns: Compare only these columns; default: every column the two share.
            title: Heading of the report.
            categorical: Columns to treat as categorical whatever their type.
            numerical: Columns to treat as numeric whatever their type.
            drift_share: The dataset drifts when at least this share of columns drift.
            min_rows: Fewest rows each side needs for a verdict (default: the
                ``drift_min_rows`` setting, 30); below it ``report.summary.verdict`` is
                ``"insufficient_data"``.

        Returns:
            The stored report; ``html(report)`` gives its page, ``result(report)`` its tests.
        """
        if isinstance(current, Endpoint):
            current = current.capture_to_dataset()
        cur, base = self._selector(current, "current"), self._selector(baseline, "baseline")
        if not self._backend.remote:
            return self._svc.drift(
                self._project,
                current=cur,
                baseline=base,
                columns=columns,
                title=title,
                categorical=categorical,
                numerical=numerical,
                drift_share=drift_share,
                min_rows=min_rows,
            )
        body: dict[str, Any] = {
            "current": {"dataset": cur[0], "version": cur[1]},
            "baseline": {"dataset": base[0], "version": base[1]},
            "columns": None if columns is None else list(columns),
            "title": title,
            "categorical": None if categorical is None else list(categorical),
            "numerical": None if numerical is None else list(numerical),
            "drift_share": drift_share,
        }
        if min_rows is not None:
            body["min_rows"] = min_rows
        path = f"{self._base()}/reports/drift"
        return Report.model_validate(self._backend._json("POST", path, json_body=body))

    def reports(self, *, kind: str | None = None) -> builtins.list[Report]:
        """The project's reports, newest first (only those of ``kind`` when given)."""
        if not self._backend.remote:
            return self._svc.list_reports(self._project, kind)
        params = {} if kind is None else {"kind": kind}
        return _REPORTS.validate_python(
            self._backend._json("GET", f"{self._base()}/reports", params=params)
        )

    def report(self, report: Report | str) -> Report:
        """A report by id."""
        report_id = _id(report)
        if not self._backend.remote:
            return self._svc.get_report(report_id)
        return Report.model_validate(self._backend._json("GET", _report_path(report_id)))

    def html(self, report: Report | str) -> str:
        """The report's self-contained HTML page."""
        report_id = _id(report)
        if not self._backend.remote:
            with self._svc.open_report_file(report_id, "report.html") as handle:
                return handle.read().decode()
        return str(self._backend.call("GET", f"{_report_path(report_id)}/html").text)

    def result(self, report: Report | str) -> DriftReport:
        """The report's full result: per-column tests, thresholds, verdicts and violations."""
        report_id = _id(report)
        if not self._backend.remote:
            return self._svc.read_report(report_id)
        data = self._backend.call("GET", f"{_report_path(report_id)}/json").content
        return DriftReport.model_validate_json(data)

    # Internals --------------------------------------------------------------------------------
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(validate_name('Project', self._project), safe='')}"

    def _selector(
        self, value: DatasetVersion | tuple[str, int | str] | Endpoint, role: str
    ) -> tuple[str, int | str]:
        if isinstance(value, DatasetVersion):
            if value.project != self._project:
                raise InvalidInputError(
                    f"Dataset version {value.name} v{value.version} belongs to project "
                    f"{value.project!r}, not {self._project!r}.",
                    hint=f"Compare it from ml.project({value.project!r}).monitoring.",
                )
            return value.name, value.version
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return value[0], value[1]
        raise InvalidInputError(
            f"The {role} dataset version {value!r} is neither a DatasetVersion nor "
            "(name, version).",
            hint="Pass proj.datasets.version('applications', 1) or ('applications', 'latest').",
        )


def _id(report: Report | str) -> str:
    return report.id if isinstance(report, Report) else str(report)


def _report_path(report_id: str) -> str:
    return f"/api/v1/reports/{quote(report_id, safe='')}"
