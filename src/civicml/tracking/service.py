"""Experiments and runs: params, metrics, tags, artifacts and status."""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import math
import re
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, NamedTuple

from sqlalchemy import Connection, bindparam, exists, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from civicml.core.clock import to_millis
from civicml.core.errors import (
    CivicMLError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    closest,
)
from civicml.core.ids import new_id, validate_name
from civicml.core.names import already_exists, name_key
from civicml.core.process import hostname, process_alive
from civicml.core.types import INT64_MAX, INT64_MIN
from civicml.costs.budgets import check_budget, evaluate
from civicml.costs.meter import Usage
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context
from civicml.store.db import UnitOfWork
from civicml.store.paths import validate_relative_path
from civicml.store.schema import bind_utc
from civicml.store.schemas import ArtifactInfo
from civicml.tracking import _tables as t
from civicml.tracking._tables import latest_metrics, metrics, runs
from civicml.tracking.schemas import (
    MAX_HISTORY_PAGE,
    MAX_RUNS_PAGE,
    Experiment,
    MetricBatchResult,
    MetricHistory,
    MetricValue,
    Run,
    RunPage,
    RunStatus,
)
from civicml.tracking.search import (
    Clause,
    OrderKey,
    apply_order,
    compile_filter,
    parse_filter,
    parse_order,
    project_scope,
)
from civicml.tracking.usage import add_run_usage

__all__ = [
    "MetricBatch",
    "MetricPoint",
    "NewRun",
    "TrackingService",
    "batch_digest",
    "check_max_results",
    "check_run_name",
    "clean_params",
    "clean_tags",
    "new_params",
    "not_running",
    "param_conflict",
    "pending_run",
]


class MetricPoint(NamedTuple):
    """A checked metric value on the hot path (no pydantic model per value)."""

    key: str
    value: float
    step: int
    timestamp: int | None


# Statements of the metric hot path, built once (building costs more than executing them).
#: The batches stored before, among some runs' and batch ids (DB-API text: ``{runs}`` and
#: ``{ids}`` are parameter marks). Both columns of the primary key are constrained, so the
#: lookup is an index search: by batch id alone it was a scan of every batch ever stored.
_SEEN_BATCHES = (
    "SELECT run_id, batch_id, digest FROM metric_batches "
    "WHERE run_id IN ({runs}) AND batch_id IN ({ids})"
)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_LOAD_CHUNK = 5_000  # ids per query: far below SQLite's limit on bound parameters
#: Most (run, batch id) combinations one look-up of stored batches names.
_SEEN_PROBES = 4_096
#: The runs' heads by id (DB-API text: ``{marks}`` is the ids' parameter marks).
_RUNS_BY_ID = (
    "SELECT runs.id, runs.name, runs.status, runs.start_time, runs.end_time, runs.created_by, "
    "experiments.name, projects.name FROM runs "
    "JOIN experiments ON experiments.id = runs.experiment_id "
    "JOIN projects ON projects.id = runs.project_id WHERE runs.id IN ({marks})"
)
_HEARTBEAT_EVERY = timedelta(seconds=10)
_last_heartbeat: dict[str, datetime] = {}


