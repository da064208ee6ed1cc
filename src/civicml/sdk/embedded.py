"""The embedded backend: services called in-process on the local stores."""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from civicml.core.errors import CivicMLError
from civicml.core.identity import Principal, resolve_principal
from civicml.core.ids import new_id
from civicml.core.names import name_key
from civicml.core.process import process_identity
from civicml.core.settings import Settings
from civicml.governance.audit import AuditTrail
from civicml.governance.keys import KeyService
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
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
from civicml.governance.tokens import TokenService
from civicml.registry.service import RegistryService
from civicml.serving.rollout_plan import monitor_status, set_monitor_status
from civicml.serving.runtime import ModelHost
from civicml.store.artifacts import artifact_store_for
from civicml.store.context import Context
from civicml.store.db import MetadataStore
from civicml.store.schemas import ArtifactInfo
from civicml.tracking.schemas import Experiment, MetricBatchResult, MetricValue, Run, RunPage
from civicml.tracking.service import MetricBatch, TrackingService, pending_run
from civicml.tracking.writer import MetricWriter

__all__ = ["EmbeddedBackend", "open_context"]


def open_context(settings: Settings, principal: Principal | None = None) -> Context:
    """Open the stores named by ``settings`` (migrating the database on first use) and recover
    from a previous crash: stale temp files are removed, abandoned runs are marked killed."""
    settings.home.mkdir(parents=True, exist_ok=True)
    artifacts = artifact_store_for(settings)
    artifacts.recover()
    ctx = Context(
        db=MetadataStore(settings.database_url, busy_timeout_s=settings.db_busy_timeout_s),
        artifacts=artifacts,
        principal=principal or resolve_principal(settings.user, settings.roles),
        settings=settings,
    )
    TrackingService(ctx).recover_abandoned()
    return ctx


def _monitor_alarm(ctx: Context, project: str, monitor: str) -> bool | None:
    """``monitor:NAME`` rollout alarms ticked in this process (the monitors stage loads on
    first use: most programs never roll out)."""
    from civicml.monitors.hook import monitor_alarm

    return monitor_alarm(ctx, project, monitor)


def _close_at_exit(ref: weakref.ref[EmbeddedBackend]) -> None:
    backend = ref()
    if backend is not None:
        backend.close()


