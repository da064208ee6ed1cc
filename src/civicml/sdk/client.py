"""The Python SDK: ``cm.connect()`` and the handles users work with.

The same classes work embedded (services in-process on local stores) and remote (the REST API of
a ``civicml server``); only the backend differs. Run methods are named as MLflow names them
(``log_param(s)``, ``log_metric(s)``, ``set_tag(s)``, ``log_artifact(s)``) so habits carry over.
"""

from __future__ import annotations

import builtins
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from civicml.core.errors import InvalidInputError
from civicml.core.identity import resolve_principal
from civicml.core.settings import Settings
from civicml.core.types import INT64_MAX
from civicml.governance.schemas import AuditEvent, AuditReport, Grant, LineageGraph, Project
from civicml.oversight import Dashboard, GateResult, ModelCard, etag
from civicml.registry.schemas import (
    ApprovalPolicyRecord,
    ApprovalStatus,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)
from civicml.sdk.alerts import AlertsHandle
from civicml.sdk.batch import BatchHandle
from civicml.sdk.catalog import CatalogHandle
from civicml.sdk.costs import CostsHandle
from civicml.sdk.datasets import DatasetsHandle
from civicml.sdk.embedded import EmbeddedBackend
from civicml.sdk.endpoints import EndpointsHandle
from civicml.sdk.evaluations import EvaluationsHandle
from civicml.sdk.keys import KeysHandle
from civicml.sdk.monitoring import MonitoringHandle
from civicml.sdk.monitors import MonitorsHandle
from civicml.sdk.oversight import (
    CardsHandle,
    change_approval,
    dashboard,
    export_package,
    gate,
    get_policy,
    import_package,
    set_policy,
)
from civicml.sdk.pipelines import PipelinesHandle
from civicml.sdk.privacy import PrivacyHandle
from civicml.sdk.schedules import SchedulesHandle
from civicml.sdk.sources import SourcesHandle
from civicml.sdk.tokens import TokensHandle
from civicml.store.paths import validate_relative_path
from civicml.store.schemas import ArtifactInfo
from civicml.tracking.reproducibility import environment_tags
from civicml.tracking.schemas import Experiment, MetricValue, Run, RunStatus, SearchWarning
from civicml.tracking.service import MetricPoint, clean_params, new_params, not_running

__all__ = ["Client", "ModelsHandle", "ProjectHandle", "RunHandle", "connect"]


def connect(
    url: str | None = None,
    *,
    home: str | Path | None = None,
    user: str | None = None,
    settings: Settings | None = None,
    ca_bundle: str | Path | None = None,
    token: str | None = None,
) -> Client:
    """Connect to civicml.

    Args:
        url: A ``civicml server`` URL (``http://127.0.0.1:8080``) for the remote client; omitted,
            ``CIVICML_URL`` is used when set, else the embedded platform under ``home``.
        home: ``CIVICML_HOME`` for the embedded platform (default ``~/.civicml``).
        user: The user recorded for your calls (default ``CIVICML_USER`` or the OS user).
        settings: Complete settings, instead of reading them from the environment.
        ca_bundle: For an ``https://`` server: a PEM file of the CAs to trust instead of the
            public ones (an agency's own CA); default ``CIVICML_CA_BUNDLE``. Certificates are
            always verified.
        token: For a server with ``auth = "token"``: the API token to send (default
            ``CIVICML_TOKEN``, else the one ``civicml login`` stored for ``url``).

    Returns:
        A :class:`Client`; close it (or use ``with``) to flush buffered metrics.

    Example:
        >>> import civicml as cm
        >>> ml = cm.connect(home=tmp_home)  # doctest: +SKIP
        >>> run = ml.project("demo").start_run()  # doctest: +SKIP
    """
    resolved = settings or Settings.load(home=home, user=user, url=url)
    target = url or resolved.url
    if target:
        from civicml.sdk.remote import RemoteBackend

        return Client(
            RemoteBackend(
                target,
                user=user or resolved.user,
                settings=resolved,
                ca_bundle=ca_bundle,
                token=token,
            )
        )
    principal = resolve_principal(user, resolved.roles) if user else None
    return Client(EmbeddedBackend(resolved, principal))