def _seen_batches(
    cursor: Any, mark: str, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """(run, batch id) -> the digest stored with it (None: a row older than digests), for
    those of ``wanted`` stored before.

    Each query names some runs and their batch ids, and the index is searched for every run
    and id named together: pairs go in groups (by run) of at most :data:`_SEEN_PROBES`
    combinations, so many runs' batches in one round cost a few small queries.
    """
    seen: dict[tuple[str, str], str | None] = {}
    if not wanted:  # the SDK's embedded batches have no ids
        return seen
    want = set(wanted)
    group_runs: set[str] = set()
    group_ids: set[str] = set()

    def query() -> None:
        run_ids, batch_ids = sorted(group_runs), sorted(group_ids)
        cursor.execute(
            _SEEN_BATCHES.format(
                runs=", ".join([mark] * len(run_ids)), ids=", ".join([mark] * len(batch_ids))
            ),
            [*run_ids, *batch_ids],
        )
        seen.update(((r[0], r[1]), r[2]) for r in cursor.fetchall() if (r[0], r[1]) in want)

    for run_id, batch_id in sorted(want):
        runs = len(group_runs) + (run_id not in group_runs)
        ids = len(group_ids) + (batch_id not in group_ids)
        if group_runs and (runs * ids > _SEEN_PROBES or runs + ids > _LOAD_CHUNK):
            query()
            group_runs, group_ids = set(), set()
        group_runs.add(run_id)
        group_ids.add(batch_id)
    if group_runs:
        query()
    return seen


def _heartbeat_due(run_id: str, now: datetime) -> bool:
    last = _last_heartbeat.get(run_id)
    if last is not None and timedelta(0) <= now - last < _HEARTBEAT_EVERY:
        return False
    if len(_last_heartbeat) > 10_000:
        _last_heartbeat.clear()
    _last_heartbeat[run_id] = now
    return True


_HEARTBEAT = (
    update(runs)
    .where(runs.c.id.in_(bindparam("ids", expanding=True)))
    .values(heartbeat_at=bindparam("now"))
)

MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_SEARCH_RESULTS = 50_000
DEFAULT_EXPERIMENT = "default"
_CURSOR = re.compile(r"(-?\d{1,19})\.(-?\d{1,19})\.(\d{1,19})")
_ENTITY_WORDS = {"metric": "metric", "param": "parameter", "tag": "tag"}


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create in a group commit: what :meth:`TrackingService.create_run` writes, checked
    by :meth:`TrackingService.prepare_run` (``start_time`` None: when it is written)."""

    project: str
    experiment: str
    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str]
    start_time: datetime | None = None
    host: str | None = None
    pid: int | None = None
    pid_start: int | None = None


@dataclass(frozen=True, slots=True)
class MetricBatch:
    """Values for one run, with the client's batch id (a retry with the same id is ignored).

    ``values`` are :class:`MetricValue` objects or anything with the same attributes (the SDK
    passes light :class:`MetricPoint` tuples it has already checked).
    """

    run_id: str
    values: Sequence[MetricValue | MetricPoint]
    batch_id: str | None = None
    #: Parameters to record after the values (immutable once set, as :meth:`log_params`).
    params: Mapping[str, object] | None = None
    #: End the run with this status after the values and parameters (as :meth:`end_run`).
    end: str | None = None
    #: Create the run (with ``run_id``) first, as :meth:`create_run` would.
    create: NewRun | None = None


class TrackingService:
    """Experiments, runs and everything logged to them."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)

    # Experiments ----------------------------------------------------------------------------
    def ensure_experiment(self, project: str, name: str = DEFAULT_EXPERIMENT) -> Experiment:
        """The experiment ``name`` of ``project``, created (with the project) when missing."""
        validate_name("Experiment", name)
        proj = self._projects.ensure(project, "experiments.write")
        with self._ctx.db.read() as conn:
            row = self._find_experiment(conn, proj.id, name)
        if row is not None:
            return _experiment(row, proj.name)
        try:
            with self._ctx.db.write() as uow:
                row = self._find_experiment(uow.conn, proj.id, name)
                if row is not None:
                    return _experiment(row, proj.name)
                return self._insert_experiment(uow, proj.id, proj.name, name, "")
        except IntegrityError:
            return self.get_experiment(project, name)

    def create_experiment(self, project: str, name: str, *, description: str = "") -> Experiment:
        validate_name("Experiment", name)
        proj = self._projects.get(project, "experiments.write")
        with self._ctx.db.write() as uow:
            existing = self._find_experiment(uow.conn, proj.id, name)
            if existing is not None:  # in any letter case
                raise ConflictError(
                    already_exists(
                        "Experiment", name, existing.name, scope=f"project {proj.name!r}"
                    ),
                    hint="Start runs in it, or choose another name.",
                )
            return self._insert_experiment(uow, proj.id, proj.name, name, description)

    def get_experiment(self, project: str, name: str) -> Experiment:
        proj = self._projects.get(project, "experiments.read")
        with self._ctx.db.read() as conn:
            row = self._find_experiment(conn, proj.id, name)
            if row is None:
                names = (
                    conn.execute(
                        select(t.experiments.c.name).where(t.experiments.c.project_id == proj.id)
                    )
                    .scalars()
                    .all()
                )
                raise NotFoundError(
                    f"Experiment {name!r} does not exist in project {project!r}.",
                    hint=closest(name, names) or f"List them: civicml experiments list {project}",
                )
        return _experiment(row, proj.name)

    def list_experiments(
        self, project: str, *, max_results: int = MAX_RUNS_PAGE, offset: int = 0
    ) -> list[Experiment]:
        """Experiments of a project by name: at most ``max_results`` (1 to MAX_RUNS_PAGE)
        from ``offset``."""
        if not 1 <= max_results <= MAX_RUNS_PAGE or not 0 <= offset <= INT64_MAX:
            raise InvalidInputError(
                f"max_results {max_results} or offset {offset} is out of range.",
                hint=f"Use max_results 1 to {MAX_RUNS_PAGE:,} and an offset from 0.",
            )
        proj = self._projects.get(project, "experiments.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(t.experiments)
                .where(t.experiments.c.project_id == proj.id)
                .order_by(t.experiments.c.name)
                .limit(max_results)
                .offset(offset)
            )
            return [_experiment(r, project) for r in rows]

    @staticmethod
    def _find_experiment(conn: Connection, project_id: str, name: str) -> Any:
        return conn.execute(
            select(t.experiments).where(
                t.experiments.c.project_id == project_id,
                func.lower(t.experiments.c.name) == name_key(name),  # case-insensitive
            )
        ).first()

    def _insert_experiment(
        self, uow: UnitOfWork, project_id: str, project: str, name: str, description: str
    ) -> Experiment:
        exp = Experiment(
            id=new_id(),
            project=project,
            name=name,
            description=description,
            created_at=self._ctx.clock.now(),
            created_by=self._ctx.principal.user,
        )
        uow.conn.execute(
            insert(t.experiments).values(
                id=exp.id,
                project_id=project_id,
                name=name,
                description=description,
                created_at=exp.created_at,
                created_by=exp.created_by,
            )
        )
        self._audit.record(
            uow, "experiment.created", "experiment", exp.id, project=project, after={"name": name}
        )
        return exp

    # Runs -----------------------------------------------------------------------------------
    def create_run(
        self,
        project: str,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        name: str | None = None,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
        host: str | None = None,
        pid: int | None = None,
        pid_start: int | None = None,
        also: Callable[[UnitOfWork, str], None] | None = None,
        durable: bool = True,
    ) -> Run:
        """Start a run (status ``running``) in ``experiment``, created when missing.

        ``host``/``pid``/``pid_start`` identify the process doing the work, so a run whose process
        died is found and marked ``killed``; without them, only the heartbeat timeout applies.
        ``also(uow, run_id)`` writes what the caller records about the new run in the same
        transaction (a pipeline step's row and lineage). ``durable=False``: the commit does
        not wait for the disk (:meth:`~civicml.store.db.MetadataStore.write`).
        """
        spec = self.prepare_run(
            project,
            experiment=experiment,
            name=name,
            params=params,
            tags=tags,
            host=host,
            pid=pid,
            pid_start=pid_start,
        )
        run_id = new_id()
        spec = replace(spec, name=spec.name or f"run-{run_id[-8:]}")
        for attempt in range(2):
            if attempt:  # create the project and experiment (checking the caller may), then again
                self.ensure_experiment(project, experiment)
            try:
                with self._ctx.db.write(durable=durable) as uow:
                    stored = self._insert_run(uow, run_id, spec)
                    if also is not None:
                        also(uow, run_id)
                return pending_run(run_id, stored, self._ctx.principal.user)
            except _Missing:
                if attempt:  # deleted again between the two transactions
                    raise NotFoundError(
                        f"Experiment {experiment!r} of project {project!r} does not exist."
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def prepare_run(
        self,
        project: str,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        name: str | None = None,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
        host: str | None = None,
        pid: int | None = None,
        pid_start: int | None = None,
    ) -> NewRun:
        """Check a run to start (names, parameters, tags, the project's budget) without writing
        it: :meth:`create_run` writes it now, a batch's ``create`` with the next group commit.
        An empty ``name`` is generated from the run id when the run is written.

        Raises:
            InvalidInputError: A name, parameter or tag is not valid.
            BudgetExceededError: The project's hard-stop budget is spent.
        """
        validate_name("Experiment", experiment)
        checked_params = clean_params(params or {})
        checked_tags = clean_tags(tags or {})
        check_run_name(name)
        check_budget(self._ctx, project)  # costs: a spent hard-stop budget refuses new runs
        return NewRun(
            project=project,
            experiment=experiment,
            name=name or "",
            params=checked_params,
            tags=checked_tags,
            start_time=self._ctx.clock.now(),
            host=host,
            pid=pid,
            pid_start=pid_start,
        )

    def _insert_run(self, uow: UnitOfWork, run_id: str, spec: NewRun) -> NewRun:
        """Write a new run, its parameters, tags, lineage node and audit event in ``uow``;
        answers ``spec`` as written (names as stored, the generated name, the start time).

        Raises:
            _Missing: Its project or experiment does not exist (yet).
            PermissionDeniedError: The caller may not start runs in the project.
        """
        # Plain DB-API statements: pipelines, tuning and loops create runs by the thousand.
        cursor, mark = uow.driver_cursor()
        cursor.execute(
            "SELECT p.id, p.name, e.id, e.name FROM projects p JOIN experiments e ON "
            f"e.project_id = p.id WHERE lower(p.name) = {mark} AND lower(e.name) = {mark}",
            (name_key(spec.project), name_key(spec.experiment)),
        )
        home = cursor.fetchone()
        if home is None:
            raise _Missing
        project_id, project, experiment_id, experiment = home  # names as stored
        self._projects.access.require(project_id, project, "experiments.write")
        run_name = spec.name or f"run-{run_id[-8:]}"
        now = spec.start_time or self._ctx.clock.now()
        stamp = bind_utc(now, uow.conn.dialect.name)
        user = self._ctx.principal.user
        cursor.execute(
            "INSERT INTO runs (id, project_id, experiment_id, name, status, start_time, "
            "end_time, heartbeat_at, created_by, host, pid, pid_start) VALUES "
            f"({', '.join([mark] * 12)})",
            (
                run_id,
                project_id,
                experiment_id,
                run_name,
                RunStatus.RUNNING.value,
                stamp,
                None,
                stamp,
                user,
                spec.host,
                spec.pid,
                spec.pid_start,
            ),
        )
        for table, values in (("params", spec.params), ("tags", spec.tags)):
            if values:
                cursor.executemany(
                    f"INSERT INTO {table} (run_id, key, value) VALUES ({mark}, {mark}, {mark})",
                    [(run_id, k, v) for k, v in values.items()],
                )
        # A new run's lineage node: its id is new, so there is nothing to look up.
        self._lineage.new_node(
            uow, "run", run_id, name=f"{experiment}/{run_name}", project_id=project_id
        )
        self._audit.record(
            uow,
            "run.created",
            "run",
            run_id,
            project=project,
            after={
                "experiment": experiment,
                "name": run_name,
                "params": dict(spec.params),
                "tags": dict(spec.tags),
            },
        )
        # No Run model here: a group commit answers the run as it ends (_ended_in_round).
        return replace(spec, project=project, experiment=experiment, name=run_name, start_time=now)

    def _create_in_batch(
        self, uow: UnitOfWork, cursor: Any, mark: str, batch: MetricBatch
    ) -> NewRun | None:
        """A batch's ``create``, checked as :meth:`create_run` checks it; answers the new run
        as written (:meth:`_insert_run`).

        Raises:
            CivicMLError: The run cannot be created (the id is taken, the experiment is gone,
                the caller may not, the budget is spent); nothing of it is written.
        """
        spec = batch.create
        if spec is None:  # pragma: no cover - called for batches that create
            return None
        if not _RUN_ID.fullmatch(batch.run_id):
            raise InvalidInputError(
                f"{batch.run_id[:80]!r} is not a run id for a new run.",
                hint="A new run's id is 32 lowercase hexadecimal characters.",
            )
        cursor.execute(f"SELECT 1 FROM runs WHERE id = {mark}", (batch.run_id,))
        if cursor.fetchone() is not None:
            raise ConflictError(
                f"Run {batch.run_id} exists already.", hint="Start the new run with a new id."
            )
        check_budget(self._ctx, spec.project)
        try:
            return self._insert_run(uow, batch.run_id, spec)
        except _Missing:
            raise NotFoundError(
                f"Experiment {spec.experiment!r} of project {spec.project!r} does not exist.",
                hint="Start a run there with start_run() (it creates both), then retry.",
            ) from None

    def get_run(self, run_id: str) -> Run:
        with self._ctx.db.read() as conn:
            self._head(conn, run_id, "experiments.read")
            found = self._load_runs(conn, [run_id])
        if not found:
            raise _run_not_found(run_id)
        return found[0]

    def log_params(self, run_id: str, values: Mapping[str, object]) -> None:
        """Record parameters. A parameter never changes: a different value for a logged key is
        refused; the same value again is accepted (so a retry is harmless)."""
        clean = clean_params(values)
        if not clean:
            return
        with self._ctx.db.write() as uow:
            head = self._running(uow.conn, run_id, "log parameters to")
            existing = dict(
                uow.conn.execute(
                    select(t.params.c.key, t.params.c.value).where(
                        t.params.c.run_id == run_id, t.params.c.key.in_(list(clean))
                    )
                ).all()
            )
            added = new_params(run_id, clean, {run_id: existing})
            if added:
                uow.conn.execute(
                    insert(t.params),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in added.items()],
                )
                self._audit.record(
                    uow,
                    "run.params_logged",
                    "run",
                    run_id,
                    project=head.project,
                    after={"params": added},
                )

    def set_tags(self, run_id: str, values: Mapping[str, object]) -> None:
        """Set (or change) tags on a run in any status."""
        clean = clean_tags(values)
        if not clean:
            return
        with self._ctx.db.write() as uow:
            head = self._head(uow.conn, run_id, "experiments.write")
            before = dict(
                uow.conn.execute(
                    select(t.tags.c.key, t.tags.c.value).where(
                        t.tags.c.run_id == run_id, t.tags.c.key.in_(list(clean))
                    )
                ).all()
            )
            for key, value in clean.items():
                if key in before:
                    uow.conn.execute(
                        update(t.tags)
                        .where(t.tags.c.run_id == run_id, t.tags.c.key == key)
                        .values(value=value)
                    )
                else:
                    uow.conn.execute(insert(t.tags).values(run_id=run_id, key=key, value=value))
            self._audit.record(
                uow,
                "run.tags_set",
                "run",
                run_id,
                project=head.project,
                before={"tags": before},
                after={"tags": clean},
            )

    def delete_tag(self, run_id: str, key: str) -> None:
        with self._ctx.db.write() as uow:
            head = self._head(uow.conn, run_id, "experiments.write")
            old = uow.conn.execute(
                select(t.tags.c.value).where(t.tags.c.run_id == run_id, t.tags.c.key == key)
            ).scalar()
            if old is None:
                raise NotFoundError(f"Run {run_id} has no tag {key!r}.")
            uow.conn.execute(t.tags.delete().where(t.tags.c.run_id == run_id, t.tags.c.key == key))
            self._audit.record(
                uow,
                "run.tag_deleted",
                "run",
                run_id,
                project=head.project,
                before={"tags": {key: old}},
            )

    def log_input(self, run_id: str, kind: str, ref: str) -> None:
        """Record that the run used an existing entity (e.g. a dataset version) as input:
        a lineage edge ``kind/ref --ContributedTo--> run`` and an audit event.

        Raises:
            NotFoundError: The run, or the entity's lineage node, does not exist.
        """
        node = self._lineage.get_node(kind, ref)  # NotFoundError for an unknown entity
        with self._ctx.db.write() as uow:
            head = self._head(uow.conn, run_id, "experiments.write")
            run_node = self._lineage.node(uow, "run", run_id, project_id=head.project_id)
            self._lineage.link(uow, node.id, run_node, "ContributedTo")
            self._audit.record(
                uow,
                "run.input_logged",
                "run",
                run_id,
                project=head.project,
                after={"input": {"kind": kind, "ref": ref, "name": node.name}},
            )

    # Metrics --------------------------------------------------------------------------------
    def log_metrics(
        self, run_id: str, values: Sequence[MetricValue], *, batch_id: str | None = None
    ) -> MetricBatchResult:
        """Store metric values in one transaction.

        Raises:
            NotFoundError: The run does not exist.
            ConflictError: The run is not running.
        """
        result = self.log_metric_batches([MetricBatch(run_id, values, batch_id)])[0]
        if isinstance(result, CivicMLError):
            raise result
        return result

    def log_metric_batches(
        self, batches: Sequence[MetricBatch]
    ) -> list[MetricBatchResult | CivicMLError]:
        """Store many batches (of any runs) in ONE transaction: the group commit.

        A batch holds metric values, parameters and the status that ends its run (each
        optional, applied in that order), so a run's whole record can be written by one commit.
        A batch for a missing or finished run, or with a parameter that contradicts one already
        logged, gets its error in the result list and stores nothing; the other batches are
        stored. A batch whose ``batch_id`` was stored before stores nothing.
        """
        if not batches:
            return []
        now = self._ctx.clock.now()
        now_ms = to_millis(now)
        results: list[MetricBatchResult | CivicMLError] = []
        with self._ctx.db.write() as uow:
            conn = uow.conn
            # The hot path talks to the DB-API cursor directly, inside the same transaction:
            # SQLAlchemy's per-statement work cost more than SQLite's for these small writes.
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            # (run, batch id) -> digest of the body stored under it (None: an older row).
            seen = _seen_batches(
                cursor, mark, [(b.run_id, b.batch_id) for b in batches if b.batch_id]
            )
            not_created: dict[int, CivicMLError] = {}
            created: dict[str, NewRun] = {}  # the runs this round creates, as written
            for index, batch in enumerate(batches):
                retried = batch.batch_id is not None and (batch.run_id, batch.batch_id) in seen
                if batch.create is not None and not retried:  # a retry created it already
                    try:
                        new_run = self._create_in_batch(uow, cursor, mark, batch)
                    except CivicMLError as err:
                        not_created[index] = err
                    else:
                        if new_run is not None:
                            created[batch.run_id] = new_run
            # A run created in this round is running, in a project the caller may log to
            # (checked as it was written): no query for it.
            run_ids = list({b.run_id for b in batches if b.run_id not in created})
            found: list[Any] = []
            if run_ids:
                cursor.execute(
                    "SELECT runs.id, runs.status, runs.project_id, projects.name FROM runs JOIN "
                    "projects ON projects.id = runs.project_id "
                    f"WHERE runs.id IN ({', '.join([mark] * len(run_ids))})",
                    run_ids,
                )
                found = cursor.fetchall()
            project_of = {r[0]: r[3] for r in found}
            status, refused = self._writable_runs(found)
            for run_id, new_run in created.items():
                status[run_id] = RunStatus.RUNNING.value
                project_of[run_id] = new_run.project
            # A run created in this round has the parameters it was created with: no query.
            logged = _logged_params(
                cursor, mark, [b.run_id for b in batches if b.params and b.run_id not in created]
            )
            for run_id, new_run in created.items():
                logged.setdefault(run_id, dict(new_run.params))
            rows: list[tuple[Any, ...]] = []
            new_batches: list[dict[str, Any]] = []
            latest: dict[tuple[str, str], tuple[Any, ...]] = {}
            touched: set[str] = set()
            param_rows: list[tuple[str, str, str]] = []
            params_events: list[tuple[str, dict[str, str]]] = []
            ends: list[tuple[int, str, str, str]] = []  # (result index, run, before, after)
            for index, batch in enumerate(batches):
                if index in not_created:
                    results.append(not_created[index])
                    continue
                state = status.get(batch.run_id)
                if state is None:
                    results.append(refused.get(batch.run_id) or _run_not_found(batch.run_id))
                    continue
                try:
                    target = None if batch.end is None else _end_status(batch.end)
                    added = (
                        new_params(batch.run_id, clean_params(batch.params), logged)
                        if batch.params
                        else {}
                    )
                except CivicMLError as err:
                    results.append(err)
                    continue
                if state != RunStatus.RUNNING.value:
                    if target is not None and state == target and not batch.values and not added:
                        ends.append((len(results), batch.run_id, state, ""))  # a retry
                        results.append(MetricBatchResult(stored=0))
                    else:
                        verb = "end" if target is not None else "log metrics to"
                        results.append(not_running(batch.run_id, state, verb))
                    continue
                if batch.batch_id:
                    digest = batch_digest(batch.values, batch.params, batch.end)
                    ident = (batch.run_id, batch.batch_id)
                    if ident in seen:
                        known = seen[ident]
                        if known is None or known == digest:  # a retry (or a pre-digest row)
                            results.append(MetricBatchResult(stored=0, duplicate=True))
                        else:
                            results.append(_batch_conflict(batch.run_id, batch.batch_id))
                        continue
                    seen[ident] = digest
                    new_batches.append(
                        {
                            "batch_id": batch.batch_id,
                            "run_id": batch.run_id,
                            "count": len(batch.values),
                            "created_at": now,
                            "digest": digest,
                        }
                    )
                run_id = batch.run_id
                for v in batch.values:
                    value = v.value
                    is_nan = value != value  # noqa: PLR0124 - the fastest NaN test
                    row = (
                        run_id,
                        v.key,
                        None if is_nan else value,
                        is_nan,
                        v.step,
                        now_ms if v.timestamp is None else v.timestamp,
                    )
                    rows.append(row)
                    best = latest.get((run_id, v.key))
                    if best is None or (row[4], row[5]) >= (best[4], best[5]):
                        latest[(run_id, v.key)] = row
                if added:
                    logged.setdefault(run_id, {}).update(added)
                    param_rows.extend((run_id, k, v) for k, v in added.items())
                    params_events.append((run_id, added))
                if target is not None:
                    status[run_id] = target  # later batches of this round see it ended
                    ends.append((len(results), run_id, state, target))
                else:
                    touched.add(run_id)
                results.append(_stored(len(batch.values)))
            if new_batches:
                cursor.executemany(
                    "INSERT INTO metric_batches (run_id, batch_id, count, created_at, digest) "
                    f"VALUES ({', '.join([mark] * 5)})",
                    [
                        (
                            b["run_id"],
                            b["batch_id"],
                            b["count"],
                            bind_utc(b["created_at"], conn.dialect.name),
                            b["digest"],
                        )
                        for b in new_batches
                    ],
                )
            if rows:
                insert_sql, upsert_sql = _metric_sql(conn.dialect.paramstyle)
                cursor.executemany(insert_sql, rows)
                cursor.executemany(upsert_sql, list(latest.values()))
            if param_rows:
                cursor.executemany(
                    f"INSERT INTO params (run_id, key, value) VALUES ({mark}, {mark}, {mark})",
                    param_rows,
                )
            changed = [(run_id, after) for _, run_id, _, after in ends if after]
            if changed:
                stamp = bind_utc(now, conn.dialect.name)
                cursor.executemany(
                    f"UPDATE runs SET status = {mark}, end_time = {mark} WHERE id = {mark}",
                    [(after, stamp, run_id) for run_id, after in changed],
                )
            cursor.close()
            running = RunStatus.RUNNING.value  # a run that ended in this round needs no beat
            stale = [r for r in touched if status.get(r) == running and _heartbeat_due(r, now)]
            if stale:  # logging is a heartbeat, recorded at most every _HEARTBEAT_EVERY
                conn.execute(_HEARTBEAT, {"ids": stale, "now": now})
            for run_id, added in params_events:
                self._audit.record(
                    uow,
                    "run.params_logged",
                    "run",
                    run_id,
                    project=project_of[run_id],
                    after={"params": added},
                )
            for _, run_id, before, after in ends:
                if after:
                    self._audit.record(
                        uow,
                        f"run.{after}",
                        "run",
                        run_id,
                        project=project_of[run_id],
                        before={"status": before},
                        after={"status": after},
                    )
            if ends:
                # A run created and ended in this round (a short run) is answered from what
                # was written; others are read back.
                short = {
                    run_id: after for _, run_id, _, after in ends if after and run_id in created
                }
                values: dict[str, dict[str, float]] = {run_id: {} for run_id in short}
                for (run_id, key), kept in latest.items():
                    if run_id in short:
                        values[run_id][key] = math.nan if kept[3] else kept[2]
                user = self._ctx.principal.user
                ended = {
                    run_id: _ended_in_round(
                        run_id, created[run_id], user, after, now, logged, values[run_id]
                    )
                    for run_id, after in short.items()
                }
                ended.update(
                    (r.id, r)
                    for r in self._load_runs(conn, [e[1] for e in ends if e[1] not in ended])
                )
                for index, run_id, _, _ in ends:
                    done = results[index]
                    if isinstance(done, MetricBatchResult):
                        results[index] = done.model_copy(update={"run": ended[run_id]})
        return results

    def metric_history(self, run_id: str, key: str) -> list[MetricValue]:
        """Every value of one metric, by step, then time (all pages of
        :meth:`metric_history_page`)."""
        values: list[MetricValue] = []
        cursor: str | None = None
        while True:
            page = self.metric_history_page(run_id, key, after=cursor)
            values.extend(page.values)
            if page.next_cursor is None:
                return values
            cursor = page.next_cursor

    def metric_history_page(
        self, run_id: str, key: str, *, after: str | None = None, limit: int = MAX_HISTORY_PAGE
    ) -> MetricHistory:
        """One page of a metric's values, by step, then time; ``next_cursor`` (pass it as
        ``after``) fetches the next page and is ``None`` on the last one.

        Raises:
            NotFoundError: The run does not exist.
            InvalidInputError: ``limit`` is out of range or ``after`` is not a cursor.
        """
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidInputError(
                f"limit {limit} is out of range.", hint=f"Use 1 to {MAX_HISTORY_PAGE:,}."
            )
        query = (
            select(
                metrics.c.id, metrics.c.value, metrics.c.is_nan, metrics.c.step, metrics.c.timestamp
            )
            .where(metrics.c.run_id == run_id, metrics.c.key == key)
            .order_by(metrics.c.step, metrics.c.timestamp, metrics.c.id)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(
                tuple_(metrics.c.step, metrics.c.timestamp, metrics.c.id) > _parse_cursor(after)
            )
        with self._ctx.db.read() as conn:
            self._head(conn, run_id, "experiments.read")
            rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        values = [
            MetricValue(
                key=key,
                value=math.nan if r.is_nan else r.value,
                step=r.step,
                timestamp=r.timestamp,
            )
            for r in rows
        ]
        last = rows[-1] if rows else None
        next_cursor = f"{last.step}.{last.timestamp}.{last.id}" if more and last else None
        return MetricHistory(key=key, values=values, next_cursor=next_cursor)

    def heartbeat(self, run_id: str) -> None:
        """Tell civicml the run's process is alive."""
        with self._ctx.db.write() as uow:
            self._running(uow.conn, run_id, "heartbeat")
            uow.conn.execute(
                update(runs).where(runs.c.id == run_id).values(heartbeat_at=self._ctx.clock.now())
            )

    # Status ---------------------------------------------------------------------------------
    def end_run(
        self,
        run_id: str,
        status: RunStatus | str = RunStatus.FINISHED,
        *,
        usage: Usage | None = None,
        also: Callable[[UnitOfWork], None] | None = None,
        durable: bool = True,
    ) -> Run:
        """End a running run as finished, failed or killed.

        ``usage`` (what its work used, measured where it ran) is added to the run's line in the
        usage ledger and ``also(uow)`` writes what the caller records about the ending (a
        pipeline step's row), both in the same transaction. ``durable=False``: the commit does
        not wait for the disk (:meth:`~civicml.store.db.MetadataStore.write`).
        """
        try:
            target = RunStatus(status)
        except ValueError as err:
            raise InvalidInputError(
                f"Run status {status!r} is not valid.", hint="Use finished, failed or killed."
            ) from err
        if target is RunStatus.RUNNING:
            raise InvalidInputError(
                "A run cannot be ended as 'running'.", hint="Use finished, failed or killed."
            )
        with self._ctx.db.write(durable=durable) as uow:
            head = self._head(uow.conn, run_id, "experiments.write")
            if head.status != RunStatus.RUNNING.value:
                if head.status == target.value:
                    return self._load_runs(uow.conn, [run_id])[0]  # idempotent retry
                raise not_running(run_id, head.status, "end")
            self._set_status(uow, head, target, {})
            if usage is not None:
                add_run_usage(uow.conn, self._ctx.clock.now(), run_id, usage)
            if also is not None:
                also(uow)
            ended = self._load_runs(uow.conn, [run_id])[0]
        if usage is not None:
            evaluate(self._ctx, str(head.project_id))  # the budget's warning, once a month
        return ended

    def _set_status(
        self, uow: UnitOfWork, head: Any, target: RunStatus, extra: dict[str, Any]
    ) -> None:
        uow.conn.execute(
            update(runs)
            .where(runs.c.id == head.id)
            .values(status=target.value, end_time=self._ctx.clock.now())
        )
        self._audit.record(
            uow,
            f"run.{target.value}",
            "run",
            head.id,
            project=head.project,
            before={"status": head.status},
            after={"status": target.value, **extra},
        )

    def recover_abandoned(self) -> list[str]:
        """Mark ``killed`` every running run whose process is gone or whose heartbeat stopped.

        A run started on this host records its pid and the process start tick: when that process
        no longer exists it is abandoned at once. Other runs are abandoned when no heartbeat or
        metric arrived for ``run_heartbeat_timeout_s``. Returns the ids marked killed.
        """
        now = self._ctx.clock.now()
        cutoff = now - timedelta(seconds=self._ctx.settings.run_heartbeat_timeout_s)
        here = hostname()
        with self._ctx.db.read() as conn:
            candidates = conn.execute(
                select(
                    runs.c.id, runs.c.host, runs.c.pid, runs.c.pid_start, runs.c.heartbeat_at
                ).where(runs.c.status == RunStatus.RUNNING.value)
            ).all()
        abandoned: dict[str, str] = {}
        for row in candidates:
            if row.host == here and row.pid is not None:
                if not process_alive(row.pid, row.pid_start):
                    abandoned[row.id] = f"process {row.pid} on {here} is gone"
            elif row.heartbeat_at < cutoff:
                abandoned[row.id] = f"no heartbeat since {row.heartbeat_at.isoformat()}"
        killed: list[str] = []
        for run_id, reason in abandoned.items():
            with self._ctx.db.write() as uow:
                head = self._head(uow.conn, run_id, None)
                if head.status != RunStatus.RUNNING.value:
                    continue
                self._set_status(uow, head, RunStatus.KILLED, {"reason": f"abandoned: {reason}"})
                killed.append(run_id)
        return killed

    # Artifacts ------------------------------------------------------------------------------
    def log_artifact(
        self, run_id: str, path: str, data: bytes | BinaryIO, *, media_type: str | None = None
    ) -> ArtifactInfo:
        """Store ``data`` as the run's artifact ``path``; the same content again is a no-op."""
        validate_relative_path(path)
        with self._ctx.db.read() as conn:
            self._running(conn, run_id, "log artifacts to")
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
        stored = self._ctx.artifacts.put_stream(stream)  # bytes first: a row never lacks them
        with self._ctx.db.write() as uow:
            head = self._running(uow.conn, run_id, "log artifacts to")
            info, created = ArtifactIndex.add(
                uow,
                project_id=head.project_id,
                owner_kind="run",
                owner_id=run_id,
                path=path,
                stored=stored,
                created_by=self._ctx.principal.user,
                created_at=self._ctx.clock.now(),
                media_type=media_type,
            )
            if created:
                self._audit.record(
                    uow,
                    "run.artifact_logged",
                    "run",
                    run_id,
                    project=head.project,
                    after={"path": path, "digest": stored.digest, "size": stored.size},
                )
        return info

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        with self._ctx.db.read() as conn:
            self._head(conn, run_id, "experiments.read")
            return ArtifactIndex.list(conn, "run", run_id, prefix)

    def open_artifact(self, run_id: str, path: str) -> tuple[ArtifactInfo, BinaryIO]:
        """The artifact's record and a verified read handle (the caller closes it)."""
        with self._ctx.db.read() as conn:
            self._head(conn, run_id, "experiments.read")
            info = ArtifactIndex.get(conn, "run", run_id, path)
        return info, self._ctx.artifacts.open(info.digest)

    # Search ---------------------------------------------------------------------------------
    def list_runs(
        self, project: str, *, experiment: str | None = None, max_results: int = 100
    ) -> list[Run]:
        return self.search_runs(
            project, experiments=[experiment] if experiment else None, max_results=max_results
        )

    def search_runs(
        self,
        project: str,
        *,
        experiments: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        """Runs of a project matching an MLflow-style filter, in the requested order (the
        ``runs`` of :meth:`search`).

        Example:
            >>> svc.search_runs("benefits", filter="metrics.auc > 0.8",
            ...                 order_by=["metrics.auc DESC"])  # doctest: +SKIP
        """
        return self.search(
            project,
            experiments=experiments,
            filter=filter,
            order_by=order_by,
            max_results=max_results,
            offset=offset,
        ).runs

    def search(
        self,
        project: str,
        *,
        experiments: Sequence[str] | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        offset: int = 0,
    ) -> RunPage:
        """One page of runs matching a filter, with ``next_offset`` (``None`` on the last page)
        and ``warnings``: one per metric, parameter or tag named in the filter or the order that
        no run of the project has (such a filter matches nothing), naming the keys that exist.

        Raises:
            BadRequestError: The filter or the order is longer than the limits.
            InvalidInputError: The filter cannot be parsed, or a number is out of range.
        """
        check_max_results(max_results)
        if not 0 <= offset <= INT64_MAX:
            raise InvalidInputError(f"offset {offset} is out of range.", hint="Use 0 or more.")
        with self._ctx.db.read() as conn:
            project_id = self._project_id(conn, project, "experiments.read")
            parsed, keys, query = _search_query(
                filter, tuple(order_by or ()), tuple(experiments or ()), conn.dialect.name
            )
            ids = list(
                conn.execute(
                    query,
                    {"project_id": project_id, "limit": max_results + 1, "offset": offset},
                ).scalars()
            )
            more = len(ids) > max_results
            found = self._load_runs(conn, ids[:max_results])
            warnings = self._unknown_keys(conn, project, project_id, parsed, keys)
        return RunPage(
            runs=found,
            next_offset=offset + max_results if more else None,
            warnings=warnings,
        )

    @staticmethod
    def _unknown_keys(
        conn: Connection,
        project: str,
        project_id: str,
        clauses: Sequence[Clause],
        order: Sequence[OrderKey],
    ) -> list[str]:
        """A warning for each metric, parameter or tag key that no run of the project has."""
        named: dict[str, list[str]] = {}
        used: list[tuple[str, str]] = [(c.entity, c.key) for c in clauses]
        used += [(o.entity, o.key) for o in order]
        for entity, key in used:
            if entity != "attr" and key not in named.setdefault(entity, []):
                named[entity].append(key)
        warnings: list[str] = []
        tables = {"metric": latest_metrics, "param": t.params, "tag": t.tags}
        for entity, wanted in named.items():
            unknown = [k for k in wanted if (project_id, entity, k) not in _KNOWN_KEYS]
            if not unknown:  # the usual case: no statement to build
                continue
            table = tables[entity]
            in_project = table.c.run_id.in_(
                select(runs.c.id).where(runs.c.project_id == project_id)
            )
            scope = project_scope(project_id, conn.dialect.name, keyed=True)
            # One probe per key, stopping at its first run in the project: found from the key's
            # rows (the (key, value) index for metrics), never by walking the project's runs.
            missing = [
                key
                for key in unknown
                if not _key_in_project(conn, table, key, scope, project_id, entity)
            ]
            if not missing:
                continue
            existing = list(
                conn.execute(
                    select(table.c.key).distinct().where(in_project).order_by(table.c.key).limit(51)
                ).scalars()
            )
            word = _ENTITY_WORDS[entity]
            listed = ", ".join(existing[:50]) + (", ..." if len(existing) > 50 else "")
            for key in missing:
                near = difflib.get_close_matches(key, existing, n=1, cutoff=0.6)
                guess = f" Did you mean {near[0]!r}?" if near else ""
                known = (
                    f" The {word}s logged are: {listed}."
                    if existing
                    else (f" No run of the project has any {word} yet.")
                )
                warnings.append(
                    f"No run of project {project!r} has the {word} {key!r}: a filter on it "
                    f"matches no run and ordering by it changes nothing.{guess}{known}"
                )
        return warnings

    # Internals ------------------------------------------------------------------------------
    def _project_id(self, conn: Connection, project: str, need: str) -> str:
        # A DB-API statement: every search starts here, and SQLAlchemy's work for it cost more
        # than the lookup (the index on lower(name)).
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        try:
            cursor.execute(
                f"SELECT id, name FROM projects WHERE lower(name) = {mark}", (name_key(project),)
            )
            found = cursor.fetchone()
        finally:
            cursor.close()
        if found is None:  # NotFoundError with a did-you-mean hint (or, if made since, its id)
            return self._projects.get(project, need).id
        self._projects.access.require(found[0], found[1], need)
        return str(found[0])

    def _head(self, conn: Connection, run_id: str, need: str | None) -> Any:
        """The run's id, status and project; the caller needing ``need`` on its project (None:
        civicml's own housekeeping, which acts for no caller)."""
        row = conn.execute(
            select(runs.c.id, runs.c.status, runs.c.project_id, projects.c.name.label("project"))
            .join(projects, projects.c.id == runs.c.project_id)
            .where(runs.c.id == run_id)
        ).first()
        if row is None:
            raise _run_not_found(run_id)
        if need is not None:
            self._projects.access.require(
                row.project_id, row.project, need, hidden=lambda: _run_not_found(run_id)
            )
        return row

    def _writable_runs(
        self, rows: list[Any]
    ) -> tuple[dict[str, str], dict[str, PermissionDeniedError]]:
        """Status by run id of the ``(id, status, project id, project)`` rows whose project the
        caller may log to, and the refusal of those in a project it sees but may not log to;
        runs of projects it may not see are in neither, so they answer "does not exist"."""
        access = self._projects.access
        if "*" in self._ctx.principal.projects and access.may("experiments.write"):
            return {r[0]: r[1] for r in rows}, {}  # the hot path: no check per run
        status: dict[str, str] = {}
        refused: dict[str, PermissionDeniedError] = {}
        for run_id, state, project_id, project in rows:
            try:
                access.require(project_id, project, "experiments.write")
            except PermissionDeniedError as err:
                refused[run_id] = err
            except NotFoundError:
                continue
            else:
                status[run_id] = state
        return status, refused

    def check_may_log(self, run_id: str) -> None:
        """Refuse unless the caller may log to the run (before a batch joins a group commit
        that runs as the server).

        Raises:
            NotFoundError: No such run, or one of a project the caller may not see.
            PermissionDeniedError: The caller sees the project but lacks ``experiments.write``.
        """
        if "*" in self._ctx.principal.projects and self._projects.access.may("experiments.write"):
            return  # the hot path: no database
        with self._ctx.db.read() as conn:
            self._head(conn, run_id, "experiments.write")

    def _running(self, conn: Connection, run_id: str, verb: str) -> Any:
        head = self._head(conn, run_id, "experiments.write")
        if head.status != RunStatus.RUNNING.value:
            raise not_running(run_id, head.status, verb)
        return head

    @staticmethod
    def _load_runs(conn: Connection, ids: list[str]) -> list[Run]:
        """The runs with these ids, in this order (ids that do not exist are left out)."""
        if not ids:
            return []
        by_id: dict[str, tuple[Any, ...]] = {}
        run_params: dict[str, dict[str, str]] = {i: {} for i in ids}
        run_tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        run_metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        # Every row comes from the DB-API cursor, in plain tuples: a page of runs is thousands
        # of rows, and SQLAlchemy's work per statement and per row (compiling the expanded IN,
        # a type conversion per timestamp) was most of the cost of a search (and of ending a
        # run) once the database had found the runs.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        try:
            for n in range(0, len(ids), _LOAD_CHUNK):
                chunk = ids[n : n + _LOAD_CHUNK]
                marks = ", ".join([mark] * len(chunk))
                cursor.execute(_RUNS_BY_ID.format(marks=marks), chunk)
                for row in cursor.fetchall():
                    by_id[row[0]] = row
                for table, into in (("params", run_params), ("tags", run_tags)):
                    cursor.execute(
                        f"SELECT run_id, key, value FROM {table} WHERE run_id IN ({marks})", chunk
                    )
                    for run_id, key, value in cursor.fetchall():
                        into[run_id][key] = value
                cursor.execute(
                    "SELECT run_id, key, value, is_nan FROM latest_metrics "
                    f"WHERE run_id IN ({marks})",
                    chunk,
                )
                for run_id, key, value, is_nan in cursor.fetchall():
                    run_metrics[run_id][key] = math.nan if is_nan else value
        finally:
            cursor.close()
        return [
            Run(  # validating costs less than model_construct here
                id=i,
                project=head[7],
                experiment=head[6],
                name=head[1],
                status=RunStatus(head[2]),
                start_time=_utc(head[3]),
                end_time=None if head[4] is None else _utc(head[4]),
                created_by=head[5],
                params=run_params[i],
                tags=run_tags[i],
                metrics=run_metrics[i],
            )
            for i in ids
            if (head := by_id.get(i)) is not None
        ]


def _ended_in_round(
    run_id: str,
    run: NewRun,
    user: str,
    status: str,
    now: datetime,
    logged: dict[str, dict[str, str]],
    values: dict[str, float],
) -> Run:
    """A run created in this group commit (``run``: as :meth:`TrackingService._insert_run`
    wrote it for ``user``) as it is stored once the commit has ended it: ``logged`` holds its
    parameters, ``values`` the latest value of each metric it logged in the round (its
    first)."""
    return Run(
        id=run_id,
        project=run.project,
        experiment=run.experiment,
        name=run.name,
        status=RunStatus(status),
        start_time=(run.start_time or now).astimezone(UTC),
        end_time=now.astimezone(UTC),
        created_by=user,
        params=logged.get(run_id, run.params),
        tags=run.tags,
        metrics=values,
    )


@functools.lru_cache(maxsize=64)
def _stored(count: int) -> MetricBatchResult:
    """The result of a batch that stored ``count`` values (frozen, so one is shared: a round
    answers one per batch, four for a short run)."""
    return MetricBatchResult(stored=count)


def _utc(value: Any) -> datetime:
    """A :class:`~civicml.store.schema.UTCDateTime` column's value as read by a DB-API cursor,
    as SQLAlchemy would answer it: SQLite's text of the naive UTC time, PostgreSQL's aware
    datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def pending_run(run_id: str, spec: NewRun, user: str) -> Run:
    """The run that ``spec`` (its project and experiment named as stored) starts for ``user``,
    as :meth:`TrackingService.create_run` answers it."""
    return Run(
        id=run_id,
        project=spec.project,
        experiment=spec.experiment,
        name=spec.name or f"run-{run_id[-8:]}",
        status=RunStatus.RUNNING,
        start_time=spec.start_time or datetime.now(UTC),
        created_by=user,
        params=dict(spec.params),
        tags=dict(spec.tags),
    )


#: (project id, entity, key) of metric and parameter keys known to be logged in a project: they
#: stay (runs, parameters and metrics are never deleted; tags can be, so they are not kept).
_KNOWN_KEYS: set[tuple[str, str, str]] = set()


def _key_in_project(
    conn: Connection, table: Any, key: str, scope: Any, project_id: str, entity: str
) -> bool:
    found = bool(
        conn.execute(
            select(exists().where(table.c.key == key, table.c.run_id == runs.c.id, scope))
        ).scalar()
    )
    if found and entity != "tag":
        if len(_KNOWN_KEYS) > 100_000:
            _KNOWN_KEYS.clear()
        _KNOWN_KEYS.add((project_id, entity, key))
    return found


@functools.lru_cache(maxsize=256)
def _search_query(
    filter: str | None, order_by: tuple[str, ...], experiments: tuple[str, ...], dialect: str
) -> tuple[list[Clause], list[OrderKey], Any]:
    """The parsed filter and order and the query of run ids for them, built once per distinct
    search (the project, the page size and the offset are bound when it runs): building the
    statement cost more than running it.

    Raises:
        BadRequestError: The filter or the order is longer than the limits.
        InvalidInputError: The filter cannot be parsed, or a number is out of range.
    """
    parsed = parse_filter(filter)
    keys = parse_order(list(order_by))
    keyed = any(c.entity != "attr" for c in parsed)
    scope = project_scope(bindparam("project_id"), dialect, keyed=keyed)
    query = (
        select(runs.c.id)
        .select_from(runs.join(t.experiments, t.experiments.c.id == runs.c.experiment_id))
        .where(scope, *compile_filter(parsed))
    )
    if experiments:
        wanted = [name_key(e) for e in experiments]
        query = query.where(func.lower(t.experiments.c.name).in_(wanted))
    query = apply_order(query, keys).limit(bindparam("limit")).offset(bindparam("offset"))
    return parsed, keys, query


def clean_params(values: Mapping[str, object]) -> dict[str, str]:
    """Parameters as stored (text), checked: names of 1-250 characters, values within
    MAX_PARAM_LENGTH.

    Raises:
        InvalidInputError: A name or a value is out of bounds.
    """
    return _clean(values, "Parameter", MAX_PARAM_LENGTH)


def clean_tags(values: Mapping[str, object]) -> dict[str, str]:
    """Tags as stored (text), checked as :func:`clean_params` (values within MAX_TAG_LENGTH)."""
    return _clean(values, "Tag", MAX_TAG_LENGTH)


def _clean(values: Mapping[str, object], kind: str, limit: int) -> dict[str, str]:
    # A dict first (every run's parameters and tags pass here): isinstance against the
    # Mapping ABC costs about a microsecond.
    if type(values) is not dict and not isinstance(values, Mapping):
        raise InvalidInputError(f"{kind}s must be a mapping of names to values.")
    clean: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key or len(key) > 250:
            raise InvalidInputError(
                f"{kind} name {key!r} is not valid.", hint="Use 1-250 characters."
            )
        text = value if isinstance(value, str) else str(value)
        if len(text) > limit:
            raise InvalidInputError(
                f"{kind} {key!r} is {len(text)} characters long; the limit is {limit}.",
                hint="Log long values as an artifact.",
            )
        clean[key] = text
    return clean


def check_max_results(max_results: int) -> None:
    """Refuse a search size outside 1 to MAX_SEARCH_RESULTS (embedded and remote alike)."""
    if not 1 <= max_results <= MAX_SEARCH_RESULTS:
        raise InvalidInputError(
            f"max_results {max_results} is out of range.",
            hint=f"Use 1 to {MAX_SEARCH_RESULTS}.",
        )


def batch_digest(
    values: Sequence[MetricValue | MetricPoint],
    params: Mapping[str, object] | None = None,
    end: str | None = None,
) -> str:
    """SHA-256 of a batch's canonical body: every value's key, number, step and timestamp,
    then its parameters and the status that ends the run, when it has them.

    Column by column (the keys' ``repr``, then the numbers as little-endian 64-bit arrays),
    which costs a few times less than formatting each value; the same values always give the
    same digest, on any machine.
    """
    numbers = array("d", [v.value for v in values])
    steps = array("q", [v.step for v in values])
    stamps = array("q", [-1 if v.timestamp is None else v.timestamp for v in values])
    digest = hashlib.sha256(repr([v.key for v in values]).encode("utf-8", "surrogatepass"))
    for column in (numbers, steps, stamps):
        if sys.byteorder == "big":
            column.byteswap()
        digest.update(column.tobytes())
    if params:  # only then: the digest of a batch of values alone is as it always was
        digest.update(repr(sorted((k, str(v)) for k, v in params.items())).encode())
    if end is not None:
        digest.update(f"end:{end}".encode())
    return digest.hexdigest()


def _logged_params(cursor: Any, mark: str, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """The parameters already logged to each of ``run_ids``."""
    logged: dict[str, dict[str, str]] = {}
    wanted = list(dict.fromkeys(run_ids))
    if wanted:
        marks = ", ".join([mark] * len(wanted))
        cursor.execute(f"SELECT run_id, key, value FROM params WHERE run_id IN ({marks})", wanted)
        for run_id, key, value in cursor.fetchall():
            logged.setdefault(run_id, {})[key] = value
    return logged


def check_run_name(name: str | None) -> None:
    """Refuse a run name that is empty or longer than 256 characters (None: generated)."""
    if name is not None and (not name or len(name) > 256):
        raise InvalidInputError("Run name must be 1-256 characters.")


def new_params(
    run_id: str, clean: dict[str, str], logged: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The parameters of ``clean`` not logged yet; a different value for a logged one is a
    conflict (parameters never change; the same value again is a harmless retry)."""
    before = logged.get(run_id, {})
    for key, value in clean.items():
        if key in before and before[key] != value:
            raise param_conflict(run_id, key, before[key], value)
    return {k: v for k, v in clean.items() if k not in before}


def param_conflict(run_id: str, key: str, old: str, new: str) -> ConflictError:
    return ConflictError(
        f"Parameter {key!r} of run {run_id} is already {old!r}; it cannot become {new!r}.",
        hint="Parameters are immutable: start a new run to try another value, or record it "
        "as a tag.",
    )


def _end_status(value: str) -> str:
    """The status a run may end with, checked (finished, failed or killed)."""
    try:
        target = RunStatus(value)
    except ValueError as err:
        raise InvalidInputError(
            f"Run status {value!r} is not valid.", hint="Use finished, failed or killed."
        ) from err
    if target is RunStatus.RUNNING:
        raise InvalidInputError(
            "A run cannot be ended as 'running'.", hint="Use finished, failed or killed."
        )
    return target.value


def _batch_conflict(run_id: str, batch_id: str) -> ConflictError:
    return ConflictError(
        f"Batch {batch_id!r} of run {run_id} was stored before with other values; "
        "nothing was stored now.",
        hint="A batch id names one body: send a retry with the same values, "
        "and new values with a new batch id.",
    )


def _parse_cursor(text: str) -> tuple[int, int, int]:
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidInputError(
            f"{text[:80]!r} is not a metric history cursor.",
            hint="Pass the next_cursor of the previous page as it was given.",
        )
    step, stamp, row = (int(g) for g in match.groups())
    if not all(INT64_MIN <= n <= INT64_MAX for n in (step, stamp, row)):
        raise InvalidInputError(
            f"{text[:80]!r} is not a metric history cursor.",
            hint="Pass the next_cursor of the previous page as it was given.",
        )
    return step, stamp, row


class _Missing(Exception):
    """The project or experiment of a new run does not exist yet (the transaction is undone)."""


def _run_not_found(run_id: str) -> NotFoundError:
    return NotFoundError(
        f"Run {run_id!r} does not exist.",
        hint="Run ids are 32 hexadecimal characters; list runs with 'civicml runs list <project>'.",
    )


def not_running(run_id: str, status: str, verb: str) -> ConflictError:
    return ConflictError(
        f"Cannot {verb} run {run_id}: it is {status}, not running.",
        hint="Start a new run; a run that ended stays as it ended.",
    )


@functools.cache
def _metric_sql(paramstyle: str) -> tuple[str, str]:
    """The metric INSERT and the latest-value upsert (keeps the newest by step, then time), in
    the driver's parameter style. The SQL is the same on SQLite and PostgreSQL."""
    p = "?" if paramstyle == "qmark" else "%s"
    columns = "run_id, key, value, is_nan, step, timestamp"
    values = f"({p}, {p}, {p}, {p}, {p}, {p})"
    insert_sql = f"INSERT INTO metrics ({columns}) VALUES {values}"
    upsert_sql = (
        f"INSERT INTO latest_metrics ({columns}) VALUES {values} "
        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
        "is_nan = excluded.is_nan, step = excluded.step, timestamp = excluded.timestamp "
        "WHERE excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step "
        "AND excluded.timestamp >= latest_metrics.timestamp)"
    )
    return insert_sql, upsert_sql


def _experiment(row: Any, project: str) -> Experiment:
    return Experiment(
        id=row.id,
        project=project,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
    )
