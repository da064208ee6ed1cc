"""Run pipelines: topological order, independent steps in parallel, caching and retry.

Every state change of an execution or a step is one write transaction; each executed step is a
tracking run in the experiment ``pipeline.<name>`` with lineage edges from the runs of the steps
it read, and each execution's start and end are audit events.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import importlib.metadata
import os
import platform
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from inspect import BoundArguments
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.compute import Executor, executor_for, worker_info
from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError
from civicml.core.identity import Principal
from civicml.core.ids import new_id
from civicml.core.process import hostname, process_alive, process_identity
from civicml.costs.budgets import check_budget
from civicml.costs.meter import METER, Usage
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.pipelines._tables import pipeline_executions, pipelines, step_executions
from civicml.pipelines.dsl import _CURRENT as _CURRENT_STEP
from civicml.pipelines.dsl import (
    BoundPipeline,
    Graph,
    Node,
    OutputRef,
    ParamRef,
    Pipeline,
    Step,
    StepContext,
    StepWaiting,
    canonical_json,
)
from civicml.pipelines.schemas import Execution, ExecutionStatus, StepExecution, StepStatus
from civicml.pipelines.values import Encoded, StoredValue, encode, load_value, persist
from civicml.store.artifacts import ArtifactStore
from civicml.store.context import Context, shippable_settings, worker_context
from civicml.store.db import UnitOfWork
from civicml.tracking.reproducibility import environment_tags
from civicml.tracking.schemas import RunStatus
from civicml.tracking.service import TrackingService

__all__ = ["PipelineService", "cache_key_digest", "environment"]

_ENV_PACKAGES = ("civicml", "numpy", "pandas", "scikit-learn")
#: Whether a step's records (its run's start and end, its row, lineage and usage) wait for the
#: disk when committed. They don't: the database keeps commits in order, so a power cut undoes
#: only the newest of them, which makes ``retry`` run those steps again; a process killed loses
#: nothing. What a record points to (a stored output) is durable before the record is written,
#: and the execution's start and end are durable commits: when ``run`` returns, every record of
#: the execution is. One fsync less per step start and end, in a pipeline's critical path.
_STEP_RECORDS_DURABLE = False
_LONG_PARAM = 500  # longer parameter values are logged to the step's run as their SHA-256
# Pipelines run in this process, by (name, version): what retry() re-runs when given no function.
_KNOWN: dict[tuple[str, str], Pipeline] = {}
_KNOWN_LOCK = threading.Lock()


@functools.cache
def environment() -> dict[str, str]:
    """What the cache key records of the environment: Python and library versions."""
    env = {"python": platform.python_version()}
    for package in _ENV_PACKAGES:
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = "absent"
    return env


def cache_key_digest(doc: Mapping[str, Any]) -> str:
    """The cache key: SHA-256 of the key document's canonical JSON."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


@dataclass(slots=True)
class _State:
    """What an execution knows as it runs: finished steps' outputs and runs."""

    outputs: dict[str, dict[str, StoredValue]] = field(default_factory=dict)
    runs: dict[str, str | None] = field(default_factory=dict)
    waiting_since: dict[str, datetime] = field(default_factory=dict)  # callback steps
    # Outputs of steps run here, handed to the steps after them before they are durable.
    memory: dict[str, dict[str, Encoded]] = field(default_factory=dict)


def _post_ready(events: queue.SimpleQueue[Any], name: str, ready: _Ready) -> None:
    events.put(("ready", name, ready))


def _post_done(events: queue.SimpleQueue[Any], name: str, future: Future[Any]) -> None:
    events.put(("done", name, future))


def _hand_over(
    ready: Callable[[_Ready], None], run_id: str, encoded: dict[str, Encoded], closed: bool
) -> None:
    ready(_Ready(encoded, run_id, closed))


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    outputs: dict[str, StoredValue]
    run_id: str | None
    waiting: bool = False  # a callback step paused (StepWaiting)
    closed: bool = False  # a gate step returned False


@dataclass(frozen=True, slots=True)
class _Body:
    """What running one step's function needs, as plain data: it may run on a Ray worker."""

    settings: dict[str, Any] | None  # None: run here, with the coordinator's context
    principal: Principal
    cwd: str
    project: str
    execution_id: str
    node: str
    step: Step
    inputs: dict[str, StoredValue]
    parameters: dict[str, Any]
    run_id: str
    waiting_since: datetime | None


@dataclass(frozen=True, slots=True)
class _BodyOutcome:
    status: str  # succeeded, waiting, failed
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: bool = False
    error: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None  # what the step's work used, measured where it ran (costs)


def _run_body(body: _Body, ctx: Context | None = None) -> _BodyOutcome:
    """Load the step's inputs from the artifact store, call its function with
    :func:`~civicml.pipelines.current` set, store its outputs durably: on a worker, which
    reaches the same stores from the shipped settings as the same principal (or here, with
    ``ctx`` given)."""
    where = worker_info()
    if ctx is None:
        if body.settings is None:
            raise InvalidInputError("A remote pipeline step was shipped without settings.")
        ctx = worker_context(body.settings, body.principal)
    here = _in(body.cwd) if body.settings is not None else contextlib.nullcontext()
    measurement = METER.start()  # the step's usage: recorded with the end of its run (costs)
    with here:
        return _persisted(ctx, _call(body, ctx, {}), where, measurement, None)