class Client:
    """Entry point of the SDK: projects, audit and lineage."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.tokens = TokensHandle(backend)
        self.keys = KeysHandle(backend)
        self.pipelines = PipelinesHandle(backend)
        self.costs = CostsHandle(backend)
        self.schedules = SchedulesHandle(backend)
        self.catalog = CatalogHandle(backend)

    @property
    def backend(self) -> Any:
        return self._backend

    def __repr__(self) -> str:
        kind = "remote" if self._backend.remote else "embedded"
        return f"<civicml.Client {kind} {self._backend.location} as {self._backend.user}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush buffered metrics and release the stores or the connection."""
        self._backend.close()

    # Projects -----------------------------------------------------------------------------
    def project(self, name: str) -> ProjectHandle:
        """The project ``name``, created when missing."""
        return ProjectHandle(self._backend, self._backend.ensure_project(name))

    def create_project(self, name: str, *, description: str = "") -> ProjectHandle:
        return ProjectHandle(self._backend, self._backend.create_project(name, description))

    def projects(self) -> list[Project]:
        return list(self._backend.list_projects())

    # Governance ---------------------------------------------------------------------------
    def lineage(
        self,
        kind: str,
        ref: str,
        *,
        direction: Literal["upstream", "downstream", "both"] = "both",
        max_depth: int = 10,
    ) -> LineageGraph:
        """Everything upstream/downstream of an entity (``kind`` e.g. 'run', ``ref`` its id)."""
        return self._backend.lineage_query(kind, ref, direction, max_depth)  # type: ignore[no-any-return]

    def audit_events(self, **filters: Any) -> list[AuditEvent]:
        """Audit events, oldest first (filters: project, entity_kind, entity_id, action,
        after_seq, limit)."""
        return list(self._backend.audit_events(**filters))

    def verify_audit(self) -> AuditReport:
        """Verify the audit chain and its signed head."""
        return self._backend.audit_verify()  # type: ignore[no-any-return]


