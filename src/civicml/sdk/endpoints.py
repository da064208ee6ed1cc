"""``proj.endpoints``: deploy approved model versions and predict, embedded or remote; an
endpoint's variants, shadow, guarded rollouts (``ep.rollout``) and shadow comparison reports;
multi-model endpoints (``mode="multi-model"``) and their models."""

from __future__ import annotations

import builtins
import json
import weakref
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.ids import validate_name
from civicml.data.schemas import DatasetVersion
from civicml.registry.schemas import ModelVersion
from civicml.serving.capture import CaptureService
from civicml.serving.comparison import ShadowComparison
from civicml.serving.multi_route import parse_target
from civicml.serving.multimodel import MultiModelService, model_refs
from civicml.serving.rollout import RolloutService, parse_duration
from civicml.serving.runtime import ModelHost, refuse_non_finite
from civicml.serving.schemas import (
    EndpointInfo,
    EndpointModel,
    InvocationResult,
    RolloutInfo,
    VariantInfo,
)
from civicml.serving.service import EndpointService
from civicml.serving.shadow_reports import ShadowReport, ShadowReportService
from civicml.serving.variants import VariantService

__all__ = ["Endpoint", "EndpointsHandle", "RolloutHandle"]

_INFOS = TypeAdapter(list[EndpointInfo])
_VARIANTS = TypeAdapter(list[VariantInfo])
_ROLLOUTS = TypeAdapter(list[RolloutInfo])
_REPORTS = TypeAdapter(list[ShadowReport])
_MODELS = TypeAdapter(list[EndpointModel])
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

    def _variants(self) -> VariantService:
        return VariantService(self._backend.ctx, _embedded_host(self._backend))

    def _rollouts(self) -> RolloutService:
        return RolloutService(self._backend.ctx, _embedded_host(self._backend))

    def _reports(self) -> ShadowReportService:
        return ShadowReportService(self._backend.ctx, _embedded_host(self._backend))

    def _multi(self) -> MultiModelService:
        return MultiModelService(self._backend.ctx, _embedded_host(self._backend))

    @property
    def _remote(self) -> bool:
        return bool(self._backend.remote)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._backend._json(method, path, json_body=body)

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
        variant: str | None = None,
        mode: str = "single-model",
        models: Sequence[tuple[str, int | str]] | Mapping[str, int | str] = (),
        model_cache_mb: float | None = None,
    ) -> Endpoint:
        """Serve an Approved model version as endpoint ``name``.

        Pass the version (``mv``) or its ``model`` name and ``version`` number (or alias);
        ``variant`` names its one variant (default ``v<N>``). With ``mode="multi-model"`` the
        endpoint also serves ``models`` (``{model: version}`` or ``(model, version)`` pairs),
        each request naming its own (``ep.predict(rows, target_model="eligibility/3")``),
        loaded on first use under ``model_cache_mb`` (default: the server's
        ``serving_model_cache_mb``).

        Example:
            >>> ep = proj.endpoints.deploy("many", model="eligibility", version="production",
            ...     mode="multi-model", models={"fraud": 3})  # doctest: +SKIP
            >>> ep.predict(rows, target_model="fraud").target_model  # doctest: +SKIP
            'fraud/3'
        """
        model, version = _target(mv, model, version)
        refs = model_refs(models)
        if not self._backend.remote:
            info = self._svc().deploy(
                self._project,
                name,
                model,
                version,
                capture_percent=capture_percent,
                capture=capture,
                variant=variant,
                mode=mode,
                models=refs,
                model_cache_mb=model_cache_mb,
            )
        else:
            body = {
                "name": name,
                "model": model,
                "version": version,
                "capture_percent": capture_percent,
                "capture": capture,
                "variant": variant,
                "mode": mode,
                "models": [{"model": m, "version": v} for m, v in refs],
                "model_cache_mb": model_cache_mb,
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
                strategy=changes.get("strategy"),
                canary_percent=changes.get("canary_percent"),
                linear_steps=changes.get("linear_steps"),
                bake_s=changes.get("bake_s"),
                alarms=changes.get("alarms") or (),
                variant=changes.get("variant"),
                model_cache_mb=changes.get("model_cache_mb"),
            )
        body = {k: v for k, v in changes.items() if v is not None and v != []}
        return EndpointInfo.model_validate(
            self._backend._json("PUT", self._base(name), json_body=body)
        )

    def _delete(self, name: str) -> None:
        if not self._backend.remote:
            self._svc().delete(self._project, name)
        else:
            self._backend.call("DELETE", self._base(name))

    def _predict(
        self,
        name: str,
        rows: Any,
        *,
        explain: bool = False,
        variant: str | None = None,
        target: str | None = None,
    ) -> InvocationResult:
        refuse_non_finite(rows)  # JSON cannot carry NaN: the server's 422, before sending
        if not self._backend.remote:
            host = _embedded_host(self._backend)
            result = host.invoke(
                self._project, name, rows, explain=explain, variant=variant, target=target
            )
            return InvocationResult.model_validate(result)
        query = [] if not explain else ["explain=true"]
        if variant is not None:
            query.append(f"variant={quote(variant, safe='')}")
        path = f"{self._base(name)}/invocations"
        if target is not None:
            parse_target(target)  # the server's 400, before sending
            model, _, version = target.strip().partition("/")
            path = f"{self._base(name)}/models/{quote(model, safe='')}/invocations"
            if version:
                query.append(f"version={quote(version, safe='')}")
        path += ("?" + "&".join(query)) if query else ""
        body = self._backend._json("POST", path, json_body={"records": _jsonable(rows)})
        return InvocationResult.model_validate(body)


