"""``proj.endpoints``: deploy approved model versions and predict, embedded or remote."""

from __future__ import annotations

import builtins
import json
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.ids import validate_name
from civicml.data.schemas import DatasetVersion
from civicml.registry.schemas import ModelVersion
from civicml.serving.capture import CaptureService
from civicml.serving.runtime import ModelHost, refuse_non_finite
from civicml.serving.schemas import EndpointInfo, InvocationResult
from civicml.serving.service import EndpointService

__all__ = ["Endpoint", "EndpointsHandle"]

_INFOS = TypeAdapter(list[EndpointInfo])
_HOSTS: weakref.WeakKeyDictionary[Any, ModelHost] = weakref.WeakKeyDictionary()


def _embedded_host(backend: Any) -> ModelHost:
    """The model host of an embedded backend (``backend.serving`` once wired)."""
    host: ModelHost | None = getattr(backend, "serving", None)
    if host is None:
        host = _HOSTS.get(backend)
        if host is None:
            host = ModelHost(backend.ctx)
            _HOSTS[backend] = host
            weakref.finalize(backend, host.close)
    return host


class EndpointsHandle:
    """The real-time endpoints of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> ep = proj.endpoints.deploy("eligibility", mv)  # doctest: +SKIP
        >>> row = {"age": 41, "income": 1520.5, "region": "north"}
        >>> ep.predict([row]).predictions  # doctest: +SKIP
        [True]
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    def _svc(self) -> EndpointService:
        return EndpointService(self._backend.ctx, _embedded_host(self._backend))

    def _base(self, name: str | None = None) -> str:
        base = f"/api/v1/projects/{quote(validate_name('Project', self._project), safe='')}"
        base += "/endpoints"
        return base if name is None else f"{base}/{quote(validate_name('Endpoint', name), safe='')}"

    def deploy(
        self,
        name: str,
        mv: ModelVersion | None = None,
        *,
        model: str | None = None,
        version: int | str | None = None,
        capture_percent: float = 100.0,
        capture: bool = True,
    ) -> Endpoint:
        """Serve an Approved model version as endpoint ``name``.

        Pass the version (``mv``) or its ``model`` name and ``version`` number (or alias).
        """
        model, version = _target(mv, model, version)
        if not self._backend.remote:
            info = self._svc().deploy(
                self._project,
                name,
                model,
                version,
                capture_percent=capture_percent,
                capture=capture,
            )
        else:
            body = {
                "name": name,
                "model": model,
                "version": version,
                "capture_percent": capture_percent,
                "capture": capture,
            }
            info = EndpointInfo.model_validate(
                self._backend._json("POST", self._base(), json_body=body)
            )
        return Endpoint(self, info)

    def get(self, name: str) -> Endpoint:
        """The endpoint ``name``."""
        if not self._backend.remote:
            return Endpoint(self, self._svc().get(self._project, name))
        return Endpoint(
            self, EndpointInfo.model_validate(self._backend._json("GET", self._base(name)))
        )

    def list(self) -> builtins.list[Endpoint]:
        """Every endpoint of the project, by name."""
        if not self._backend.remote:
            infos = self._svc().list(self._project)
        else:
            infos = _INFOS.validate_python(self._backend._json("GET", self._base()))
        return [Endpoint(self, info) for info in infos]

    def _update(self, name: str, **changes: Any) -> EndpointInfo:
        if not self._backend.remote:
            return self._svc().update(
                self._project,
                name,
                changes["version"],
                model_name=changes["model"],
                capture_percent=changes["capture_percent"],
                capture=changes["capture"],
            )
        body = {k: v for k, v in changes.items() if v is not None}
        return EndpointInfo.model_validate(
            self._backend._json("PUT", self._base(name), json_body=body)
        )

    def _delete(self, name: str) -> None:
        if not self._backend.remote:
            self._svc().delete(self._project, name)
        else:
            self._backend.call("DELETE", self._base(name))

    def _predict(self, name: str, rows: Any, *, explain: bool = False) -> InvocationResult:
        refuse_non_finite(rows)  # JSON cannot carry NaN: the server's 422, before sending
        if not self._backend.remote:
            host = _embedded_host(self._backend)
            result = host.invoke(self._project, name, rows, explain=explain)
            return InvocationResult.model_validate(result)
        path = f"{self._base(name)}/invocations" + ("?explain=true" if explain else "")
        body = self._backend._json("POST", path, json_body={"records": _jsonable(rows)})
        return InvocationResult.model_validate(body)


class Endpoint:
    """One deployed endpoint: predict with it, switch its version, delete it."""

    def __init__(self, handle: EndpointsHandle, info: EndpointInfo) -> None:
        self._handle = handle
        self.info = info
        self.name = info.name

    def __repr__(self) -> str:
        return f"<Endpoint {self.name}: {self.info.model_name} v{self.info.model_version}>"

    def predict(self, rows: Any, *, explain: bool = False) -> InvocationResult:
        """Predictions for one record (a dict), a list of records or a pandas DataFrame.

        Args:
            rows: The input records.
            explain: Also return ``explanations``: per record, SHAP attributions in the
                model's raw input columns (``base_value + sum(attributions) == output`` for
                each explained output).

        Example:
            >>> result = ep.predict([{"age": 41}], explain=True)  # doctest: +SKIP
            >>> result.explanations[0].outputs[0].attributions  # doctest: +SKIP
            {'age': 0.12}
        """
        return self._handle._predict(self.name, rows, explain=explain)

    def invoke(self, rows: Any, *, explain: bool = False) -> InvocationResult:
        """The same as :meth:`predict` (the REST route's name: ``…/invocations``)."""
        return self.predict(rows, explain=explain)

    def update(
        self,
        mv: ModelVersion | int | str | None = None,
        *,
        model: str | None = None,
        capture_percent: float | None = None,
        capture: bool | None = None,
    ) -> Endpoint:
        """Switch to another Approved version and/or change data capture; returns ``self``."""
        version = mv.version if isinstance(mv, ModelVersion) else mv
        if isinstance(mv, ModelVersion):
            model = mv.name
        self.info = self._handle._update(
            self.name,
            version=version,
            model=model,
            capture_percent=capture_percent,
            capture=capture,
        )
        return self

    def capture_to_dataset(
        self, dataset: str | None = None, *, metadata: bool = False
    ) -> DatasetVersion:
        """Store the requests captured so far (inputs and predictions) as a dataset version,
        e.g. to compare with the training data: ``proj.monitoring.drift(v, baseline=raw)``.

        Args:
            dataset: Dataset name (default ``<endpoint>-capture``).
            metadata: Add ``inference_id``, ``inference_time``, ``model_version`` and
                ``caller`` (who made each request) columns.
        """
        backend = self._handle._backend
        if not backend.remote:
            capture = CaptureService(backend.ctx, _embedded_host(backend).capture)
            return capture.to_dataset(
                self._handle._project, self.name, name=dataset, metadata=metadata
            )
        body = backend._json(
            "POST",
            f"{self._handle._base(self.name)}/capture/dataset",
            json_body={"dataset": dataset, "metadata": metadata},
        )
        return DatasetVersion.model_validate(body)

    def delete(self) -> None:
        """Stop serving and remove the endpoint (its capture files stay)."""
        self._handle._delete(self.name)


def _target(
    mv: ModelVersion | None, model: str | None, version: int | str | None
) -> tuple[str, int | str]:
    if mv is not None:
        return mv.name, mv.version
    if model is None or version is None:
        from civicml.core.errors import InvalidInputError

        raise InvalidInputError(
            "Deploying needs a model version.",
            hint="Pass the ModelVersion from proj.models.register(...), or model= and version=.",
        )
    return model, version


def _jsonable(rows: Any) -> Any:
    if hasattr(rows, "to_json"):  # a pandas DataFrame
        return json.loads(rows.to_json(orient="records", date_format="iso"))
    if isinstance(rows, Mapping):
        return [dict(rows)]
    return rows