class ProjectHandle:
    """A project: start runs, search them, register and approve models."""

    def __init__(self, backend: Any, info: Project) -> None:
        self._backend = backend
        self.info = info
        self.name = info.name
        self.models = ModelsHandle(backend, info.name)
        self.datasets = DatasetsHandle(backend, info.name)
        self.monitoring = MonitoringHandle(backend, info.name)
        self.alerts = AlertsHandle(backend, info.name)
        self.monitors = MonitorsHandle(backend, info.name)
        self.sources = SourcesHandle(backend, info.name)
        self.batch = BatchHandle(backend, info.name)
        self.cards = CardsHandle(backend, info.name)
        self.evaluations = EvaluationsHandle(backend, info.name)
        self.endpoints = EndpointsHandle(backend, info.name)
        self.runs = RunsHandle(backend, info.name)
        self.privacy = PrivacyHandle(backend, info.name)

    def __repr__(self) -> str:
        return f"<Project {self.name}>"

    def start_run(
        self,
        *,
        experiment: str = "default",
        name: str | None = None,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> RunHandle:
        """Start a run; use it as a context manager to end it (failed on an exception).

        The run is tagged with this process's code version and library versions
        (:func:`~civicml.tracking.reproducibility.environment_tags`); ``tags`` win over them.
        """
        merged = {**environment_tags(), **(tags or {})}
        run, deferred = self._backend.start_run(self.name, experiment, name, params, merged)
        return RunHandle(self._backend, run, deferred=deferred)

    def experiments(self) -> list[Experiment]:
        return list(self._backend.list_experiments(self.name))

    def create_experiment(self, name: str, *, description: str = "") -> Experiment:
        return self._backend.create_experiment(self.name, name, description)  # type: ignore[no-any-return]

    # Members ----------------------------------------------------------------------------------
    def members(self) -> list[Grant]:
        """Who holds which role on this project by grant (docs/security.md)."""
        return list(self._backend.project_members(self.name))

    def grant(self, user: str, role: str) -> Grant:
        """Grant ``role`` on this project to ``user`` (needs ``members.write``)."""
        return self._backend.grant_role(self.name, user, role)  # type: ignore[no-any-return]

    def revoke(self, user: str, role: str) -> None:
        """Take ``role`` on this project away from ``user`` (needs ``members.write``)."""
        self._backend.revoke_role(self.name, user, role)


class RunsHandle:
    """Find runs of a project."""

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    def get(self, run_id: str) -> Run:
        return self._backend.get_run(run_id)  # type: ignore[no-any-return]

    def search(
        self,
        filter: str | None = None,
        *,
        order_by: Sequence[str] | None = None,
        experiments: Sequence[str] | None = None,
        max_results: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        """Runs matching an MLflow-style filter, e.g. ``"metrics.auc > 0.8"``.

        A metric, parameter or tag named in ``filter`` or ``order_by`` that no run of the
        project has (a misspelt key matches nothing) is reported with
        ``warnings.warn(..., SearchWarning)``, naming the keys that exist.
        """
        page = self._backend.search_runs(
            self._project,
            experiments=experiments,
            filter=filter,
            order_by=order_by,
            max_results=max_results,
            offset=offset,
        )
        for message in page.warnings:
            warnings.warn(message, SearchWarning, stacklevel=2)
        return list(page.runs)

    def list(self, *, experiment: str | None = None, max_results: int = 100) -> list[Run]:
        return self.search(
            experiments=[experiment] if experiment else None, max_results=max_results
        )

    def check_rules(
        self, run_id: str, rules: Sequence[Any] | None = None, *, record: bool = True
    ) -> builtins.list[Any]:
        """Evaluate training rules (default: all built-in ones) on a run's logged metrics.

        ``rules`` are ``cm.rules.*`` rules or specs (``"overfit:ratio_threshold=0.2"``). With
        ``record`` the results are set on the run as tags ``civicml.rule.<name>``
        (docs/training-rules.md). Returns one :class:`~civicml.training.rules.RuleResult` each.
        """
        from civicml.sdk.rules import check_run

        return check_run(self._backend, run_id, rules, record=record)


class RunHandle:
    """A live run. Metrics and parameters are buffered and group-committed; :meth:`flush` makes
    them durable.

    A run started by :meth:`ProjectHandle.start_run` in an experiment this client has started a
    run in before is itself written by the next group commit (``deferred``): a short run is one
    transaction (remote: one request) from start to end. Reading :attr:`id` from outside, and
    every call that needs the stored run, writes it first.
    """

    def __init__(self, backend: Any, info: Run, *, deferred: bool = False) -> None:
        self._backend = backend
        self._info = info
        self._id = info.id
        self._stored = not deferred
        self._params = dict(info.params)  # what this handle knows is logged (conflicts at once)

    @property
    def id(self) -> str:
        """The run's id; the run is stored when this returns (raises why it could not be)."""
        if not self._stored:
            self._stored = True
            self._backend.writer.flush(self._id)
        return self._id

    def __repr__(self) -> str:
        return f"<Run {self._id} {self._info.status.value}>"

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._info.status is RunStatus.RUNNING:
            self.end(RunStatus.FAILED if exc_type is not None else RunStatus.FINISHED)

    @property
    def info(self) -> Run:
        """The run as stored now (params, tags, latest metrics, status)."""
        self.flush()
        self._info = self._backend.get_run(self.id)
        return self._info

    # Params and tags ----------------------------------------------------------------------
    def log_param(self, key: str, value: object) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, object]) -> None:
        """Record parameters; they are immutable (the same value again is accepted).

        Like metrics they are buffered and written with the next group commit (at the latest
        by :meth:`flush` or :meth:`end`), so a run's parameters, metrics and end can share one
        transaction. A bad name or value, or a different value for a parameter this run has,
        is refused at once; a conflict with a value logged elsewhere is raised by the next
        call for this run.
        """
        checked = clean_params(params)
        if self._info.status is not RunStatus.RUNNING:
            raise not_running(self._id, self._info.status.value, "log parameters to")
        new = new_params(self._id, checked, {self._id: self._params})
        if new:
            self._backend.writer.submit(self._id, [], params=new)
            self._params.update(new)

    def set_tag(self, key: str, value: object) -> None:
        self._backend.set_tags(self.id, {key: value})

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self._backend.set_tags(self.id, tags)

    def delete_tag(self, key: str) -> None:
        self._backend.delete_tag(self.id, key)

    # Metrics ------------------------------------------------------------------------------
    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        *,
        timestamp: int | None = None,
        synchronous: bool = False,
    ) -> None:
        """Log one value. Returns at once (group commit within ``metrics_flush_interval_ms``);
        ``synchronous=True`` returns only when it is durable."""
        metric = _metric(key, value, step, timestamp)
        self._backend.writer.submit(self._id, [metric], synchronous=synchronous)

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        *,
        timestamp: int | None = None,
        synchronous: bool = False,
    ) -> None:
        """Log several values at one step."""
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        values = [_metric(k, v, step, ts) for k, v in metrics.items()]
        self._backend.writer.submit(self._id, values, synchronous=synchronous)

    def flush(self) -> None:
        """Block until everything logged so far is durable (raises a deferred error)."""
        self._stored = True
        self._backend.writer.flush(self._id)

    def metric_history(self, key: str) -> list[MetricValue]:
        self.flush()
        return list(self._backend.metric_history(self.id, key))

    def log_input(self, entity: Any) -> None:
        """Record an input of this run, e.g. a dataset version (lineage: it contributed to the
        run). ``entity`` is a DatasetVersion or a ``(kind, id)`` pair."""
        kind, ref = entity if isinstance(entity, tuple) else ("dataset_version", entity.id)
        self._backend.log_input(self.id, kind, ref)

    # Artifacts ----------------------------------------------------------------------------
    def log_artifact(
        self, local_path: str | Path, artifact_path: str | None = None
    ) -> ArtifactInfo:
        """Store a local file as an artifact of this run (under ``artifact_path``/its name)."""
        path = Path(local_path)
        if path.is_symlink():
            raise InvalidInputError(
                f"{path} is a symbolic link; artifacts must be regular files.",
                hint="Log the file the link points to.",
            )
        if not path.is_file():
            raise InvalidInputError(
                f"{path} is not a file.", hint="Use log_artifacts() for a directory."
            )
        name = path.name if not artifact_path else f"{artifact_path.rstrip('/')}/{path.name}"
        validate_relative_path(name)
        with open(path, "rb") as handle:
            return self._backend.log_artifact(self.id, name, handle)  # type: ignore[no-any-return]

    def log_artifacts(
        self, local_dir: str | Path, artifact_path: str | None = None
    ) -> list[ArtifactInfo]:
        """Store every file under a directory (symbolic links are refused)."""
        root = Path(local_dir)
        if not root.is_dir():
            raise InvalidInputError(f"{root} is not a directory.")
        files = sorted(_walk_files(root))
        stored = []
        for file in files:
            rel = file.relative_to(root).as_posix()
            name = rel if not artifact_path else f"{artifact_path.rstrip('/')}/{rel}"
            validate_relative_path(name)
            with open(file, "rb") as handle:
                stored.append(self._backend.log_artifact(self.id, name, handle))
        return stored

    def log_bytes(self, data: bytes, artifact_path: str) -> ArtifactInfo:
        """Store bytes as an artifact (e.g. a serialised model or a report)."""
        return self._backend.log_artifact(self.id, validate_relative_path(artifact_path), data)  # type: ignore[no-any-return]

    def log_text(self, text: str, artifact_path: str) -> ArtifactInfo:
        return self.log_bytes(text.encode(), artifact_path)

    def list_artifacts(self, prefix: str | None = None) -> list[ArtifactInfo]:
        return list(self._backend.list_artifacts(self.id, prefix))

    def read_artifact(self, path: str) -> bytes:
        """The verified bytes of an artifact of this run."""
        return self._backend.read_artifact(self.id, path)  # type: ignore[no-any-return]

    # Status -------------------------------------------------------------------------------
    def end(self, status: RunStatus | str = RunStatus.FINISHED) -> Run:
        """End the run (finished, failed or killed), in the same commit as the metrics and
        parameters still buffered; durable when it returns. An error of an earlier buffered
        write for this run is raised after the run has ended."""
        target = RunStatus(status).value
        writer = self._backend.writer
        earlier = writer.pop_error(self._id)
        self._stored = True
        try:
            result = writer.submit(self._id, [], end=target, synchronous=True)
        except BaseException as err:
            first = earlier or writer.pop_error(self._id)  # why it failed first (not created?)
            if first is not None:
                raise first from err
            raise
        later = writer.pop_error(self._id)
        ended = result.run if result is not None else None
        self._info = ended if ended is not None else self._backend.get_run(self._id)
        self._backend.run_ended(self._id)
        failed = earlier or later
        if failed is not None:
            raise failed
        return self._info