class EmbeddedBackend:
    """Every SDK call, answered by the services in this process."""

    remote = False

    def __init__(
        self, settings: Settings, principal: Principal | None = None, *, ctx: Context | None = None
    ) -> None:
        self.settings = settings
        # ctx: stores already open (a Ray worker's, civicml.store.context.worker_context)
        self.ctx = ctx or open_context(settings, principal)
        if monitor_status() is None:  # embedded rollouts judge monitor:NAME alarms, as a server
            set_monitor_status(_monitor_alarm)
        self.projects = ProjectService(self.ctx)
        self.tracking = TrackingService(self.ctx)
        self.registry = RegistryService(self.ctx)
        self.lineage = LineageService(self.ctx)
        self.audit = AuditTrail(self.ctx)
        self.writer = MetricWriter(
            self.tracking.log_metric_batches, interval=settings.metrics_flush_interval_ms / 1000
        )
        self._closed = False
        self._serving: ModelHost | None = None
        # (project, experiment) as named -> as stored, where a run was started synchronously.
        self._homes: dict[tuple[str, str], tuple[str, str]] = {}
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def serving(self) -> ModelHost:
        """The in-process model host for endpoints (started on first use)."""
        if self._serving is None:
            self._serving = ModelHost(self.ctx)
        return self._serving

    @property
    def location(self) -> str:
        return str(self.settings.home)

    @property
    def user(self) -> str:
        return self.ctx.principal.user

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        if self._serving is not None:
            self._serving.close()
        self.audit.flush()  # sign what this client committed before letting go
        self.ctx.db.close()

    # API tokens (for a server on these stores; embedded calls themselves need none) ----------
    def create_token(self, request: TokenCreate) -> TokenCreated:
        return TokenService(self.ctx).create(request)

    def list_tokens(self, all_users: bool = False) -> list[TokenInfo]:
        return TokenService(self.ctx).list(all_users=all_users)

    def get_token(self, token_id: str) -> TokenInfo:
        return TokenService(self.ctx).get(token_id)

    def revoke_token(self, token_id: str) -> TokenInfo:
        return TokenService(self.ctx).revoke(token_id)

    # Encryption keys --------------------------------------------------------------------------
    def key_report(self) -> KeyReport:
        return KeyService(self.ctx).report()

    def rotate_keys(self) -> KeyRotation:
        return KeyService(self.ctx).rotate()

    def retire_key(self, key_id: str) -> None:
        KeyService(self.ctx).retire(key_id)

    def encrypt_existing(self) -> int:
        return KeyService(self.ctx).encrypt_existing()

    def whoami(self) -> WhoAmI:
        principal = self.ctx.principal
        return WhoAmI(user=principal.user, roles=sorted(principal.roles), auth="none")

    # Projects and experiments ----------------------------------------------------------------
    def ensure_project(self, name: str) -> Project:
        return self.projects.ensure(name, "projects.read")

    def create_project(self, name: str, description: str = "") -> Project:
        return self.projects.create(name, description=description)

    def get_project(self, name: str) -> Project:
        return self.projects.get(name, "projects.read")

    def list_projects(self) -> list[Project]:
        return self.projects.list()

    def project_members(self, project: str) -> list[Grant]:
        return self.projects.members(project)

    def grant_role(self, project: str, user: str, role: str) -> Grant:
        return self.projects.grant(project, user, role)

    def revoke_role(self, project: str, user: str, role: str) -> None:
        self.projects.revoke(project, user, role)

    def list_experiments(self, project: str) -> list[Experiment]:
        return self.tracking.list_experiments(project)

    def create_experiment(self, project: str, name: str, description: str = "") -> Experiment:
        return self.tracking.create_experiment(project, name, description=description)

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
        return self.tracking.create_run(
            project,
            experiment=experiment,
            name=name,
            params=params,
            tags=tags,
            host=host,
            pid=pid,
            pid_start=pid_start,
        )

    def start_run(
        self,
        project: str,
        experiment: str,
        name: str | None,
        params: Mapping[str, object] | None,
        tags: Mapping[str, object] | None,
    ) -> tuple[Run, bool]:
        """Start a run of this process; answers it and whether writing it was deferred.

        The first run in an experiment is written at once (which creates the project and the
        experiment when missing and checks that the caller may). Later ones are checked here and
        written by the metric writer's next group commit, with whatever the run logs and its end
        when they come soon enough: one transaction for a short run.
        """
        key = (name_key(project), name_key(experiment))
        home = self._homes.get(key)
        if home is None:
            run = self.create_run(project, experiment, name, params, tags)
            self._homes[key] = (run.project, run.experiment)
            return run, False
        host, pid, pid_start = process_identity(True)
        spec = self.tracking.prepare_run(
            home[0],
            experiment=home[1],
            name=name,
            params=params,
            tags=tags,
            host=host,
            pid=pid,
            pid_start=pid_start,
        )
        run_id = new_id()
        self.writer.submit(run_id, [], create=spec)
        return pending_run(run_id, spec, self.user), True

    def log_input(self, run_id: str, kind: str, ref: str) -> None:
        self.tracking.log_input(run_id, kind, ref)

    def get_run(self, run_id: str) -> Run:
        return self.tracking.get_run(run_id)

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
        return self.tracking.search(
            project,
            experiments=experiments,
            filter=filter,
            order_by=order_by,
            max_results=max_results,
            offset=offset,
        )

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        self.tracking.log_params(run_id, params)

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        self.tracking.set_tags(run_id, tags)

    def delete_tag(self, run_id: str, key: str) -> None:
        self.tracking.delete_tag(run_id, key)

    def log_metric_batches(
        self, batches: Sequence[MetricBatch]
    ) -> Sequence[MetricBatchResult | CivicMLError]:
        return self.tracking.log_metric_batches(batches)

    def metric_history(self, run_id: str, key: str) -> list[MetricValue]:
        return self.tracking.metric_history(run_id, key)

    def heartbeat(self, run_id: str) -> None:
        self.tracking.heartbeat(run_id)

    def end_run(self, run_id: str, status: str) -> Run:
        return self.tracking.end_run(run_id, status)

    def run_ended(self, run_id: str) -> None:
        """A run ended through the metric writer (nothing to forget here)."""

    def log_artifact(self, run_id: str, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        return self.tracking.log_artifact(run_id, path, data)

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        return self.tracking.list_artifacts(run_id, prefix)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        _info, handle = self.tracking.open_artifact(run_id, path)
        with handle:
            return handle.read()

    def put_blob(self, data: bytes | BinaryIO, *, project: str) -> str:
        """Store bytes in the content-addressed store; returns the SHA-256 digest."""
        return self.registry.store_blob(project, data).digest

    # Lineage and audit -----------------------------------------------------------------------
    def lineage_query(self, kind: str, ref: str, direction: str, max_depth: int) -> LineageGraph:
        return self.lineage.query(
            kind,
            ref,
            direction=direction,  # type: ignore[arg-type]
            max_depth=max_depth,
        )

    def audit_events(self, **filters: Any) -> list[AuditEvent]:
        return self.audit.list(**filters)

    def audit_verify(self) -> AuditReport:
        return self.audit.verify()

    def audit_export(self, path: Path) -> int:
        return self.audit.export(path)
