"""``proj.monitors``: scheduled monitors of endpoints, their executions and ground truth,
embedded or against a server.

The same calls work embedded (the service in-process) and remote
(``/api/v1/projects/{project}/monitors`` and ``…/endpoints/{endpoint}/ground-truth``).
"""

from __future__ import annotations

import builtins
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from civicml.core.errors import InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.monitors.schemas import (
    Execution,
    GroundTruthUpload,
    Monitor,
    MonitorCreate,
    MonitorUpdate,
)

__all__ = ["MonitorsHandle"]

_MONITORS: TypeAdapter[list[Monitor]] = TypeAdapter(list[Monitor])
_EXECUTIONS: TypeAdapter[list[Execution]] = TypeAdapter(list[Execution])
_UPLOADS: TypeAdapter[list[GroundTruthUpload]] = TypeAdapter(list[GroundTruthUpload])
#: Records sent as JSON in one request; more go as a Parquet file.
_JSON_RECORDS = 5_000


class MonitorsHandle:
    """The scheduled monitors of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> proj.monitors.add(  # doctest: +SKIP
        ...     "quality", endpoint="eligibility", type="model_quality", every="1h"
        ... )
        >>> proj.monitors.upload_ground_truth("eligibility", labels)  # doctest: +SKIP
        >>> proj.monitors.run("quality").status  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    def _service(self) -> Any:
        from civicml.monitors.service import MonitorService
        from civicml.sdk.endpoints import _embedded_host

        return MonitorService(self._backend.ctx, _embedded_host(self._backend).capture)

    @property
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(self._project, safe='')}"

    def _path(self, name: str) -> str:
        return f"{self._base}/monitors/{quote(name, safe='')}"

    # Monitors ---------------------------------------------------------------------------------
    def add(
        self,
        name: str,
        *,
        endpoint: str,
        type: str,
        cron: str | None = None,
        every: str | None = None,
        window: str | None = None,
        baseline: DatasetVersion | tuple[str, int | str] | str | None = None,
        model_version: int | None = None,
        min_rows: int | None = None,
        drift_share: float = 0.5,
        positive_label: Any = None,
        tolerance: float = 0.2,
        facets: Sequence[str] | None = None,
        constraints: Mapping[str, Any] | None = None,
        description: str = "",
        enabled: bool = True,
    ) -> Monitor:
        """Create a monitor of ``endpoint`` and compute its baseline.

        Args:
            name: Unique in the project.
            endpoint: The endpoint watched.
            type: ``"data_quality"``, ``"model_quality"``, ``"bias_drift"`` or
                ``"attribution_drift"``.
            cron: A five-field cron schedule (UTC), e.g. ``"0 * * * *"`` (default hourly).
            every: An interval instead, e.g. ``"1h"``.
            window: How far back each execution looks, e.g. ``"1h"`` (default the interval).
            baseline: A dataset version (or name, or ``(name, version)``) to baseline with;
                default the model version's training data (lineage).
            model_version: The model version to baseline (default the endpoint's primary).
            min_rows: Fewest records (labeled ones for model quality and bias) to judge.
            drift_share: Data quality: the share of drifted columns that is drift.
            positive_label: Binary model quality and bias drift: the positive class.
            tolerance: Model quality: suggested thresholds lie this share below the baseline.
            facets: Bias drift: only the policy's rules on these facets.
            constraints: The type's constraints instead of the suggested ones.
            description: What it is for.
            enabled: False creates it paused.
        """
        dataset, version = _baseline(baseline)
        request = _validated(
            MonitorCreate,
            {
                "name": name,
                "endpoint": endpoint,
                "type": type,
                "cron": cron,
                "every": every,
                "window": window,
                "baseline_dataset": dataset,
                "baseline_version": version,
                "model_version": model_version,
                "min_rows": min_rows,
                "drift_share": drift_share,
                "positive_label": positive_label,
                "tolerance": tolerance,
                "facets": None if facets is None else list(facets),
                "constraints": None if constraints is None else dict(constraints),
                "description": description,
                "enabled": enabled,
            },
        )
        if self._backend.remote:
            body = request.model_dump(mode="json", exclude_none=True)
            data = self._backend._json("POST", f"{self._base}/monitors", json_body=body)
            return Monitor.model_validate(data)
        return self._service().create(self._project, request)  # type: ignore[no-any-return]

    def list(self, *, endpoint: str | None = None) -> builtins.list[Monitor]:
        """The project's monitors by name (only ``endpoint``'s when given)."""
        if self._backend.remote:
            params = {} if endpoint is None else {"endpoint": endpoint}
            data = self._backend._json("GET", f"{self._base}/monitors", params=params)
            return _MONITORS.validate_python(data)
        return builtins.list(self._service().list(self._project, endpoint=endpoint))

    def get(self, name: str) -> Monitor:
        """One monitor with its baseline, constraints and latest execution."""
        if self._backend.remote:
            return Monitor.model_validate(self._backend._json("GET", self._path(name)))
        return self._service().get(self._project, name)  # type: ignore[no-any-return]

    def update(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: str | None = None,
        window: str | None = None,
        enabled: bool | None = None,
        description: str | None = None,
    ) -> Monitor:
        """Change the schedule, window or description, or pause (``enabled=False``) / resume."""
        request = _validated(
            MonitorUpdate,
            {
                "cron": cron,
                "every": every,
                "window": window,
                "enabled": enabled,
                "description": description,
            },
        )
        if self._backend.remote:
            body = request.model_dump(mode="json", exclude_none=True)
            data = self._backend._json("PATCH", self._path(name), json_body=body)
            return Monitor.model_validate(data)
        return self._service().update(self._project, name, request)  # type: ignore[no-any-return]

    def set_constraints(self, name: str, constraints: Mapping[str, Any]) -> Monitor:
        """Replace the monitor's constraints (the type's document, docs/monitors.md)."""
        if self._backend.remote:
            body = {"constraints": dict(constraints)}
            path = f"{self._path(name)}/constraints"
            return Monitor.model_validate(self._backend._json("PUT", path, json_body=body))
        return self._service().set_constraints(self._project, name, dict(constraints))  # type: ignore[no-any-return]

    def baseline(
        self,
        name: str,
        *,
        dataset: DatasetVersion | tuple[str, int | str] | str | None = None,
        model_version: int | None = None,
    ) -> Monitor:
        """Compute a new baseline (default: the training data of the version the endpoint
        serves now) and take its suggested constraints."""
        found, version = _baseline(dataset)
        if self._backend.remote:
            body = {"dataset": found, "version": version, "model_version": model_version}
            path = f"{self._path(name)}/baseline"
            data = self._backend._json(
                "POST", path, json_body={k: v for k, v in body.items() if v is not None}
            )
            return Monitor.model_validate(data)
        return self._service().rebaseline(  # type: ignore[no-any-return]
            self._project, name, dataset=found, version=version, model_version=model_version
        )

    def remove(self, name: str) -> Monitor:
        """Remove the monitor."""
        if self._backend.remote:
            return Monitor.model_validate(self._backend._json("DELETE", self._path(name)))
        return self._service().delete(self._project, name)  # type: ignore[no-any-return]

    # Executions -------------------------------------------------------------------------------
    def run(self, name: str) -> Execution:
        """Run the monitor now on the window ending now."""
        if self._backend.remote:
            data = self._backend._json("POST", f"{self._path(name)}/run", json_body={})
            return Execution.model_validate(data)
        return self._service().run(self._project, name)  # type: ignore[no-any-return]

    def executions(self, name: str, *, limit: int = 100) -> builtins.list[Execution]:
        """The monitor's executions, newest first."""
        if self._backend.remote:
            path = f"{self._path(name)}/executions"
            data = self._backend._json("GET", path, params={"limit": limit})
            return _EXECUTIONS.validate_python(data)
        return builtins.list(self._service().executions(self._project, name, limit=limit))

    def execution(self, name: str, execution_id: str) -> Execution:
        """One execution."""
        if self._backend.remote:
            path = f"{self._path(name)}/executions/{quote(execution_id, safe='')}"
            return Execution.model_validate(self._backend._json("GET", path))
        return self._service().execution(self._project, name, execution_id)  # type: ignore[no-any-return]

    def report(self, name: str, execution_id: str) -> dict[str, Any]:
        """The execution's ``report.json``."""
        return json.loads(self._file(name, execution_id, "json"))  # type: ignore[no-any-return]

    def report_html(self, name: str, execution_id: str) -> str:
        """The execution's self-contained HTML report."""
        return self._file(name, execution_id, "html").decode()

    def _file(self, name: str, execution_id: str, kind: str) -> bytes:
        if self._backend.remote:
            path = f"{self._path(name)}/executions/{quote(execution_id, safe='')}/{kind}"
            return bytes(self._backend.call("GET", path).content)
        with self._service().open_file(
            self._project, name, execution_id, f"report.{kind}"
        ) as handle:
            return bytes(handle.read())

    def html(self, name: str) -> str:
        """The monitor's page: its figures over its executions, plotted."""
        if self._backend.remote:
            return str(self._backend.call("GET", f"{self._path(name)}/html").text)
        return self._service().page(self._project, name)  # type: ignore[no-any-return]

    # Ground truth -----------------------------------------------------------------------------
    def upload_ground_truth(
        self,
        endpoint: str,
        data: Any,
        *,
        format: str | None = None,
        inference_id: str = "inference_id",
        label: str = "label",
    ) -> GroundTruthUpload:
        """Store labels of ``endpoint``'s captured predictions.

        Args:
            endpoint: The endpoint whose predictions they label.
            data: A pandas DataFrame, a CSV / Parquet / JSON Lines file path, or records
                (``{"inference_id": ..., "label": ..., "attributes": {...}}``).
            format: ``csv``, ``parquet`` or ``jsonl`` for a file whose suffix does not say.
            inference_id: The inference id column of a frame or file.
            label: The label column of a frame or file.
        """
        if not self._backend.remote:
            return self._service().upload_ground_truth(  # type: ignore[no-any-return]
                self._project,
                endpoint,
                data,
                format=format,
                inference_id=inference_id,
                label=label,
            )
        base = f"{self._base}/endpoints/{quote(endpoint, safe='')}/ground-truth"
        if isinstance(data, Sequence) and not isinstance(data, str | bytes):
            records = [dict(r) for r in data]
            if len(records) <= _JSON_RECORDS:
                found = self._backend._json("POST", base, json_body={"records": records})
                return GroundTruthUpload.model_validate(found)
            from civicml.monitors.labels import label_table

            data = label_table(records)
            inference_id, label = "inference_id", "label"
        content, fmt = _file_bytes(data, format)
        params = {"format": fmt, "inference_id": inference_id, "label": label}
        response = self._backend.call("POST", f"{base}/file", content=content, params=params)
        return GroundTruthUpload.model_validate(response.json())

    def ground_truth(self, endpoint: str, *, limit: int = 100) -> builtins.list[GroundTruthUpload]:
        """The endpoint's ground-truth uploads, newest first."""
        if self._backend.remote:
            path = f"{self._base}/endpoints/{quote(endpoint, safe='')}/ground-truth"
            return _UPLOADS.validate_python(
                self._backend._json("GET", path, params={"limit": limit})
            )
        return builtins.list(self._service().ground_truth(self._project, endpoint, limit=limit))