class Endpoint:
    """One deployed endpoint: predict with it, switch its version (at once or in a guarded
    rollout, :attr:`rollout`), manage its variants and shadow, delete it."""

    def __init__(self, handle: EndpointsHandle, info: EndpointInfo) -> None:
        self._handle = handle
        self.info = info
        self.name = info.name
        self.rollout = RolloutHandle(self)

    def __repr__(self) -> str:
        return f"<Endpoint {self.name}: {self.info.model_name} v{self.info.model_version}>"

    def predict(
        self,
        rows: Any,
        *,
        explain: bool = False,
        variant: str | None = None,
        target_model: str | None = None,
    ) -> InvocationResult:
        """Predictions for one record (a dict), a list of records or a pandas DataFrame.

        Args:
            rows: The input records.
            explain: Also return ``explanations``: per record, SHAP attributions in the
                model's raw input columns (``base_value + sum(attributions) == output`` for
                each explained output).
            variant: Pin the request to this variant (the ``civicml-variant`` header); None
                follows the traffic weights. The answer's ``variant`` names who answered.
            target_model: A multi-model endpoint: the model to answer, ``"MODEL"`` (the
                newest version it holds) or ``"MODEL/VERSION"`` (the ``X-Civicml-Target-Model``
                header); the answer's ``target_model`` names it.

        Example:
            >>> result = ep.predict([{"age": 41}], explain=True)  # doctest: +SKIP
            >>> result.explanations[0].outputs[0].attributions  # doctest: +SKIP
            {'age': 0.12}
        """
        return self._handle._predict(
            self.name, rows, explain=explain, variant=variant, target=target_model
        )

    def invoke(
        self,
        rows: Any,
        *,
        explain: bool = False,
        variant: str | None = None,
        target_model: str | None = None,
    ) -> InvocationResult:
        """The same as :meth:`predict` (the REST route's name: ``…/invocations``)."""
        return self.predict(rows, explain=explain, variant=variant, target_model=target_model)

    # Multi-model endpoints ------------------------------------------------------------------
    def models(self) -> builtins.list[EndpointModel]:
        """A multi-model endpoint's models, by name, newest version first."""
        handle = self._handle
        if not handle._remote:
            return handle._multi().list(handle._project, self.name)
        return _MODELS.validate_python(
            handle._backend._json("GET", f"{handle._base(self.name)}/models")
        )

    def add_model(self, mv: ModelVersion | str, version: int | str | None = None) -> Endpoint:
        """Serve one more Approved version from a multi-model endpoint (``mv``, or a model
        name and ``version``: a number or an alias), without a redeploy; it is loaded when a
        request first names it. Returns ``self``."""
        model, ref = _target(
            mv if isinstance(mv, ModelVersion) else None,
            None if isinstance(mv, ModelVersion) else mv,
            version,
        )
        handle = self._handle
        if not handle._remote:
            self.info = handle._multi().add(handle._project, self.name, model, ref)
        else:
            body = {"model": model, "version": ref}
            self.info = EndpointInfo.model_validate(
                handle._call("POST", f"{handle._base(self.name)}/models", body)
            )
        return self

    def remove_model(self, model: str, version: int | str | None = None) -> Endpoint:
        """Stop serving ``model`` (every version held, or only ``version``) from a multi-model
        endpoint; returns ``self``."""
        handle = self._handle
        if not handle._remote:
            self.info = handle._multi().remove(handle._project, self.name, model, version)
        else:
            path = f"{handle._base(self.name)}/models/{quote(validate_name('Model', model))}"
            if version is not None:
                path += f"?version={quote(str(version), safe='')}"
            self.info = EndpointInfo.model_validate(handle._call("DELETE", path))
        return self

    def update(
        self,
        mv: ModelVersion | int | str | None = None,
        *,
        model: str | None = None,
        capture_percent: float | None = None,
        capture: bool | None = None,
        strategy: str | None = None,
        canary: float | str | None = None,
        steps: int | None = None,
        bake: float | str | None = None,
        alarms: Sequence[str] = (),
        variant: str | None = None,
        model_cache_mb: float | None = None,
    ) -> Endpoint:
        """Switch to another Approved version and/or change data capture (or a multi-model
        endpoint's cache limit, ``model_cache_mb``); returns ``self``.

        With ``strategy`` (``"all_at_once"``, ``"canary"``, ``"linear"``) the switch is a
        guarded rollout: ``canary`` size (``"10%"``), linear ``steps``, ``bake`` per step
        (seconds or ``"10m"``), ``alarms`` such as ``["p99_ms>50", "error_rate>0.01"]``; an
        alarm at any step sends all traffic back by itself. Follow it with :attr:`rollout`.

        Example:
            >>> ep.update(mv4, strategy="canary", canary="10%", bake="10m",
            ...           alarms=["p99_ms>50"])  # doctest: +SKIP
            >>> ep.rollout.status().status  # doctest: +SKIP
            <RolloutStatus.IN_PROGRESS: 'in_progress'>
        """
        version = mv.version if isinstance(mv, ModelVersion) else mv
        if isinstance(mv, ModelVersion):
            model = mv.name
        canary_percent: float | None = None
        if canary is not None:
            from civicml.serving.rollout import parse_percent

            canary_percent = parse_percent(canary)
        self.info = self._handle._update(
            self.name,
            version=version,
            model=model,
            capture_percent=capture_percent,
            capture=capture,
            strategy=strategy,
            canary_percent=canary_percent,
            linear_steps=steps,
            bake_s=None if bake is None else parse_duration(bake),
            alarms=list(alarms),
            variant=variant,
            model_cache_mb=model_cache_mb,
        )
        return self

    # Variants and shadow --------------------------------------------------------------------
    def variants(self) -> builtins.list[VariantInfo]:
        """The endpoint's variants: live ones (weight, share), then the shadow."""
        handle = self._handle
        if not handle._remote:
            return handle._variants().list(handle._project, self.name)
        return _VARIANTS.validate_python(
            handle._backend._json("GET", f"{handle._base(self.name)}/variants")
        )

    def set_variant(
        self,
        name: str,
        mv: ModelVersion | int | str,
        *,
        model: str | None = None,
        weight: float = 0.0,
    ) -> Endpoint:
        """Add live variant ``name`` serving ``mv`` (or switch that variant to it) with
        ``weight`` (0: only requests that pin it); returns ``self``."""
        version = mv.version if isinstance(mv, ModelVersion) else mv
        model = mv.name if isinstance(mv, ModelVersion) else model or self.info.model_name
        handle = self._handle
        if not handle._remote:
            self.info = handle._variants().put(
                handle._project, self.name, name, model, version, weight=weight
            )
        else:
            path = f"{handle._base(self.name)}/variants/{quote(validate_name('Variant', name))}"
            body = {"model": model, "version": version, "weight": weight}
            self.info = EndpointInfo.model_validate(handle._call("PUT", path, body))
        return self

    def set_traffic(self, weights: Mapping[str, float]) -> Endpoint:
        """New weights for live variants, e.g. ``{"blue": 90, "green": 10}`` (share = weight /
        sum); takes effect without a redeploy or a failed request. Returns ``self``."""
        handle = self._handle
        if not handle._remote:
            self.info = handle._variants().set_weights(handle._project, self.name, weights)
        else:
            body = {"weights": dict(weights)}
            self.info = EndpointInfo.model_validate(
                handle._call("PUT", f"{handle._base(self.name)}/traffic", body)
            )
        return self

    def remove_variant(self, name: str) -> Endpoint:
        """Remove variant ``name`` (live or shadow); returns ``self``."""
        handle = self._handle
        if not handle._remote:
            self.info = handle._variants().remove(handle._project, self.name, name)
        else:
            path = f"{handle._base(self.name)}/variants/{quote(validate_name('Variant', name))}"
            self.info = EndpointInfo.model_validate(handle._call("DELETE", path))
        return self

    def set_shadow(
        self,
        mv: ModelVersion | int | str,
        *,
        model: str | None = None,
        percent: float = 100.0,
        name: str | None = None,
    ) -> Endpoint:
        """Shadow-test ``mv``: ``percent`` of live requests are copied to it after they are
        answered; its answers are captured, never returned. Returns ``self``."""
        version = mv.version if isinstance(mv, ModelVersion) else mv
        model = mv.name if isinstance(mv, ModelVersion) else model or self.info.model_name
        handle = self._handle
        if not handle._remote:
            self.info = handle._variants().set_shadow(
                handle._project, self.name, model, version, percent=percent, name=name
            )
        else:
            body = {"model": model, "version": version, "percent": percent, "name": name}
            self.info = EndpointInfo.model_validate(
                handle._call("PUT", f"{handle._base(self.name)}/shadow", body)
            )
        return self

    def remove_shadow(self) -> Endpoint:
        """Stop shadowing and remove the shadow variant; returns ``self``."""
        handle = self._handle
        if not handle._remote:
            self.info = handle._variants().remove_shadow(handle._project, self.name)
        else:
            self.info = EndpointInfo.model_validate(
                handle._call("DELETE", f"{handle._base(self.name)}/shadow")
            )
        return self

    def shadow_report(
        self,
        *,
        shadow: str | None = None,
        tolerance: float = 0.01,
        min_pairs: int = 100,
        min_agreement: float = 0.95,
        max_latency_increase: float = 0.2,
    ) -> ShadowReport:
        """Compare the shadow's captured answers with the live ones and store the report
        (``report.json`` and ``report.html``): agreement, score differences, latency, and
        whether to promote.

        Example:
            >>> report = ep.shadow_report()  # doctest: +SKIP
            >>> report.summary.recommendation, report.summary.reasons  # doctest: +SKIP
            ('promote', ['250 pairs compared (at least 100 needed).', ...])
        """
        handle = self._handle
        if not handle._remote:
            return handle._reports().create(
                handle._project,
                self.name,
                shadow_variant=shadow,
                tolerance=tolerance,
                min_pairs=min_pairs,
                min_agreement=min_agreement,
                max_latency_increase=max_latency_increase,
            )
        body = {
            "shadow": shadow,
            "tolerance": tolerance,
            "min_pairs": min_pairs,
            "min_agreement": min_agreement,
            "max_latency_increase": max_latency_increase,
        }
        return ShadowReport.model_validate(
            handle._call("POST", f"{handle._base(self.name)}/shadow/reports", body)
        )

    def shadow_reports(self) -> builtins.list[ShadowReport]:
        """The endpoint's shadow reports, newest first."""
        handle = self._handle
        if not handle._remote:
            return handle._reports().list(handle._project, self.name)
        return _REPORTS.validate_python(
            handle._backend._json("GET", f"{handle._base(self.name)}/shadow/reports")
        )

    def read_shadow_report(self, report: ShadowReport | str) -> ShadowComparison:
        """The whole comparison of a shadow report (its ``report.json``)."""
        report_id = report.id if isinstance(report, ShadowReport) else report
        handle = self._handle
        if not handle._remote:
            return handle._reports().read(handle._project, self.name, report_id)
        path = f"{handle._base(self.name)}/shadow/reports/{quote(report_id, safe='')}/json"
        return ShadowComparison.model_validate(handle._backend._json("GET", path))

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