@dataclass(frozen=True, slots=True)
class _Called:
    """What calling a step's function gave: its outputs encoded (not stored yet)."""

    status: str  # succeeded, waiting, failed
    encoded: dict[str, Encoded] = field(default_factory=dict)
    closed: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Ready:
    """A step's outputs, hashed and in memory, before they are durable: what the steps after it
    need to start (their cache keys and inputs)."""

    encoded: dict[str, Encoded]
    run_id: str
    closed: bool


def _load_inputs(
    artifacts: ArtifactStore, memory: Mapping[str, Encoded], stored: Mapping[str, StoredValue]
) -> dict[str, Any]:
    """A step's inputs by argument: a fresh copy of each value handed over in memory by the
    steps before it in this process (``memory``), the others read back from the store."""
    arguments = {arg: encoded.value() for arg, encoded in memory.items()}
    arguments.update({arg: load_value(artifacts, ref) for arg, ref in stored.items()})
    return arguments


def _call(
    body: _Body,
    ctx: Context,
    memory: Mapping[str, Encoded],
    loading: Future[dict[str, Any]] | None = None,
) -> _Called:
    """Call the step's function on its inputs — ``loading`` them meanwhile elsewhere, or loaded
    here (:func:`_load_inputs`) — and encode what it returned."""
    step_ = body.step
    try:
        if loading is not None:
            arguments = loading.result()
        else:
            arguments = _load_inputs(ctx.artifacts, memory, body.inputs)
        arguments.update(body.parameters)
        ordered = {p: arguments[p] for p in step_.signature.parameters if p in arguments}
        bound = BoundArguments(step_.signature, ordered)
        token = _CURRENT_STEP.set(
            StepContext(
                ctx, body.project, body.execution_id, body.node, body.run_id, body.waiting_since
            )
        )
        try:
            result = step_.fn(*bound.args, **bound.kwargs)
        finally:
            _CURRENT_STEP.reset(token)
        encoded = _encode_outputs(step_, result)
    except StepWaiting as waiting:
        return _Called("waiting", error=str(waiting) or None)
    except Exception as err:
        return _Called("failed", error=f"{type(err).__name__}: {err}")
    return _Called("succeeded", encoded, closed=step_.gate and result is False)


def _persisted(
    ctx: Context,
    called: _Called,
    where: dict[str, Any],
    measurement: Any,
    ready: Callable[[dict[str, Encoded], bool], None] | None,
) -> _BodyOutcome:
    """Store a called step's outputs durably and end its usage measurement.

    Outputs that hold a DataFrame — large, slow to compress and write — are first handed to
    ``ready``, so the steps after this one start on them meanwhile. Small JSON values are
    stored first, and the steps after it start only once it is recorded ``succeeded``: then
    a process killed in a later step finds this one done, and ``retry`` reuses it.
    """
    if called.status != "succeeded":
        usage = METER.end(measurement)
        return _BodyOutcome(called.status, error=called.error, where=where, usage=usage)
    if ready is not None and any(v.kind == "arrow" for v in called.encoded.values()):
        ready(called.encoded, called.closed)
    try:
        outputs = {k: persist(ctx.artifacts, v) for k, v in called.encoded.items()}
    except Exception as err:
        usage = METER.end(measurement)
        error = f"{type(err).__name__}: {err}"
        return _BodyOutcome("failed", error=error, where=where, usage=usage)
    return _BodyOutcome(
        "succeeded",
        {k: v.to_dict() for k, v in outputs.items()},
        closed=called.closed,
        where=where,
        usage=METER.end(measurement),
    )


@contextlib.contextmanager
def _in(cwd: str) -> Any:
    """Run in the coordinator's working directory when this machine has it (a local cluster),
    so a step's relative paths mean what they mean to the caller."""
    before = os.getcwd()
    moved = os.path.isdir(cwd) and cwd != before
    if moved:
        os.chdir(cwd)
    try:
        yield
    finally:
        if moved:
            os.chdir(before)


def _encode_outputs(step_: Step, result: Any) -> dict[str, Encoded]:
    names = step_.outputs
    if len(names) == 1:
        parts: tuple[Any, ...] = (result,)
    elif isinstance(result, tuple) and len(result) == len(names):
        parts = result
    else:
        raise InvalidInputError(
            f"Step {step_.name!r} declares outputs {names!r} but returned "
            f"{type(result).__qualname__}"
            + (f" of {len(result)}" if isinstance(result, tuple) else "")
            + ".",
            hint=f"Return a tuple of {len(names)} values.",
        )
    return {
        name: encode(value, step_.name, name, compress=step_.compress)
        for name, value in zip(names, parts, strict=True)
    }