def _file_bytes(data: Any, format: str | None) -> tuple[bytes, str]:
    import pandas as pd  # type: ignore[import-untyped]

    if isinstance(data, pd.DataFrame):
        buffer = io.BytesIO()
        data.to_parquet(buffer, index=False)
        return buffer.getvalue(), "parquet"
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise InvalidInputError(
                f"Ground-truth file {path.name!r} does not exist.",
                hint="Give a CSV, Parquet or JSON Lines file of inference_id,label rows.",
            )
        fmt = format or {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}.get(
            path.suffix.lower(), "csv"
        )
        return path.read_bytes(), fmt
    if isinstance(data, bytes):
        return data, format or "csv"
    raise InvalidInputError(
        f"Ground truth of type {type(data).__name__} cannot be uploaded.",
        hint="Give a DataFrame, a file path or a list of records.",
    )


def _baseline(
    value: DatasetVersion | tuple[str, int | str] | str | None,
) -> tuple[str | None, int | str | None]:
    if value is None:
        return None, None
    if isinstance(value, DatasetVersion):
        return value.name, value.version
    if isinstance(value, str):
        return value, None
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return value[0], value[1]
    raise InvalidInputError(
        f"Baseline {value!r} is not a dataset version.",
        hint="Pass proj.datasets.version('applications', 1), ('applications', 1) or a name.",
    )


def _validated(model: Any, values: dict[str, Any]) -> Any:
    """The request, or one InvalidInputError saying what is wrong with it."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise InvalidInputError(
            f"Invalid monitor: {problems}.",
            hint="civicml monitors add --help lists the options (docs/monitors.md).",
        ) from None