class RolloutHandle:
    """``ep.rollout``: the endpoint's guarded updates — read, advance (tick) and cancel."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def _path(self, tail: str) -> str:
        return f"{self._endpoint._handle._base(self._endpoint.name)}/{tail}"

    def status(self) -> RolloutInfo:
        """The latest rollout, its alarms and the new variant's counters read now."""
        handle = self._endpoint._handle
        if not handle._remote:
            return handle._rollouts().get(handle._project, self._endpoint.name)
        return RolloutInfo.model_validate(handle._backend._json("GET", self._path("rollout")))

    def list(self) -> builtins.list[RolloutInfo]:
        """Every rollout of the endpoint, newest first."""
        handle = self._endpoint._handle
        if not handle._remote:
            return handle._rollouts().list(handle._project, self._endpoint.name)
        return _ROLLOUTS.validate_python(handle._backend._json("GET", self._path("rollouts")))

    def tick(self) -> RolloutInfo:
        """Advance the rollout now (roll back on an alarm; next step once baked). A server
        does this by itself every ``rollout_interval_s``; tests and scripts call it."""
        handle = self._endpoint._handle
        if not handle._remote:
            return handle._rollouts().tick(handle._project, self._endpoint.name)
        return RolloutInfo.model_validate(handle._call("POST", self._path("rollout/tick"), {}))

    def cancel(self, reason: str | None = None) -> RolloutInfo:
        """Stop the rollout and send all traffic back to the old variants."""
        handle = self._endpoint._handle
        if not handle._remote:
            return handle._rollouts().cancel(handle._project, self._endpoint.name, reason=reason)
        body = {"reason": reason}
        return RolloutInfo.model_validate(handle._call("POST", self._path("rollout/cancel"), body))


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
