"""The remote backend: the same SDK calls, answered by a ``civicml server`` over HTTP."""

from __future__ import annotations

import http.client
import json
import math
import ssl
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from civicml.core import errors as E
from civicml.core.identity import resolve_principal
from civicml.core.ids import new_id, validate_name
from civicml.core.names import name_key
from civicml.core.process import process_identity
from civicml.core.settings import Settings
from civicml.governance.schemas import (
    AuditEvent,
    AuditReport,
    Grant,
    KeyReport,
    KeyRotation,
    LineageGraph,
    Project,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    WhoAmI,
)
from civicml.oversight.approvals import GateFailedError
from civicml.registry.schemas import ApprovalRecord, ModelAlias, ModelVersion, RegisteredModel
from civicml.sdk._keepalive import KeepAliveConnection, keepalive_for
from civicml.sdk.credentials import stored_token
from civicml.sdk.sso import SSOSession
from civicml.store.schemas import ArtifactInfo
from civicml.tracking.schemas import (
    MAX_BATCHES_PER_REQUEST,
    MAX_KEYS_PER_REQUEST,
    MAX_RUNS_PAGE,
    MAX_VALUES_PER_REQUEST,
    Experiment,
    MetricBatchResult,
    MetricHistory,
    MetricValue,
    Run,
    RunPage,
)
from civicml.tracking.service import (
    MetricBatch,
    MetricPoint,
    NewRun,
    check_max_results,
    check_run_name,
    clean_params,
    clean_tags,
    pending_run,
)
from civicml.tracking.writer import MetricWriter

__all__ = ["RemoteBackend", "RemoteRegistry"]

_ERRORS: dict[str, type[E.CivicMLError]] = {
    cls.__name__: cls
    for cls in (
        E.InvalidInputError,
        E.NotFoundError,
        E.ConflictError,
        E.PermissionDeniedError,
        E.ConfigurationError,
        E.ArtifactIntegrityError,
        E.PreconditionFailedError,
        E.AuthenticationError,
        E.TooManyRequestsError,
        E.RequestTimeoutError,
        GateFailedError,
    )
}
_BY_STATUS: dict[int, type[E.CivicMLError]] = {
    401: E.AuthenticationError,
    429: E.TooManyRequestsError,
    404: E.NotFoundError,
    409: E.ConflictError,
    403: E.PermissionDeniedError,
    408: E.RequestTimeoutError,
    412: E.PreconditionFailedError,
    422: E.InvalidInputError,
    400: E.InvalidInputError,
    415: E.InvalidInputError,
}
_RETRIES = 3
_VERSIONS = TypeAdapter(list[ModelVersion])
_MODELS = TypeAdapter(list[RegisteredModel])
_TOKENS = TypeAdapter(list[TokenInfo])


class RemoteError(E.CivicMLError):
    """The server failed (5xx) or could not be reached."""

    status = 502