class ModelsHandle:
    """The model registry of a project."""

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    @property
    def _svc(self) -> Any:
        return self._backend.registry

    def register(
        self,
        name: str,
        source: Any = None,
        *,
        run: RunHandle | Run | str | None = None,
        artifact_path: str = "model",
        signature: list[dict[str, Any]] | None = None,
        metrics: dict[str, float] | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Register a new version of model ``name``.

        ``source`` may be what ``cm.train.tabular`` returned (its run, files, signature and
        metrics are used). Otherwise name the run whose artifacts under ``artifact_path`` are the
        model (``run=``), or give a local file or directory as ``source`` (it is uploaded; with
        ``run`` it is logged to that run first, so lineage records where it came from).
        """
        if hasattr(source, "model") and hasattr(source, "run_id"):  # a cm.train TrainedModel
            trained: Any = source
            return self._svc.register(  # type: ignore[no-any-return]
                self._project,
                name,
                run_id=trained.run_id,
                artifact_path=trained.artifact_path,
                signature=trained.signature,
                metrics=metrics if metrics is not None else trained.metrics,
                description=description,
            )
        run_id = None if run is None else run if isinstance(run, str) else run.id
        artifacts: dict[str, str] | None = None
        if source is not None:
            local = Path(source)
            if run_id is not None:
                handle = RunHandle(self._backend, self._backend.get_run(run_id))
                if local.is_dir():
                    handle.log_artifacts(local, artifact_path)
                else:
                    handle.log_artifact(local, artifact_path)
            else:
                artifacts = {}
                for file in [local] if local.is_file() else sorted(_walk_files(local)):
                    rel = file.name if local.is_file() else file.relative_to(local).as_posix()
                    with open(file, "rb") as data:
                        artifacts[validate_relative_path(rel)] = self._backend.put_blob(
                            data, project=self._project
                        )
        return self._svc.register(  # type: ignore[no-any-return]
            self._project,
            name,
            run_id=run_id,
            artifact_path=artifact_path,
            artifacts=artifacts,
            signature=signature,
            metrics=metrics,
            description=description,
        )

    def get(self, name: str) -> RegisteredModel:
        return self._svc.get_model(self._project, name)  # type: ignore[no-any-return]

    def list(self) -> builtins.list[RegisteredModel]:
        return builtins.list(self._svc.list_models(self._project))

    def version(self, name: str, version: int | str) -> ModelVersion:
        """A version by number or alias (``"production"``)."""
        return self._svc.get_version(self._project, name, version)  # type: ignore[no-any-return]

    def versions(self, name: str, *, include_archived: bool = False) -> builtins.list[ModelVersion]:
        return builtins.list(
            self._svc.list_versions(self._project, name, include_archived=include_archived)
        )

    def approve(
        self,
        mv: ModelVersion | tuple[str, int | str],
        *,
        note: str,
        override_justification: str | None = None,
    ) -> ModelVersion:
        """Approve a version. Its model's approval policy is evaluated as a gate first: a failed
        gate raises :class:`~civicml.oversight.GateFailedError` (``details``: each failed
        check) unless ``override_justification`` is given by someone with an override role.
        Whoever registered or trained the version cannot approve it."""
        name, version = _ref(mv)
        return change_approval(
            self._backend,
            self._project,
            name,
            version,
            ApprovalStatus.APPROVED,
            note,
            override_justification,
        )

    def reject(self, mv: ModelVersion | tuple[str, int | str], *, note: str) -> ModelVersion:
        name, version = _ref(mv)
        return change_approval(
            self._backend, self._project, name, version, ApprovalStatus.REJECTED, note
        )

    def set_policy(
        self,
        name: str,
        policy: str | Path | Mapping[str, Any],
        *,
        if_match: str | None = None,
    ) -> ApprovalPolicyRecord:
        """Set the approval policy of model ``name``: TOML/JSON text, a file path or a dict
        (format: docs/governance.md). Each call stores a new policy version; with
        ``if_match=models.etag(policy_read)`` it is refused (412) if another was set since."""
        return set_policy(self._backend, self._project, name, policy, if_match=if_match)

    def policy(self, name: str) -> ApprovalPolicyRecord | None:
        """The approval policy that applies to model ``name`` now, or ``None``."""
        return get_policy(self._backend, self._project, name)

    def gate(self, mv: ModelVersion | tuple[str, int | str]) -> GateResult:
        """Evaluate the version's approval gate now, without approving anything."""
        name, version = _ref(mv)
        return gate(self._backend, self._project, name, version)

    def dashboard(self, *, include_archived: bool = False) -> Dashboard:
        """Every model version with status, deployments, metrics, bias, card and gate."""
        return dashboard(self._backend, self._project, include_archived=include_archived)

    def alias(self, name: str, alias: str) -> ModelAlias:
        """The alias ``alias`` of model ``name``: the version it points at, who set it, when."""
        return self._svc.get_alias(self._project, name, alias)  # type: ignore[no-any-return]

    def set_alias(
        self, name: str, alias: str, version: int, *, if_match: str | None = None
    ) -> ModelVersion:
        """Point ``alias`` at a version (``production`` only at an Approved one). With
        ``if_match=models.etag(models.alias(name, alias))`` the move is refused (412) when
        someone moved the alias since you read it."""
        return self._svc.set_alias(  # type: ignore[no-any-return]
            self._project, name, alias, version, if_match=if_match
        )

    def delete_alias(self, name: str, alias: str, *, if_match: str | None = None) -> None:
        """Remove an alias (``if_match``: refused when it moved since you read it)."""
        self._svc.delete_alias(self._project, name, alias, if_match=if_match)

    @staticmethod
    def etag(resource: ModelVersion | ModelAlias | ApprovalPolicyRecord | ModelCard) -> str:
        """The ETag of a version, alias, policy or card as read, for ``if_match=``."""
        return etag(resource)

    def archive(self, mv: ModelVersion | tuple[str, int | str]) -> ModelVersion:
        name, version = _ref(mv)
        return self._svc.archive_version(self._project, name, version)  # type: ignore[no-any-return]

    def history(self, mv: ModelVersion | tuple[str, int | str]) -> builtins.list[Any]:
        name, version = _ref(mv)
        return builtins.list(self._svc.approval_history(self._project, name, version))

    def export(self, mv: ModelVersion | tuple[str, int | str], path: str | Path) -> str:
        """Write a signed package of the version (files, manifest, card, approval record,
        lineage summary, Ed25519 signature) to ``path``; returns the signer's key id."""
        name, version = _ref(mv)
        return export_package(self._backend, self._project, name, version, Path(path))

    def import_package(self, path: str | Path, *, name: str | None = None) -> ModelVersion:
        """Verify a package from :meth:`export` against ``trusted_signers`` and every file's
        SHA-256, then register it as a new version (``PendingManualApproval``: approve it here
        too). ``name`` registers it under another model name."""
        return import_package(self._backend, self._project, Path(path), name)


def _ref(mv: ModelVersion | tuple[str, int | str]) -> tuple[str, int | str]:
    if isinstance(mv, tuple):
        return mv
    return mv.name, mv.version


def _metric(key: str, value: float, step: int | None, timestamp: int | None) -> MetricPoint:
    """Check one value as :class:`MetricValue` would, without a model per value (hot path)."""
    if (  # the common case, checked by exact types first (a third less time per value)
        type(key) is str
        and type(value) is float
        and type(step) is int
        and type(timestamp) is int
        and 0 < len(key) <= 250
        and 0 <= step <= INT64_MAX
        and 0 <= timestamp <= INT64_MAX
    ):
        return MetricPoint(key, value, step, timestamp)
    if not isinstance(key, str) or not 1 <= len(key) <= 250:
        raise InvalidInputError(f"Metric name {key!r} is not valid.", hint="Use 1-250 characters.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"Metric {key!r} value {value!r} is not a number.") from err
    step = step or 0
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= INT64_MAX:
        raise InvalidInputError(f"Metric {key!r} step {step!r} is not a whole number >= 0.")
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    elif (
        not isinstance(timestamp, int)
        or isinstance(timestamp, bool)
        or not 0 <= timestamp <= INT64_MAX
    ):
        raise InvalidInputError(
            f"Metric {key!r} timestamp {timestamp!r} is not valid.",
            hint="Use milliseconds since the epoch.",
        )
    return MetricPoint(key, float(value), step, timestamp)


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in list(dirnames):
            if (Path(dirpath) / name).is_symlink():
                raise InvalidInputError(
                    f"{Path(dirpath) / name} is a symbolic link; artifact "
                    "directories may not contain links."
                )
        for name in filenames:
            file = Path(dirpath) / name
            if file.is_symlink():
                raise InvalidInputError(
                    f"{file} is a symbolic link; artifact directories may not contain links."
                )
            yield file