class PipelineService:
    """Runs pipelines and reads their executions.

    Args:
        ctx: The stores and the caller.
        max_workers: How many independent steps run at once (coordinating threads in this
            process; with ``compute = "ray"`` each hands its step's function to a Ray task).
        executor: Where the steps' functions run (default: the ``compute`` setting's).
    """

    def __init__(
        self, ctx: Context, *, max_workers: int = 4, executor: Executor | None = None
    ) -> None:
        if max_workers < 1:
            raise InvalidInputError(f"max_workers must be at least 1, not {max_workers}.")
        self._ctx = ctx
        self._max_workers = max_workers
        self._given_executor = executor
        self._executor: Executor | None = None
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)
        self._tracking = TrackingService(ctx)

    def _ships(self) -> bool:
        return self._executor is not None and self._executor.remote

    def _open_executor(self) -> None:
        """The executor of this run: the given one, else the ``compute`` setting's (Ray is
        connected here, before any state is written, so a missing extra changes nothing)."""
        if self._given_executor is not None:
            self._executor = self._given_executor
        elif self._ctx.settings.compute != "local":
            self._executor = executor_for(self._ctx.settings.compute)
        else:
            self._executor = None  # steps run in the coordinating threads

    # Running --------------------------------------------------------------------------------
    def run(
        self,
        pipeline_fn: Pipeline | BoundPipeline,
        *,
        project: str,
        params: Mapping[str, Any] | None = None,
    ) -> Execution:
        """Execute a pipeline in ``project`` and return the finished execution.

        A step whose cache key matches a successful earlier step execution in the project, whose
        outputs are still in the store, is not run again (``cached``). A step that raises fails,
        the steps after it are ``skipped`` and the execution ``failed``; :meth:`retry` resumes it.

        Raises:
            InvalidInputError: Not a ``@pipeline`` function, or unknown or non-JSON parameters.
            PermissionDeniedError: The caller lacks ``experiments.write`` on the project.
        """
        if isinstance(pipeline_fn, BoundPipeline):
            pipe, given = pipeline_fn.pipeline, dict(pipeline_fn.params)
        elif isinstance(pipeline_fn, Pipeline):
            pipe, given = pipeline_fn, {}
        else:
            raise InvalidInputError(
                f"{pipeline_fn!r} is not a pipeline.",
                hint="Decorate the function with @cm.pipeline.",
            )
        values = pipe.resolve({**given, **(params or {})})
        graph = pipe.graph()
        version = graph.version()
        proj = self._projects.get(project, "experiments.write")
        check_budget(self._ctx, proj.name)  # a spent hard-stop budget refuses it (costs)
        self._open_executor()
        execution_id = new_id()
        now = self._ctx.clock.now()
        host, pid, pid_start = process_identity(True)
        for attempt in range(2):
            try:
                with self._ctx.db.write() as uow:
                    conn = uow.conn
                    pipeline_id = conn.execute(
                        select(pipelines.c.id).where(
                            pipelines.c.project_id == proj.id,
                            pipelines.c.name == pipe.name,
                            pipelines.c.version == version,
                        )
                    ).scalar()
                    if pipeline_id is None:
                        pipeline_id = new_id()
                        conn.execute(
                            insert(pipelines).values(
                                id=pipeline_id,
                                project_id=proj.id,
                                name=pipe.name,
                                version=version,
                                graph=graph.describe(),
                                created_at=now,
                                created_by=self._ctx.principal.user,
                            )
                        )
                    conn.execute(
                        insert(pipeline_executions).values(
                            id=execution_id,
                            project_id=proj.id,
                            pipeline_id=pipeline_id,
                            parameters=values,
                            status=ExecutionStatus.RUNNING.value,
                            created_at=now,
                            started_at=now,
                            ended_at=None,
                            created_by=self._ctx.principal.user,
                            host=host,
                            pid=pid,
                            pid_start=pid_start,
                        )
                    )
                    conn.execute(
                        insert(step_executions),
                        [
                            {
                                "execution_id": execution_id,
                                "step": name,
                                "position": i,
                                "status": "pending",
                            }
                            for i, name in enumerate(graph.nodes)
                        ],
                    )
                    self._audit.record(
                        uow,
                        "pipeline.execution.started",
                        "pipeline_execution",
                        execution_id,
                        project=proj.name,
                        after={"pipeline": pipe.name, "version": version, "parameters": values},
                    )
                break
            except IntegrityError:
                # Another process stored this pipeline version at the same moment (its unique
                # index): nothing of this transaction was kept; once more finds its row.
                if attempt:
                    raise
        with _KNOWN_LOCK:
            _KNOWN[(pipe.name, version)] = pipe
        self._execute(proj, graph, execution_id, values, _State())
        return self._load(execution_id)

    def retry(self, execution_id: str, pipeline_fn: Pipeline | None = None) -> Execution:
        """Resume a failed or cancelled execution: re-run its failed, skipped and cancelled
        steps and everything downstream of them; reuse the outputs of the steps that succeeded.
        A ``waiting`` execution is resumed (:meth:`resume`).

        ``pipeline_fn`` is needed when the pipeline was not run in this process; its graph must
        be the execution's version.

        Raises:
            ConflictError: The execution is running or succeeded, or the pipeline changed.
        """
        current = self._load(execution_id, "experiments.write")
        if current.status is ExecutionStatus.WAITING:  # ml.pipelines.retry resumes it
            return self._continue(current, pipeline_fn, "resumed")
        if current.status is ExecutionStatus.RUNNING:
            current = self._abandon(current)  # raises unless its process is gone
        if current.status not in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
            raise ConflictError(
                f"Pipeline execution {execution_id} is {current.status.value}; only failed or "
                "cancelled executions can be retried (and waiting ones resumed).",
                hint="Run the pipeline again: unchanged steps come from the cache.",
            )
        return self._continue(current, pipeline_fn, "retried")

    def _abandon(self, current: Execution) -> Execution:
        """Mark ``failed`` a ``running`` execution whose process is gone (killed, or its machine
        restarted), so that :meth:`retry` can resume it; its unfinished steps fail with why.

        Raises:
            ConflictError: Its process is alive, or runs on another host (civicml cannot tell).
        """
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(
                    pipeline_executions.c.host,
                    pipeline_executions.c.pid,
                    pipeline_executions.c.pid_start,
                ).where(pipeline_executions.c.id == current.id)
            ).one()
        if row.host != hostname() or row.pid is None:
            raise ConflictError(
                f"Pipeline execution {current.id} is running on {row.host or 'another host'}; "
                "from here civicml cannot tell whether its process is still alive.",
                hint="Cancel it (civicml pipelines cancel ID) once its process is gone, then "
                "retry it.",
            )
        if process_alive(row.pid, row.pid_start):
            raise ConflictError(
                f"Pipeline execution {current.id} is still running (process {row.pid}).",
                hint="Wait for it to end, or cancel it and retry it then.",
            )
        reason = f"abandoned: process {row.pid} on {row.host} is gone"
        unfinished = sorted(
            s.step
            for s in current.steps
            if s.status in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING)
        )
        with self._ctx.db.write() as uow:
            changed = uow.conn.execute(
                update(pipeline_executions)
                .where(
                    pipeline_executions.c.id == current.id,
                    pipeline_executions.c.status == ExecutionStatus.RUNNING.value,
                )
                .values(status=ExecutionStatus.FAILED.value, ended_at=self._ctx.clock.now())
            ).rowcount
            if changed:
                if unfinished:
                    uow.conn.execute(
                        update(step_executions)
                        .where(
                            step_executions.c.execution_id == current.id,
                            step_executions.c.step.in_(unfinished),
                        )
                        .values(status=StepStatus.FAILED.value, error=reason)
                    )
                self._audit.record(
                    uow,
                    "pipeline.execution.abandoned",
                    "pipeline_execution",
                    current.id,
                    project=current.project,
                    before={"status": "running"},
                    after={"status": "failed", "steps": unfinished, "reason": reason},
                )
        return self._load(current.id)

    def resume(self, execution_id: str, pipeline_fn: Pipeline | None = None) -> Execution:
        """Continue a ``waiting`` execution: run its waiting callback steps again (e.g.
        ``wait_for_approval`` checks the model version's approval status anew) and, when they
        succeed, the steps after them. A step that still waits leaves the execution ``waiting``.

        ``pipeline_fn`` is needed when the pipeline was not run in this process.

        Raises:
            ConflictError: The execution is not waiting, or the pipeline changed.
        """
        current = self._load(execution_id, "experiments.write")
        if current.status is not ExecutionStatus.WAITING:
            raise ConflictError(
                f"Pipeline execution {execution_id} is {current.status.value}; only waiting "
                "executions can be resumed.",
                hint="Retry a failed execution with retry(execution_id)."
                if current.status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)
                else "Nothing waits in it.",
            )
        return self._continue(current, pipeline_fn, "resumed")

    def _continue(self, current: Execution, pipeline_fn: Pipeline | None, how: str) -> Execution:
        execution_id = current.id
        pipe = pipeline_fn
        if pipe is None:
            with _KNOWN_LOCK:
                pipe = _KNOWN.get((current.pipeline, current.version))
        if pipe is None:
            raise InvalidInputError(
                f"Pipeline {current.pipeline!r} (version {current.version[:12]}) has not been "
                "run in this process, so its steps' code is not at hand.",
                hint="Pass the pipeline function: retry(execution_id, my_pipeline).",
            )
        graph = pipe.graph()
        if graph.version() != current.version:
            raise ConflictError(
                f"Pipeline {current.pipeline!r} has changed since execution {execution_id} "
                f"(version {current.version[:12]}, now {graph.version()[:12]}).",
                hint="Run the changed pipeline anew: unchanged steps come from the cache.",
            )
        state = _State()
        for item in current.steps:
            if item.status is StepStatus.WAITING and item.started_at is not None:
                state.waiting_since[item.step] = item.started_at
            if item.status in (StepStatus.SUCCEEDED, StepStatus.CACHED):
                stored = {k: StoredValue.from_dict(v) for k, v in item.outputs.items()}
                if all(self._ctx.artifacts.exists(s.digest) for s in stored.values()):
                    state.outputs[item.step] = stored
                    state.runs[item.step] = item.run_id
        again = graph.downstream(set(graph.nodes) - set(state.outputs))
        for name in again:
            state.outputs.pop(name, None)
            state.runs.pop(name, None)
        proj = self._projects.get(current.project, "experiments.write")
        self._open_executor()
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                update(pipeline_executions)
                .where(pipeline_executions.c.id == execution_id)
                .values(status="running", started_at=self._ctx.clock.now(), ended_at=None)
            )
            uow.conn.execute(
                update(step_executions)
                .where(
                    step_executions.c.execution_id == execution_id,
                    step_executions.c.step.in_(sorted(again)),
                )
                .values(
                    status="pending",
                    cache_key=None,
                    cache_key_doc=None,
                    outputs=None,
                    cached_from=None,
                    run_id=None,
                    started_at=None,
                    ended_at=None,
                    error=None,
                )
            )
            self._audit.record(
                uow,
                f"pipeline.execution.{how}",
                "pipeline_execution",
                execution_id,
                project=proj.name,
                before={"status": current.status.value},
                after={"status": "running", "steps": sorted(again)},
            )
        self._execute(proj, graph, execution_id, current.parameters, state)
        return self._load(execution_id)

    def _execute(
        self, proj: Project, graph: Graph, execution_id: str, values: dict[str, Any], state: _State
    ) -> None:
        """Run the steps not done yet, each as soon as the steps it reads have their outputs.

        A step run in this process hands its outputs over as soon as they are hashed (a
        ``ready`` event): the steps after it start on the values in memory while it stores
        them; it is recorded ``succeeded`` — a cache hit for later executions — only once they
        are durable (its ``done`` event), and the execution ends only when every step has.
        """
        todo = [name for name in graph.nodes if name not in state.outputs]
        failed: set[str] = set()
        skipped: set[str] = set()
        submitted: set[str] = set()
        waiting: set[str] = set()
        available: set[str] = set(state.outputs)  # steps whose outputs the next ones can read
        consumers = {
            name: {other for other, node in graph.nodes.items() if name in node.upstream()}
            for name in graph.nodes
        }
        for name in list(state.outputs):  # gates closed in an earlier attempt stay closed
            if graph.nodes[name].step.gate and self._closed(state.outputs[name]):
                below = graph.downstream({name}) - {name}
                skipped |= below
                self._set_steps(execution_id, below, StepStatus.SKIPPED, _closed_note(name))
        events: queue.SimpleQueue[tuple[str, str, Any]] = queue.SimpleQueue()

        def closed_gate(name: str) -> None:
            nonlocal skipped
            below = graph.downstream({name}) - {name} - skipped - submitted
            skipped |= below
            self._set_steps(execution_id, below, StepStatus.SKIPPED, _closed_note(name))

        try:
            with (
                ThreadPoolExecutor(self._max_workers, thread_name_prefix="civicml-step") as pool,
                ThreadPoolExecutor(self._max_workers, thread_name_prefix="civicml-load") as loader,
            ):
                futures: dict[Future[_Outcome], str] = {}
                cancelled = False
                while True:
                    startable = [
                        name
                        for name in todo
                        if name not in submitted
                        and name not in skipped
                        and graph.nodes[name].upstream() <= available
                    ]
                    # A cancel from elsewhere (CLI, REST) is honoured before any further step
                    # starts; the steps already running finish.
                    if startable and not cancelled:
                        cancelled = self._status(execution_id) == "cancelled"
                    for name in [] if cancelled else startable:
                        node = graph.nodes[name]
                        submitted.add(name)
                        inputs: dict[str, StoredValue] = {}
                        memory: dict[str, Encoded] = {}
                        for arg, ref in node.inputs.items():
                            if not isinstance(ref, OutputRef):
                                continue
                            held = state.memory.get(ref.node)
                            if held is not None:
                                memory[arg] = held[ref.output]
                            else:
                                inputs[arg] = state.outputs[ref.node][ref.output]
                        upstream_runs = [state.runs.get(n) for n in sorted(node.upstream())]
                        future = pool.submit(
                            self._step,
                            proj,
                            graph.name,
                            execution_id,
                            node,
                            inputs,
                            values,
                            [r for r in upstream_runs if r],
                            state.waiting_since.get(name),
                            memory,
                            functools.partial(_post_ready, events, name),
                            loader,
                        )
                        futures[future] = name
                        future.add_done_callback(functools.partial(_post_done, events, name))
                    for name in list(state.memory):  # every reader has its copy: let go
                        if consumers[name] <= submitted | skipped:
                            del state.memory[name]
                    if not futures:
                        break
                    kind, name, payload = events.get()
                    if kind == "ready":
                        ready: _Ready = payload
                        state.memory[name] = ready.encoded
                        state.runs[name] = ready.run_id
                        available.add(name)
                        if ready.closed:
                            closed_gate(name)
                        continue
                    future = payload
                    del futures[future]
                    outcome = future.result()
                    if outcome.waiting:
                        waiting.add(name)  # what depends on it stays pending
                        continue
                    if outcome.ok:
                        state.outputs[name] = outcome.outputs
                        state.runs[name] = outcome.run_id
                        if name not in available:  # a cache hit, or a step run elsewhere
                            available.add(name)
                            if outcome.closed:
                                closed_gate(name)
                        continue
                    # Failed — possibly after handing its outputs over (storing them failed):
                    # the steps that already started on them finish; nothing more starts.
                    failed.add(name)
                    available.discard(name)
                    state.memory.pop(name, None)
                    below = graph.downstream({name}) - {name} - skipped - submitted
                    skipped |= below
                    self._set_steps(execution_id, below, StepStatus.SKIPPED, None)
        except BaseException:
            left = set(graph.nodes) - state.outputs.keys() - failed - skipped
            self._set_steps(execution_id, left, StepStatus.SKIPPED, "cancelled")
            self._finish(proj, execution_id, ExecutionStatus.CANCELLED, sorted(left))
            raise
        if cancelled:
            return  # cancel() ended the execution and skipped what had not run
        if failed:
            self._finish(proj, execution_id, ExecutionStatus.FAILED, sorted(failed))
        elif waiting:
            self._finish(proj, execution_id, ExecutionStatus.WAITING, sorted(waiting))
        else:
            self._finish(proj, execution_id, ExecutionStatus.SUCCEEDED, [])

    def _status(self, execution_id: str) -> str | None:
        with self._ctx.db.read() as conn:
            return conn.execute(
                select(pipeline_executions.c.status).where(pipeline_executions.c.id == execution_id)
            ).scalar()

    def _closed(self, outputs: dict[str, StoredValue]) -> bool:
        """Whether a gate step's output says ``False``."""
        value = outputs.get("output")
        return value is not None and load_value(self._ctx.artifacts, value) is False

    def _finish(
        self, proj: Project, execution_id: str, status: ExecutionStatus, steps: list[str]
    ) -> None:
        with self._ctx.db.write() as uow:
            changed = uow.conn.execute(
                update(pipeline_executions)
                .where(
                    pipeline_executions.c.id == execution_id,
                    pipeline_executions.c.status == ExecutionStatus.RUNNING.value,
                )
                .values(status=status.value, ended_at=self._ctx.clock.now())
            ).rowcount
            if not changed:
                return  # cancelled meanwhile: the cancel was recorded and stands
            self._audit.record(
                uow,
                f"pipeline.execution.{status.value}",
                "pipeline_execution",
                execution_id,
                project=proj.name,
                before={"status": "running"},
                after={"status": status.value, "steps": steps},
            )

    def _set_steps(
        self, execution_id: str, names: set[str], status: StepStatus, error: str | None
    ) -> None:
        if not names:
            return
        with self._ctx.db.write(durable=_STEP_RECORDS_DURABLE) as uow:
            uow.conn.execute(
                update(step_executions)
                .where(
                    step_executions.c.execution_id == execution_id,
                    step_executions.c.step.in_(sorted(names)),
                )
                .values(status=status.value, error=error)
            )

    def _update_step(self, execution_id: str, name: str, **values: Any) -> None:
        with self._ctx.db.write(durable=_STEP_RECORDS_DURABLE) as uow:
            self._write_step(uow.conn, execution_id, name, **values)

    @staticmethod
    def _write_step(conn: Connection, execution_id: str, name: str, **values: Any) -> None:
        conn.execute(
            update(step_executions)
            .where(step_executions.c.execution_id == execution_id, step_executions.c.step == name)
            .values(**values)
        )

    # One step -------------------------------------------------------------------------------
    def _step(
        self,
        proj: Project,
        pipeline_name: str,
        execution_id: str,
        node: Node,
        inputs: dict[str, StoredValue],
        values: dict[str, Any],
        upstream_runs: builtins.list[str],
        waiting_since: datetime | None = None,
        memory: dict[str, Encoded] | None = None,
        ready: Callable[[_Ready], None] | None = None,
        loader: ThreadPoolExecutor | None = None,
    ) -> _Outcome:
        try:
            return self._step_inner(
                proj,
                pipeline_name,
                execution_id,
                node,
                inputs,
                values,
                upstream_runs,
                waiting_since,
                memory or {},
                ready,
                loader,
            )
        except Exception as err:  # the store or the database failed, not the step's code
            self._update_step(
                execution_id,
                node.name,
                status="failed",
                ended_at=self._ctx.clock.now(),
                error=f"{type(err).__name__}: {err}",
            )
            return _Outcome(False, {}, None)

    def _step_inner(
        self,
        proj: Project,
        pipeline_name: str,
        execution_id: str,
        node: Node,
        inputs: dict[str, StoredValue],
        values: dict[str, Any],
        upstream_runs: builtins.list[str],
        waiting_since: datetime | None,
        memory: dict[str, Encoded],
        ready: Callable[[_Ready], None] | None,
        loader: ThreadPoolExecutor | None,
    ) -> _Outcome:
        parameters: dict[str, Any] = {}
        for arg, spec in node.inputs.items():
            if isinstance(spec, OutputRef):
                continue
            parameters[arg] = values[spec.name] if isinstance(spec, ParamRef) else spec
        # Each input's content hash, as the step that made it knows it: never hashed again.
        input_hashes = {arg: ref.sha256 for arg, ref in inputs.items()}
        input_hashes.update({arg: encoded.sha256 for arg, encoded in memory.items()})
        doc = {
            "step": node.step.name,
            "code": node.step.code,
            "parameters": parameters,
            "inputs": input_hashes,
            "outputs": list(node.step.outputs),
            "environment": environment(),
        }
        key = cache_key_digest(doc)
        if node.step.cache:
            hit = self._cached(proj.id, key, node.step.cache_expiry_s)
            if hit is not None:
                source, outputs, run_id = hit
                now = self._ctx.clock.now()
                self._update_step(
                    execution_id,
                    node.name,
                    status="cached",
                    cache_key=key,
                    cache_key_doc=doc,
                    outputs={k: v.to_dict() for k, v in outputs.items()},
                    cached_from=source,
                    run_id=run_id,
                    started_at=now,
                    ended_at=now,
                )
                closed = node.step.gate and self._closed(outputs)
                return _Outcome(True, outputs, run_id, closed=closed)
        started = self._ctx.clock.now()
        # Not a cache hit: its inputs are decoded (or read from the store) while its run is
        # created — mostly a commit's wait for the disk — unless the step runs on a worker.
        loading = None
        if loader is not None and (memory or inputs) and not self._ships():
            loading = loader.submit(_load_inputs, self._ctx.artifacts, memory, inputs)

        def running(uow: UnitOfWork, run_id: str) -> None:
            self._write_step(
                uow.conn,
                execution_id,
                node.name,
                status="running",
                cache_key=key,
                cache_key_doc=doc,
                run_id=run_id,
                started_at=started,
            )
            this = self._lineage.node(uow, "run", run_id, project_id=proj.id)
            for upstream in upstream_runs:
                source = self._lineage.node(uow, "run", upstream, project_id=proj.id)
                self._lineage.link(uow, source, this, "ContributedTo")

        run = self._tracking.create_run(
            proj.name,
            experiment=f"pipeline.{pipeline_name}",
            name=node.name,
            params=_run_params(key, parameters, input_hashes),
            tags={
                "civicml.pipeline": pipeline_name,
                "civicml.pipeline.execution": execution_id,
                "civicml.pipeline.step": node.name,
                "civicml.pipeline.code": node.step.code,
                "civicml.pipeline.cache_key": key,
                **environment_tags(),  # code and library versions (reproducibility)
            },
            also=running,  # the step's row and lineage, in the run's transaction
            durable=_STEP_RECORDS_DURABLE,
        )
        body = _Body(
            settings=shippable_settings(self._ctx.settings) if self._ships() else None,
            principal=self._ctx.principal,
            cwd=os.getcwd(),
            project=proj.name,
            execution_id=execution_id,
            node=node.name,
            step=node.step,
            inputs=inputs,
            parameters=parameters,
            run_id=run.id,
            waiting_since=waiting_since,
        )
        if self._executor is not None and self._ships():
            outcome = self._executor.submit(_run_body, body).result()
        else:
            outcome = self._run_here(body, memory, ready, loading)
        if outcome.where.get("executor") != "local":  # a local run records its process anyway
            self._tracking.set_tags(
                run.id, {f"civicml.compute.{k}": v for k, v in outcome.where.items()}
            )
        # The run's end, its usage and the step's row: one transaction.
        if outcome.status == "waiting":
            self._end(
                run.id,
                RunStatus.FINISHED,
                outcome,
                execution_id,
                node.name,
                status="waiting",
                started_at=waiting_since or started,  # when the wait began, kept
                error=outcome.error,
            )
            return _Outcome(False, {}, run.id, waiting=True)
        if outcome.status == "failed":
            self._end(
                run.id,
                RunStatus.FAILED,
                outcome,
                execution_id,
                node.name,
                status="failed",
                ended_at=self._ctx.clock.now(),
                error=outcome.error,
            )
            return _Outcome(False, {}, run.id)
        outputs = {k: StoredValue.from_dict(v) for k, v in outcome.outputs.items()}
        self._end(
            run.id,
            RunStatus.FINISHED,
            outcome,
            execution_id,
            node.name,
            status="succeeded",
            outputs=outcome.outputs,
            ended_at=self._ctx.clock.now(),
        )
        return _Outcome(True, outputs, run.id, closed=outcome.closed)

    def _run_here(
        self,
        body: _Body,
        memory: dict[str, Encoded],
        ready: Callable[[_Ready], None] | None,
        loading: Future[dict[str, Any]] | None = None,
    ) -> _BodyOutcome:
        """Run a step's function in this thread on inputs in memory or in the store (being
        ``loading`` elsewhere); hand its outputs to ``ready`` once hashed, then store them
        durably."""
        where = worker_info()
        measurement = METER.start()  # the step's usage: recorded with the end of its run
        called = _call(body, self._ctx, memory, loading)
        handed = None if ready is None else functools.partial(_hand_over, ready, body.run_id)
        return _persisted(self._ctx, called, where, measurement, handed)

    def _end(
        self,
        run_id: str,
        run_status: RunStatus,
        outcome: _BodyOutcome,
        execution_id: str,
        name: str,
        **values: Any,
    ) -> None:
        """End the step's run with its usage and write the step's row, in one transaction."""
        self._tracking.end_run(
            run_id,
            run_status,
            usage=outcome.usage,
            also=lambda uow: self._write_step(uow.conn, execution_id, name, **values),
            durable=_STEP_RECORDS_DURABLE,
        )

    def _cached(
        self, project_id: str, key: str, expiry_s: float | None
    ) -> tuple[str, dict[str, StoredValue], str | None] | None:
        se, pe = step_executions, pipeline_executions
        query = (
            select(se.c.execution_id, se.c.outputs, se.c.run_id)
            .join(pe, pe.c.id == se.c.execution_id)
            .where(pe.c.project_id == project_id, se.c.cache_key == key, se.c.status == "succeeded")
            .order_by(se.c.ended_at.desc())
        )
        if expiry_s is not None:
            query = query.where(
                se.c.ended_at >= self._ctx.clock.now() - timedelta(seconds=expiry_s)
            )
        with self._ctx.db.read() as conn:
            rows = conn.execute(query.limit(20)).all()
        for row in rows:
            outputs = {k: StoredValue.from_dict(v) for k, v in (row.outputs or {}).items()}
            if all(self._ctx.artifacts.exists(v.digest) for v in outputs.values()):
                return row.execution_id, outputs, row.run_id
        return None

    def cancel(self, execution_id: str) -> Execution:
        """Mark a ``running`` or ``waiting`` execution ``cancelled``: its pending, running and
        waiting steps become ``skipped`` ("cancelled"). :meth:`retry` resumes it later.

        Cancelling records the decision: a process still running the execution's steps is not
        interrupted from here (a waiting execution has none running).

        Raises:
            ConflictError: The execution has already ended.
            PermissionDeniedError: The caller lacks ``experiments.write`` on the project.
        """
        current = self._load(execution_id, "experiments.write")
        if current.status not in (ExecutionStatus.RUNNING, ExecutionStatus.WAITING):
            raise ConflictError(
                f"Pipeline execution {execution_id} is {current.status.value}; only running "
                "or waiting executions can be cancelled.",
                hint="Nothing to cancel: it has ended.",
            )
        open_steps = sorted(
            s.step
            for s in current.steps
            if s.status in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING)
        )
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                update(pipeline_executions)
                .where(pipeline_executions.c.id == execution_id)
                .values(status=ExecutionStatus.CANCELLED.value, ended_at=self._ctx.clock.now())
            )
            if open_steps:
                uow.conn.execute(
                    update(step_executions)
                    .where(
                        step_executions.c.execution_id == execution_id,
                        step_executions.c.step.in_(open_steps),
                    )
                    .values(status=StepStatus.SKIPPED.value, error="cancelled")
                )
            self._audit.record(
                uow,
                "pipeline.execution.cancelled",
                "pipeline_execution",
                execution_id,
                project=current.project,
                before={"status": current.status.value},
                after={"status": "cancelled", "steps": open_steps},
            )
        return self._load(execution_id)

    # Reading --------------------------------------------------------------------------------
    def get(self, execution_id: str) -> Execution:
        """One execution with its steps.

        Raises:
            NotFoundError: No such execution, or the caller may not read its project.
        """
        return self._load(execution_id, "experiments.read")

    def graph_html(self, execution_id: str) -> str:
        """The execution's graph as a self-contained HTML page: each step's status, duration
        and cache hit (inline SVG and CSS; no scripts, nothing fetched).

        Raises:
            NotFoundError: No such execution, or the caller may not read its project.
        """
        from civicml.pipelines.graph_html import render_graph

        return render_graph(self.get(execution_id))

    def list(self, project: str, *, pipeline: str | None = None) -> builtins.list[Execution]:
        """The executions in ``project`` (of one pipeline when named), newest first."""
        proj = self._projects.get(project, "experiments.read")
        query = (
            select(pipeline_executions.c.id)
            .join(pipelines, pipelines.c.id == pipeline_executions.c.pipeline_id)
            .where(pipeline_executions.c.project_id == proj.id)
            .order_by(pipeline_executions.c.started_at.desc(), pipeline_executions.c.id.desc())
        )
        if pipeline is not None:
            query = query.where(pipelines.c.name == pipeline)
        with self._ctx.db.read() as conn:
            ids = conn.execute(query).scalars().all()
        return [self._load(str(i)) for i in ids]

    def _load(self, execution_id: str, need: str | None = None) -> Execution:
        pe = pipeline_executions
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(
                    pe,
                    pipelines.c.name.label("pipeline_name"),
                    pipelines.c.version,
                    pipelines.c.graph,
                    projects.c.name.label("project_name"),
                )
                .join(pipelines, pipelines.c.id == pe.c.pipeline_id)
                .join(projects, projects.c.id == pe.c.project_id)
                .where(pe.c.id == execution_id)
            ).first()
            steps = conn.execute(
                select(step_executions)
                .where(step_executions.c.execution_id == execution_id)
                .order_by(step_executions.c.position)
            ).all()
        if row is None:
            raise NotFoundError(
                f"Pipeline execution {execution_id!r} does not exist.",
                hint="List executions with PipelineService(ctx).list(project).",
            )
        if need is not None:
            self._projects.get(row.project_name, need)
        return Execution(
            id=row.id,
            project=row.project_name,
            pipeline=row.pipeline_name,
            version=row.version,
            parameters=row.parameters,
            status=ExecutionStatus(row.status),
            started_at=row.started_at,
            ended_at=row.ended_at,
            created_by=row.created_by,
            edges=_edges(row.graph),
            steps=[
                StepExecution(
                    step=s.step,
                    status=StepStatus(s.status),
                    cache_key=s.cache_key,
                    cache_key_doc=s.cache_key_doc,
                    outputs=s.outputs or {},
                    cached_from=s.cached_from,
                    run_id=s.run_id,
                    started_at=s.started_at,
                    ended_at=s.ended_at,
                    error=s.error,
                )
                for s in steps
            ],
        )


def _edges(graph: Mapping[str, Any] | None) -> builtins.list[tuple[str, str]]:
    """The (upstream, downstream) step pairs of a stored graph description."""
    found: set[tuple[str, str]] = set()
    for node in (graph or {}).get("steps", []):
        for spec in node.get("inputs", {}).values():
            if isinstance(spec, dict) and "ref" in spec:
                found.add((str(spec["ref"]), str(node["name"])))
    order = {node["name"]: i for i, node in enumerate((graph or {}).get("steps", []))}
    return sorted(found, key=lambda e: (order.get(e[0], 0), order.get(e[1], 0)))


def _closed_note(gate: str) -> str:
    return f"Condition {gate!r} was false."


def _run_params(key: str, parameters: dict[str, Any], inputs: dict[str, str]) -> dict[str, str]:
    params = {"cache_key": key}
    for arg, value in parameters.items():
        text = canonical_json(value).decode("utf-8")
        if len(text) > _LONG_PARAM:
            text = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        params[f"param.{arg}"] = text
    for arg, digest in inputs.items():
        params[f"input.{arg}"] = f"sha256:{digest}"
    return params