class RemoteBackend:
    """SDK calls over the REST API, with the same method names as the embedded backend."""

    remote = True

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        settings: Settings | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        ca_bundle: str | Path | None = None,
        token: str | None = None,
    ) -> None:
        self.location = url.rstrip("/")
        self.user = resolve_principal(user).user
        self.settings = settings or Settings.load()
        self.ca_bundle = Path(ca_bundle) if ca_bundle is not None else self.settings.ca_bundle
        secret = (
            token
            or _settings_token(self.settings)
            or stored_token(self.location, self.settings.home)
        )
        # Else a single sign-on session (civicml login --oidc): its bearer is set per request,
        # refreshed when it expires.
        self._sso = (
            None
            if secret
            else SSOSession.load(self.location, home=self.settings.home, ca_bundle=self.ca_bundle)
        )
        trust = _trust(self.ca_bundle)
        identity = _identity(self.user, secret)
        self.http = httpx.Client(
            base_url=self.location,
            timeout=timeout,
            transport=transport,
            verify=trust,
            headers=identity,
        )
        # The metric writer's requests (a short run is one) go over a lean keep-alive connection
        # where that changes nothing but the cost (sdk/_keepalive.py).
        lean = keepalive_for(self.location, trust) if transport is None else False
        self._lean = (
            None
            if lean is False
            else KeepAliveConnection(
                self.location,
                timeout=timeout,
                headers=identity,
                context=lean if isinstance(lean, ssl.SSLContext) else None,
            )
        )
        self.writer = MetricWriter(
            self.log_metric_batches, interval=self.settings.metrics_flush_interval_ms / 1000
        )
        self.registry = RemoteRegistry(self)
        self._active: set[str] = set()
        # (project, experiment) as named -> (as stored, and the user the server knows us as),
        # where a run was started synchronously.
        self._homes: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._stop = threading.Event()
        self._beat = threading.Thread(
            target=self._heartbeats, name="civicml-heartbeat", daemon=True
        )
        self._beat.start()

    def close(self) -> None:
        self.writer.close()
        self._stop.set()
        self.http.close()
        if self._lean is not None:
            self._lean.close()

    # HTTP -----------------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | BinaryIO | None = None,
        idempotent: bool = False,
        if_match: str | None = None,
    ) -> httpx.Response:
        """One request; raises the server's error as the matching CivicMLError subclass.

        Idempotent calls are retried on connection failures (metric batches carry batch ids).
        ``if_match`` is sent as ``If-Match`` (a stale one answers 412).
        """
        headers = {"content-type": "application/octet-stream"} if content is not None else {}
        if self._sso is not None:
            headers["authorization"] = "Bearer " + self._sso.bearer()
        if if_match is not None:
            headers["if-match"] = if_match
        attempts = _RETRIES if idempotent else 1
        for attempt in range(attempts):
            try:
                response = self.http.request(
                    method, path, json=json_body, params=params, content=content, headers=headers
                )
                break
            except httpx.TransportError as err:
                untrusted = _tls_failure(err, self.location, self.ca_bundle)
                if untrusted is not None:
                    raise untrusted from None  # retrying does not make a certificate trusted
                if attempt + 1 == attempts:
                    raise self._unreachable(
                        err,
                        " If it serves HTTPS (--tls-cert), use an https:// URL."
                        if self.location.startswith("http://")
                        and isinstance(err, httpx.RemoteProtocolError)
                        else "",
                    ) from err
                time.sleep(0.2 * 2**attempt)
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _unreachable(self, err: BaseException, hint_more: str = "") -> RemoteError:
        """The error for a server that could not be reached after the last retry."""
        return RemoteError(
            f"Cannot reach the civicml server at {self.location}: "
            f"{str(err).rstrip('.') or type(err).__name__}.",
            hint="Is 'civicml server' running there?" + hint_more,
        )

    def _post_retried(self, path: str, body: Any) -> Any:
        """``POST`` a JSON body that is safe to repeat and answer the JSON reply: over the
        keep-alive connection when there is one (retried as :meth:`call` retries an idempotent
        request), else through :meth:`call`."""
        lean = self._lean
        if lean is None:
            return self._json("POST", path, json_body=body, idempotent=True)
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        headers = {} if self._sso is None else {"authorization": "Bearer " + self._sso.bearer()}
        for attempt in range(_RETRIES):
            try:
                status, answered, content = lean.post(path, data.encode(), headers)
                break
            except (OSError, http.client.HTTPException) as err:
                untrusted = _tls_failure(err, self.location, self.ca_bundle)
                if untrusted is not None:
                    raise untrusted from None  # retrying does not make a certificate trusted
                if attempt + 1 == _RETRIES:
                    raise self._unreachable(err) from err
                time.sleep(0.2 * 2**attempt)
        if status >= 400:
            raise _error(
                httpx.Response(
                    status,
                    headers=answered,
                    content=content,
                    request=httpx.Request("POST", self.location + path),
                )
            )
        return json.loads(content)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; a list answered in pages (``Link: <…>; rel="next"``) comes whole."""
        response = self.call(method, path, **kwargs)
        value = response.json()
        if method == "GET" and isinstance(value, list):
            following = response.links.get("next")
            while following is not None:
                response = self.call("GET", following["url"])
                value.extend(response.json())
                following = response.links.get("next")
        return value

    # API tokens --------------------------------------------------------------------------------
    def create_token(self, request: TokenCreate) -> TokenCreated:
        body = request.model_dump(mode="json")
        return TokenCreated.model_validate(self._json("POST", "/api/v1/tokens", json_body=body))

    def list_tokens(self, all_users: bool = False) -> list[TokenInfo]:
        params = {"all": "true"} if all_users else None
        return _TOKENS.validate_python(self._json("GET", "/api/v1/tokens", params=params))

    def get_token(self, token_id: str) -> TokenInfo:
        return TokenInfo.model_validate(self._json("GET", f"/api/v1/tokens/{_q(token_id)}"))

    def revoke_token(self, token_id: str) -> TokenInfo:
        return TokenInfo.model_validate(self._json("DELETE", f"/api/v1/tokens/{_q(token_id)}"))

    # Encryption keys --------------------------------------------------------------------------
    def key_report(self) -> KeyReport:
        return KeyReport.model_validate(self._json("GET", "/api/v1/keys"))

    def rotate_keys(self) -> KeyRotation:
        return KeyRotation.model_validate(self._json("POST", "/api/v1/keys/rotate"))

    def retire_key(self, key_id: str) -> None:
        self._json("DELETE", f"/api/v1/keys/{_q(key_id)}")

    def encrypt_existing(self) -> int:
        return int(self._json("POST", "/api/v1/keys/encrypt-existing")["encrypted"])

    def whoami(self) -> WhoAmI:
        return WhoAmI.model_validate(self._json("GET", "/api/v1/whoami"))

    # Projects and experiments ----------------------------------------------------------------
    def ensure_project(self, name: str) -> Project:
        return Project.model_validate(
            self._json("PUT", f"/api/v1/projects/{_name('Project', name)}")
        )

    def create_project(self, name: str, description: str = "") -> Project:
        return Project.model_validate(
            self._json(
                "POST", "/api/v1/projects", json_body={"name": name, "description": description}
            )
        )

    def get_project(self, name: str) -> Project:
        return Project.model_validate(
            self._json("GET", f"/api/v1/projects/{_name('Project', name)}")
        )

    def list_projects(self) -> list[Project]:
        return [Project.model_validate(p) for p in self._json("GET", "/api/v1/projects")]

    def project_members(self, project: str) -> list[Grant]:
        path = f"/api/v1/projects/{_name('Project', project)}/members"
        return [Grant.model_validate(g) for g in self._json("GET", path)]

    def grant_role(self, project: str, user: str, role: str) -> Grant:
        path = f"/api/v1/projects/{_name('Project', project)}/members"
        return Grant.model_validate(
            self._json("POST", path, json_body={"user": user, "role": role})
        )

    def revoke_role(self, project: str, user: str, role: str) -> None:
        path = f"/api/v1/projects/{_name('Project', project)}/members/{_q(user)}/roles/{_q(role)}"
        self._json("DELETE", path)

    def list_experiments(self, project: str) -> list[Experiment]:
        return [
            Experiment.model_validate(e)
            for e in self._json("GET", f"/api/v1/projects/{_name('Project', project)}/experiments")
        ]

    def create_experiment(self, project: str, name: str, description: str = "") -> Experiment:
        return Experiment.model_validate(
            self._json(
                "POST",
                f"/api/v1/projects/{_name('Project', project)}/experiments",
                json_body={"name": name, "description": description},
            )
        )

    # Runs ------------------------------------------------------------------------------------
    def create_run(
        self,
        project: str,
        experiment: str,
        name: str | None,
        params: Mapping[str, object] | None,
        tags: Mapping[str, object] | None,
        track_process: bool = True,
    ) -> Run:
        """Start a run; with ``track_process`` it is marked killed if this process dies."""
        host, pid, pid_start = process_identity(track_process)
        all_params, all_tags = _jsonable(params or {}), _jsonable(tags or {})
        # A request carries at most MAX_KEYS_PER_REQUEST of each: the rest follow at once.
        first_params, more_params = _split(all_params)
        first_tags, more_tags = _split(all_tags)
        body = {
            "experiment": experiment,
            "name": name,
            "params": first_params,
            "tags": first_tags,
            "host": host,
            "pid": pid,
            "pid_start": pid_start,
        }
        run = Run.model_validate(
            self._json("POST", f"/api/v1/projects/{_name('Project', project)}/runs", json_body=body)
        )
        self._active.add(run.id)
        if more_params or more_tags:
            self.log_params(run.id, more_params)
            self.set_tags(run.id, more_tags)
            run = self.get_run(run.id)
        return run

    def start_run(
        self,
        project: str,
        experiment: str,
        name: str | None,
        params: Mapping[str, object] | None,
        tags: Mapping[str, object] | None,
    ) -> tuple[Run, bool]:
        """Start a run; answers it and whether writing it was deferred.

        The first run in an experiment is created by a request of its own (which creates the
        project and the experiment when missing and checks that the caller may). Later ones are
        checked here and sent with the metric writer's next request, with whatever the run logs
        and its end when they come soon enough: one request for a short run. The server checks
        them again; its refusal is raised by the next call for the run.
        """
        key = (name_key(project), name_key(experiment))
        home = self._homes.get(key)
        all_params, all_tags = _jsonable(params or {}), _jsonable(tags or {})
        many = len(all_params) > MAX_KEYS_PER_REQUEST or len(all_tags) > MAX_KEYS_PER_REQUEST
        if home is None or many:
            run = self.create_run(project, experiment, name, params, tags)
            self._homes.setdefault(key, (run.project, run.experiment, run.created_by))
            return run, False
        validate_name("Experiment", experiment)
        check_run_name(name)
        host, pid, pid_start = process_identity(True)
        spec = NewRun(
            project=home[0],
            experiment=home[1],
            name=name or "",
            params=clean_params(all_params),
            tags=clean_tags(all_tags),
            host=host,
            pid=pid,
            pid_start=pid_start,
        )
        run_id = new_id()
        self.writer.submit(run_id, [], create=spec)
        return pending_run(run_id, spec, home[2]), True

    def log_input(self, run_id: str, kind: str, ref: str) -> None:
        self.call(
            "POST",
            f"/api/v1/runs/{_q(run_id)}/inputs",
            json_body={"kind": kind, "ref": ref},
            idempotent=True,
        )

    def get_run(self, run_id: str) -> Run:
        return Run.model_validate(self._json("GET", f"/api/v1/runs/{_q(run_id)}"))

    def search_runs(
        self,
        project: str,
        *,
        experiments: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        offset: int = 0,
    ) -> RunPage:
        """Up to ``max_results`` runs from ``offset``: as many pages as that takes."""
        check_max_results(max_results)
        path = f"/api/v1/projects/{_name('Project', project)}/runs/search"
        found: list[Run] = []
        warnings: list[str] | None = None
        next_offset: int | None = offset
        while next_offset is not None and len(found) < max_results:
            body = {
                "filter": filter,
                "order_by": list(order_by or []),
                "experiments": list(experiments) if experiments else None,
                "max_results": max(1, min(MAX_RUNS_PAGE, max_results - len(found))),
                "offset": next_offset,
            }
            page = RunPage.model_validate(self._json("POST", path, json_body=body))
            found.extend(page.runs)
            warnings = page.warnings if warnings is None else warnings
            next_offset = page.next_offset
        return RunPage(runs=found, next_offset=next_offset, warnings=warnings or [])

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Parameters, in requests of at most MAX_KEYS_PER_REQUEST (each retry-safe)."""
        for chunk in _chunks(_jsonable(params)):
            self.call(
                "POST",
                f"/api/v1/runs/{_q(run_id)}/params",
                json_body={"params": chunk},
                idempotent=True,
            )

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        """Tags, in requests of at most MAX_KEYS_PER_REQUEST."""
        for chunk in _chunks(_jsonable(tags)):
            self.call(
                "POST",
                f"/api/v1/runs/{_q(run_id)}/tags",
                json_body={"tags": chunk},
                idempotent=True,
            )

    def delete_tag(self, run_id: str, key: str) -> None:
        self.call("DELETE", f"/api/v1/runs/{_q(run_id)}/tags/{_q(key, safe='/')}")

    def log_metric_batches(
        self, batches: Sequence[MetricBatch]
    ) -> list[MetricBatchResult | E.CivicMLError]:
        """The metric writer's sink: the buffered batches in as few requests as the server's
        limits allow (MAX_VALUES_PER_REQUEST values, MAX_BATCHES_PER_REQUEST batches each; a
        larger batch goes as several, each with its own batch id)."""
        parts: list[tuple[int, dict[str, Any]]] = []  # (index of the caller's batch, batch body)
        for n, b in enumerate(batches):
            batch_id = b.batch_id or uuid.uuid4().hex
            values = list(b.values)
            step = MAX_VALUES_PER_REQUEST
            pieces: list[dict[str, Any]] = [
                {"metrics": [_metric_json(v) for v in values[i : i + step]]}
                for i in range(0, len(values), step)
            ]
            pieces += [{"metrics": [], "params": chunk} for chunk in _chunks(dict(b.params or {}))]
            if not pieces:
                pieces = [{"metrics": []}]
            if b.end is not None:
                pieces[-1]["end"] = b.end  # after everything else of the batch
            if b.create is not None:
                pieces[0]["create"] = _new_run_json(b.create)  # before everything else
            for k, piece in enumerate(pieces):
                piece_id = batch_id if len(pieces) == 1 else f"{batch_id[:48]}.{k}"
                parts.append((n, {"run_id": b.run_id, "batch_id": piece_id, **piece}))
        merged: list[MetricBatchResult | E.CivicMLError | None] = [None] * len(batches)
        request: list[tuple[int, dict[str, Any]]] = []
        count = 0
        for item in [*parts, None]:
            size = len(item[1]["metrics"]) if item is not None else 0
            full = len(request) >= MAX_BATCHES_PER_REQUEST or count + size > MAX_VALUES_PER_REQUEST
            if request and (item is None or full):
                self._send_batches(request, merged)
                request, count = [], 0
            if item is not None:
                request.append(item)
                count += size
        return [r if r is not None else MetricBatchResult(stored=0) for r in merged]

    def _send_batches(
        self,
        request: list[tuple[int, dict[str, Any]]],
        merged: list[MetricBatchResult | E.CivicMLError | None],
    ) -> None:
        body = {"batches": [part for _, part in request]}
        outcomes = self._post_retried("/api/v1/metrics/batches", body)
        for (n, part), outcome in zip(request, outcomes, strict=True):
            before = merged[n]
            if isinstance(before, E.CivicMLError):
                continue  # the first error of a split batch stands
            if not outcome["ok"]:
                merged[n] = _error_from_body(outcome["error"])
                continue
            if "create" in part and "end" not in part:
                self._active.add(part["run_id"])  # it exists now: keep it alive
            stored = outcome["stored"] + (before.stored if before is not None else 0)
            duplicate = outcome["duplicate"] and (before is None or before.duplicate)
            ended = outcome.get("run")
            merged[n] = MetricBatchResult(
                stored=stored,
                duplicate=duplicate,
                run=Run.model_validate(ended) if ended is not None else None,
            )

    def metric_history(self, run_id: str, key: str) -> list[MetricValue]:
        """Every value of the metric: the server's pages, one after another."""
        path = f"/api/v1/runs/{_q(run_id)}/metrics/{_q(key, safe='/')}"
        values: list[MetricValue] = []
        after: str | None = None
        while True:
            params = {"after": after} if after is not None else None
            page = MetricHistory.model_validate(self._json("GET", path, params=params))
            values.extend(page.values)
            if page.next_cursor is None:
                return values
            after = page.next_cursor

    def heartbeat(self, run_id: str) -> None:
        self.call("POST", f"/api/v1/runs/{_q(run_id)}/heartbeat")

    def run_ended(self, run_id: str) -> None:
        """A run ended through the metric writer: no more heartbeats for it."""
        self._active.discard(run_id)

    def end_run(self, run_id: str, status: str) -> Run:
        self._active.discard(run_id)
        return Run.model_validate(
            self._json(
                "POST",
                f"/api/v1/runs/{_q(run_id)}/end",
                json_body={"status": status},
                idempotent=True,
            )
        )

    def log_artifact(self, run_id: str, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        return ArtifactInfo.model_validate(
            self._json(
                "PUT", f"/api/v1/runs/{_q(run_id)}/artifacts/{_q(path, safe='/')}", content=data
            )
        )

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        params = {"prefix": prefix} if prefix else None
        return [
            ArtifactInfo.model_validate(a)
            for a in self._json("GET", f"/api/v1/runs/{_q(run_id)}/artifacts", params=params)
        ]

    def read_artifact(self, run_id: str, path: str) -> bytes:
        return self.call("GET", f"/api/v1/runs/{_q(run_id)}/artifacts/{_q(path, safe='/')}").content

    def put_blob(self, data: bytes | BinaryIO, *, project: str) -> str:
        return str(
            self._json("POST", f"/api/v1/projects/{_name('Project', project)}/blobs", content=data)[
                "digest"
            ]
        )

    # Lineage and audit -----------------------------------------------------------------------
    def lineage_query(self, kind: str, ref: str, direction: str, max_depth: int) -> LineageGraph:
        return LineageGraph.model_validate(
            self._json(
                "GET",
                f"/api/v1/lineage/{_q(kind)}/{_q(ref)}",
                params={"direction": direction, "max_depth": max_depth},
            )
        )

    def audit_events(self, **filters: Any) -> list[AuditEvent]:
        params = {k: v for k, v in filters.items() if v is not None}
        return [
            AuditEvent.model_validate(e)
            for e in self._json("GET", "/api/v1/audit/events", params=params)
        ]

    def audit_verify(self) -> AuditReport:
        return AuditReport.model_validate(self._json("GET", "/api/v1/audit/verify"))

    def audit_export(self, path: Path) -> int:
        headers = {} if self._sso is None else {"authorization": "Bearer " + self._sso.bearer()}
        with self.http.stream("GET", "/api/v1/audit/export", headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            count = 0
            with open(path, "wb") as out:
                for line in response.iter_lines():
                    out.write(line.encode() + b"\n")
                    count += '"type":"event"' in line
        return count

    # Heartbeats ------------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        interval = max(1.0, min(60.0, self.settings.run_heartbeat_timeout_s / 4))
        while not self._stop.wait(interval):
            for run_id in list(self._active):
                try:
                    self.heartbeat(run_id)
                except E.CivicMLError:
                    self._active.discard(run_id)


class RemoteRegistry:
    """The registry service's methods, over HTTP."""

    def __init__(self, backend: RemoteBackend) -> None:
        self._b = backend

    def _base(self, project: str, name: str | None = None) -> str:
        base = f"/api/v1/projects/{_name('Project', project)}/models"
        return base if name is None else f"{base}/{_name('Model', name)}"

    def create_model(self, project: str, name: str, description: str = "") -> RegisteredModel:
        return RegisteredModel.model_validate(
            self._b._json(
                "POST", self._base(project), json_body={"name": name, "description": description}
            )
        )

    def get_model(self, project: str, name: str) -> RegisteredModel:
        return RegisteredModel.model_validate(self._b._json("GET", self._base(project, name)))

    def list_models(self, project: str) -> list[RegisteredModel]:
        return _MODELS.validate_python(self._b._json("GET", self._base(project)))

    def register(
        self,
        project: str,
        name: str,
        *,
        run_id: str | None = None,
        artifact_path: str = "model",
        artifacts: Mapping[str, str] | None = None,
        signature: Sequence[Any] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        description: str = "",
    ) -> ModelVersion:
        body = {
            "run_id": run_id,
            "artifact_path": artifact_path,
            "artifacts": dict(artifacts) if artifacts is not None else None,
            "signature": [s if isinstance(s, Mapping) else s.model_dump() for s in signature]
            if signature is not None
            else None,
            "metrics": _json_floats(metrics) if metrics is not None else None,
            "description": description,
        }
        return ModelVersion.model_validate(
            self._b._json("POST", f"{self._base(project, name)}/versions", json_body=body)
        )

    def get_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        return ModelVersion.model_validate(
            self._b._json("GET", f"{self._base(project, name)}/versions/{_q(str(version))}")
        )

    def list_versions(
        self, project: str, name: str, *, include_archived: bool = False
    ) -> list[ModelVersion]:
        return _VERSIONS.validate_python(
            self._b._json(
                "GET",
                f"{self._base(project, name)}/versions",
                params={"include_archived": include_archived},
            )
        )

    def get_manifest(self, version: ModelVersion) -> dict[str, Any]:
        return dict(
            self._b._json(
                "GET",
                f"{self._base(version.project, version.name)}/versions/{version.version}/manifest",
            )
        )

    def update_approval(
        self, project: str, name: str, version: int | str, status: str, note: str = ""
    ) -> ModelVersion:
        return ModelVersion.model_validate(
            self._b._json(
                "PUT",
                f"{self._base(project, name)}/versions/{_q(str(version))}/approval",
                json_body={"status": str(status), "note": note},
            )
        )

    def approve(self, project: str, name: str, version: int | str, note: str) -> ModelVersion:
        return self._action(project, name, version, "approve", {"note": note})

    def reject(self, project: str, name: str, version: int | str, note: str) -> ModelVersion:
        return self._action(project, name, version, "reject", {"note": note})

    def approval_history(self, project: str, name: str, version: int | str) -> list[ApprovalRecord]:
        return [
            ApprovalRecord.model_validate(r)
            for r in self._b._json(
                "GET", f"{self._base(project, name)}/versions/{_q(str(version))}/approvals"
            )
        ]

    def get_alias(self, project: str, name: str, alias: str) -> ModelAlias:
        return ModelAlias.model_validate(
            self._b._json("GET", f"{self._base(project, name)}/aliases/{_name('Alias', alias)}")
        )

    def set_alias(
        self,
        project: str,
        name: str,
        alias: str,
        version: int | str,
        *,
        if_match: str | None = None,
    ) -> ModelVersion:
        return ModelVersion.model_validate(
            self._b._json(
                "PUT",
                f"{self._base(project, name)}/aliases/{_name('Alias', alias)}",
                json_body={"version": int(version)},
                if_match=if_match,
            )
        )

    def delete_alias(
        self, project: str, name: str, alias: str, *, if_match: str | None = None
    ) -> None:
        self._b.call(
            "DELETE",
            f"{self._base(project, name)}/aliases/{_name('Alias', alias)}",
            if_match=if_match,
        )

    def archive_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        return self._action(project, name, version, "archive", None)

    def unarchive_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        return self._action(project, name, version, "unarchive", None)

    def delete_version(self, project: str, name: str, version: int | str) -> None:
        self._b.call("DELETE", f"{self._base(project, name)}/versions/{_q(str(version))}")

    def _action(
        self, project: str, name: str, version: int | str, action: str, body: dict[str, Any] | None
    ) -> ModelVersion:
        return ModelVersion.model_validate(
            self._b._json(
                "POST",
                f"{self._base(project, name)}/versions/{_q(str(version))}/{action}",
                json_body=body,
            )
        )


def _name(kind: str, value: str) -> str:
    """A user-chosen name as a URL path segment, checked first so that a bad name fails as it
    does embedded (a '/' in it would otherwise just miss every route)."""
    return quote(validate_name(kind, value), safe="")


def _q(value: str, safe: str = "") -> str:
    return quote(value, safe=safe)


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first MAX_KEYS_PER_REQUEST entries, and the rest."""
    items = list(values.items())
    return dict(items[:MAX_KEYS_PER_REQUEST]), dict(items[MAX_KEYS_PER_REQUEST:])


def _chunks(values: dict[str, Any]) -> list[dict[str, Any]]:
    items = list(values.items())
    return [
        dict(items[i : i + MAX_KEYS_PER_REQUEST])
        for i in range(0, len(items), MAX_KEYS_PER_REQUEST)
    ]


def _new_run_json(spec: NewRun) -> dict[str, Any]:
    return {
        "project": spec.project,
        "experiment": spec.experiment,
        "name": spec.name or None,
        "params": dict(spec.params),
        "tags": dict(spec.tags),
        "host": spec.host,
        "pid": spec.pid,
        "pid_start": spec.pid_start,
    }


def _metric_json(metric: MetricValue | MetricPoint) -> dict[str, Any]:
    value: float | str = metric.value
    if not math.isfinite(metric.value):
        value = (
            "NaN" if math.isnan(metric.value) else ("Infinity" if metric.value > 0 else "-Infinity")
        )
    return {"key": metric.key, "value": value, "step": metric.step, "timestamp": metric.timestamp}


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Params and tags are strings: convert as the embedded service does (``str(value)``)."""
    return {key: value if isinstance(value, str) else str(value) for key, value in values.items()}


def _json_floats(values: Mapping[str, float | None]) -> dict[str, Any]:
    """Numbers for JSON: non-finite values as the strings pydantic reads back."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or math.isfinite(value):
            out[key] = value
        else:
            out[key] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return out


def _trust(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """What verifies the server's certificate: the public CAs (httpx's default), or only the CAs
    in ``ca_bundle`` (an agency's own CA). Verification is never switched off."""
    if ca_bundle is None:
        return True
    path = ca_bundle.expanduser()
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as err:
        reason = (
            "does not exist"
            if isinstance(err, FileNotFoundError)
            else "holds no PEM certificate"
            if isinstance(err, ssl.SSLError)
            else f"cannot be read ({err.strerror or type(err).__name__})"
        )
        raise E.ConfigurationError(
            f"The CA bundle {str(path)!r} (--ca-bundle, CIVICML_CA_BUNDLE) {reason}.",
            hint="Point --ca-bundle or CIVICML_CA_BUNDLE at a PEM file of the certificate "
            "authorities that issued the server's certificate.",
        ) from None


def _tls_failure(
    err: BaseException, location: str, ca_bundle: Path | None
) -> E.CivicMLError | None:
    """The clear error for a TLS failure (an untrusted certificate, or TLS spoken to a plain
    HTTP server), else None."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, ssl.SSLError):
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or "verification failed"
        where = f"the CA bundle {ca_bundle.name!r}" if ca_bundle else "the public CAs"
        return RemoteError(
            f"The server's certificate is not trusted ({location}: {detail}; checked against "
            f"{where}).",
            hint="Pass --ca-bundle or set CIVICML_CA_BUNDLE to the PEM file of the CA that "
            "issued the server's certificate (cm.connect(url, ca_bundle=...)).",
        )
    return RemoteError(
        f"TLS with the civicml server at {location} failed: {cause.reason or cause}.",
        hint="Is the server serving HTTPS (civicml server --tls-cert/--tls-key)? For a plain "
        "HTTP server use an http:// URL.",
    )


def _settings_token(settings: Settings) -> str | None:
    token = settings.token
    return token.get_secret_value() if token is not None else None


def _identity(user: str, secret: str | None) -> dict[bytes, bytes]:
    """Headers that say who calls: the API token (argument, CIVICML_TOKEN, or the one
    ``civicml login`` stored for this server); without one, the user name in X-CivicML-User
    (which only a server with auth = "none", on loopback, believes)."""
    headers = {b"user-agent": b"civicml-sdk"}
    if secret:
        headers[b"authorization"] = b"Bearer " + secret.strip().encode("ascii", "replace")
    else:
        headers[b"x-civicml-user"] = user.encode()
    return headers


def _error(response: httpx.Response) -> E.CivicMLError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "message" not in body:
        return RemoteError(
            f"The civicml server answered HTTP {response.status_code}: {response.text[:200]!r}."
        )
    return _error_from_body(body, response.status_code)


def _error_from_body(body: Mapping[str, Any], status: int | None = None) -> E.CivicMLError:
    code = int(body.get("status") or status or 500)
    cls = _ERRORS.get(str(body.get("error")), _BY_STATUS.get(code, RemoteError))
    return cls(str(body.get("message")), hint=body.get("hint"), details=body.get("details"))
