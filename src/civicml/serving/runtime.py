"""The in-process model host: verified loading, per-endpoint routes, atomic version switches.

A model version is loaded only after every byte was checked: the manifest's SHA-256 must equal
the registry's ``artifact_digest`` and each file is copied out of the artifact store into a
private cache directory while being hashed against the digest the manifest names. Only then does
:meth:`TabularModel.load <civicml.training.TabularModel.load>` read it — a skops file loaded with
an allowlist of types, never a pickle: a bundle in any other format is refused (422), so a model
file cannot run code in the server.

Requests resolve an endpoint to a :class:`_Route` — an immutable (endpoint, loaded model,
capture settings) triple held in a dict. Switching an endpoint to a new version loads the new
model first, then replaces the route in one dict assignment: a request in flight keeps the route
it started with, so no request fails or mixes versions during the switch. Routes are re-read from
the database every ``refresh_s`` seconds, so a deploy or update made by another process (the CLI
beside a running server) takes effect without a restart.

Each loaded model is compiled once into a :mod:`~civicml.serving.fastpath` (NumPy arithmetic
equal to the pipeline) when its pipeline is one civicml built; records that plainly fit the
signature are checked and encoded without a DataFrame (:meth:`LoadedModel.prepare`), anything
else goes through the model's own validation. A server answers small requests to linear models
on its event loop (:meth:`ModelHost.invoke_nowait`: microseconds of work, cheaper than a thread
hop) and everything else in a worker thread (:meth:`ModelHost.invoke`).

Micro-batching plugs in at :meth:`LoadedModel.predict`: it takes a prepared batch (an
:class:`~civicml.serving.fastpath.Encoded` or a validated frame) and returns one prediction (and
probability row) per row, so :meth:`LoadedModel.predict_batched` (a
:class:`~civicml.serving.batching.MicroBatcher` per loaded model) concatenates the batches of
requests that arrive while a ``predict`` runs, calls it once and splits the result by row
counts. Validation and capture stay per request.

Explanations (``explain=True``) are computed per request by the model's
:class:`~civicml.serving.explanations.LazyExplainer`, built on first use.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, NotRequired, TypedDict

import numpy as np

from civicml.core.errors import CivicMLError, InvalidInputError, NotFoundError
from civicml.core.identity import Principal
from civicml.costs.service import record_endpoint_usage
from civicml.evaluation.models import load_tabular_model
from civicml.governance.access import global_permissions
from civicml.governance.projects import ProjectService
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving._queries import endpoint_row, find_endpoint, to_info
from civicml.serving.batching import MicroBatcher
from civicml.serving.capture import CaptureEvent, CaptureWriter
from civicml.serving.explanations import LazyExplainer
from civicml.serving.fastpath import Encoded, FastPath, compile_fast_path
from civicml.serving.sandbox import SandboxedModel, load_sandboxed
from civicml.serving.schemas import EndpointInfo, EndpointStats
from civicml.store.context import Context
from civicml.training import UnsafeModelFormatError

__all__ = [
    "DEFAULT_REFRESH_S",
    "INLINE_MAX_RECORDS",
    "MAX_RECORDS",
    "Invocation",
    "LoadedModel",
    "ModelHost",
    "ModelOutputError",
    "refuse_non_finite",
]

log = logging.getLogger("civicml.serving")

#: How often a route is checked against the database (deploys made by other processes).
DEFAULT_REFRESH_S = 2.0
#: The most records one invocation may carry.
MAX_RECORDS = 100_000
#: How often endpoints' CPU time and invocations are added to the usage ledger (seconds).
USAGE_FLUSH_S = 60.0
#: The fast (event-loop) path reads the CPU clock for one invocation in this many.
CPU_SAMPLE = 8
#: The most records :meth:`ModelHost.invoke_nowait` predicts on the caller's (event loop) thread.
INLINE_MAX_RECORDS = 64


class Invocation(TypedDict):
    """What :meth:`ModelHost.invoke` answers (the REST body of an invocation)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any]
    model_version: int
    inference_ids: list[str]
    explanations: NotRequired[list[dict[str, Any]]]


class ModelOutputError(CivicMLError):
    """The model answered a number that is not finite (NaN or an infinity) for valid input.

    The status is 502 (Bad Gateway: an upstream — the model — gave an invalid answer), not 500
    (a bug in civicml) nor a 4xx (the caller's input was fine, so the CLI exits 1, not 2).
    SageMaker answers a failing model container with 424; a 4xx would tell clients to fix a
    request that has nothing wrong with it. The message names the endpoint, model version and
    record, never the values.
    """

    status = 502


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One model version in memory, ready to predict."""

    version_id: str
    model_name: str
    version: int
    model: Any  # civicml.training.TabularModel
    classes: list[Any]
    classification: bool
    #: Coalesces concurrent :meth:`predict_batched` calls into one :meth:`predict`.
    batcher: MicroBatcher = field(init=False, repr=False, compare=False)
    #: The pipeline compiled to NumPy, or None when it is not one civicml knows.
    fast: FastPath | None = field(init=False, repr=False, compare=False)
    #: SHAP explanations, built by the first request that asks for them.
    explainer: LazyExplainer = field(init=False, repr=False, compare=False)
    #: For an all-numeric signature: its column names and which of them are integers.
    _numeric: tuple[list[str], frozenset[str], frozenset[str]] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Looks self.predict up on each call, so the class attribute can be wrapped (tests).
        object.__setattr__(self, "batcher", MicroBatcher(self._predict_now))
        sandboxed = isinstance(self.model, SandboxedModel)
        fast = None if sandboxed else compile_fast_path(self.model)
        object.__setattr__(self, "fast", fast)
        reference = fast.reference_record() if fast is not None else None
        label = f"{self.model_name} v{self.version}"
        object.__setattr__(self, "explainer", LazyExplainer(self.model, reference, label))
        signature = getattr(self.model, "signature", None) or []
        numeric = None
        if signature and all(c.get("type") in ("int64", "float64") for c in signature):
            names = [str(c["name"]) for c in signature]
            ints = frozenset(str(c["name"]) for c in signature if c["type"] == "int64")
            numeric = (names, frozenset(names), ints)
        object.__setattr__(self, "_numeric", numeric)

    def prepare(self, rows: Any) -> Any:
        """The batch :meth:`predict` takes for ``rows``: an :class:`Encoded` when the model has
        a fast path (records that plainly fit are encoded directly; anything else is validated
        by the model first), else the validated frame.

        Raises:
            InvalidInputError: A column is missing, unexpected or of the wrong type.
        """
        if self.fast is None:
            return self.validate(rows)
        encoded = self.fast.encode(rows)
        if encoded is not None:
            return encoded
        return self.fast.from_frame(self.validate(rows))

    def validate(self, rows: Any) -> Any:
        """``model.validate(rows)``: the rows checked against the signature, in the pipeline's
        dtypes (a frame), raising :class:`InvalidInputError` naming the column.

        Records of an all-numeric signature whose values plainly fit (every column present, no
        other, each value an ``int``/``float`` or ``None``; whole numbers for integer columns)
        take a shortcut that builds the frame from one float64 array — the same values and
        dtypes ``model.validate`` returns (it reads every number column as float64, nulls as
        NaN), at a fraction of the cost. Anything else goes through ``model.validate``, which
        also words the errors. Non-finite numbers in records (JSON's ``NaN`` and ``Infinity``,
        Python's ``float("nan")``) are refused naming the column and record: ``null`` is how a
        record says "unknown". In a DataFrame NaN is pandas' missing value and stays one;
        infinities are refused there too (no pipeline can impute or scale them).
        """
        numbers = [c["name"] for c in self.model.signature if c["type"] in ("int64", "float64")]
        if isinstance(rows, list):
            refuse_non_finite(rows)
        frame = None
        if self._numeric is not None and isinstance(rows, list) and rows:
            frame = _numeric_frame(rows, *self._numeric)
        if frame is None:
            frame = self.model.validate(rows)
        if not isinstance(rows, list):
            _refuse_infinite(frame, numbers)
        return frame

    def predict_batched(self, frame: Any) -> tuple[list[Any], list[list[float]] | None]:
        """:meth:`predict`, sharing one call with concurrent requests (see
        :mod:`civicml.serving.batching`); a request that finds the model idle predicts at once."""
        return self.batcher.predict(frame)

    def predict(self, frame: Any) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions and (classification) probabilities for a prepared batch.

        An :class:`Encoded` batch goes through the fast path. A frame (``model.validate``
        output) is already in the pipeline's dtypes, so the fitted pipeline is called directly
        (``model.predict`` would check the rows again); a classifier runs once, for the
        probabilities, and its label is the most probable class — what scikit-learn's and
        LightGBM's ``predict`` compute (ties go to the first class in both).
        """
        if isinstance(frame, Encoded) and self.fast is not None:
            return self.fast.predict(frame)
        if isinstance(self.model, SandboxedModel):  # a pickle: predicts in its worker process
            return self.model.predict_frame(frame)
        pipeline = getattr(self.model, "pipeline", None) or self.model
        if not self.classification:
            return pipeline.predict(frame).tolist(), None
        proba = pipeline.predict_proba(frame)
        labels = self._labels[proba.argmax(axis=1)]
        return labels.tolist(), proba.tolist()

    def _predict_now(self, frame: Any) -> tuple[list[Any], list[list[float]] | None]:
        return self.predict(frame)

    @property
    def _labels(self) -> Any:
        return np.asarray(self.classes, dtype=object)


@dataclass(frozen=True, slots=True)
class _Route:
    project_id: str
    endpoint: EndpointInfo
    loaded: LoadedModel
    checked: float  # time.monotonic() of the last database check


class ModelHost:
    """Hosts the models of deployed endpoints in this process and answers invocations.

    Args:
        ctx: Stores and principal used to read endpoints and model files (the server's own).
        capture: Where captured requests go; a new :class:`CaptureWriter` when None.
        refresh_s: How often each route is re-read from the database.
        cache_dir: Private directory for model files while they load (default
            ``$CIVICML_HOME/serving/cache``).

    Example:
        >>> host = ModelHost(ctx)  # doctest: +SKIP
        >>> rows = [{"age": 41, "region": "north"}]
        >>> host.invoke("benefits", "eligibility", rows)  # doctest: +SKIP
        {'predictions': [True], 'probabilities': [[0.2, 0.8]], 'classes': [False, True], ...}
    """

    def __init__(
        self,
        ctx: Context,
        *,
        capture: CaptureWriter | None = None,
        refresh_s: float = DEFAULT_REFRESH_S,
        cache_dir: Path | None = None,
    ) -> None:
        self._ctx = ctx
        self.capture = capture if capture is not None else CaptureWriter(ctx)
        self._refresh_s = refresh_s
        self._cache = cache_dir or ctx.settings.home / "serving" / "cache"
        self._routes: dict[tuple[str, str], _Route] = {}
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._refreshing: dict[tuple[str, str], threading.Lock] = {}
        #: Per endpoint id: invocations answered, input errors, model output errors.
        self._counts: dict[str, dict[str, int]] = {}
        self._counts_lock = threading.Lock()
        self._since = ctx.clock.now()
        #: Per endpoint id: its project id and name, and what the usage ledger has of its
        #: counts (``invocations`` and ``cpu_ns`` in ``_counts``) — the next flush adds the rest.
        self._owners: dict[str, tuple[str, str]] = {}
        self._flushed: dict[str, tuple[int, int]] = {}
        self._flush_lock = threading.Lock()
        self._tick = 0
        self._flusher: threading.Thread | None = None
        self._stop_flushing = threading.Event()

    # Loading and routing ----------------------------------------------------------------------
    def load(self, mv: ModelVersion) -> LoadedModel:
        """The model of ``mv`` in memory, loaded (once) from verified files.

        Raises:
            ArtifactIntegrityError: The manifest or a model file does not match its SHA-256.
            NotFoundError: A file is missing from the artifact store.
            InvalidInputError: The files are not a civicml tabular model.
        """
        with self._lock:
            found = self._models.get(mv.id)
            if found is not None:
                return found
            lock = self._loading.setdefault(mv.id, threading.Lock())
        with lock:
            with self._lock:
                found = self._models.get(mv.id)
            if found is not None:
                return found
            loaded = load_version(self._ctx, mv, self._cache)
            with self._lock:
                self._models[mv.id] = loaded
                self._loading.pop(mv.id, None)
            log.info("loaded model %s v%d (%s)", mv.name, mv.version, mv.id)
            return loaded

    def activate(self, project_id: str, endpoint: EndpointInfo, loaded: LoadedModel) -> None:
        """Route ``endpoint`` to ``loaded`` (one atomic swap; requests in flight finish on the
        model they started with)."""
        route = _Route(project_id, endpoint, loaded, time.monotonic())
        with self._lock:
            self._routes[(endpoint.project, endpoint.name)] = route
            self._evict()

    def forget(self, project: str, endpoint: str) -> None:
        """Stop serving ``endpoint`` here (after it was deleted)."""
        with self._lock:
            self._routes.pop((project, endpoint), None)
            self._evict()

    def loaded_versions(self) -> list[str]:
        """Ids of the model versions held in memory."""
        with self._lock:
            return sorted(self._models)

    def close(self) -> None:
        """Write out pending capture files and endpoint usage, and drop the models."""
        self._stop_flushing.set()
        self.flush_usage()
        self.capture.close()
        with self._lock:
            self._routes.clear()
            self._models.clear()

    # Invocation -------------------------------------------------------------------------------
    def invoke(
        self,
        project: str,
        endpoint: str,
        records: Any,
        *,
        explain: bool = False,
        caller: Principal | None = None,
    ) -> Invocation:
        """Predict for ``records``: one record (a mapping), a list of them or a DataFrame.

        Args:
            project: Project name.
            endpoint: Endpoint name.
            records: The input rows.
            explain: Add ``explanations``: per row, SHAP attributions in the raw input columns
                (see :meth:`LazyExplainer.explain
                <civicml.serving.explanations.LazyExplainer.explain>`).
            caller: Who is calling (the request's principal), checked for ``endpoints.invoke``
                on the project and recorded in captured records; this host's own principal
                when None.

        Raises:
            NotFoundError: The project or endpoint does not exist, or the caller may not see
                the project.
            PermissionDeniedError: The caller sees the project but may not invoke.
            InvalidInputError: A column is missing, unexpected or of the wrong type, or a
                number is not finite (the message names the column and record), there are no
                (or too many) records, or the model cannot be explained.
            ModelOutputError: The model answered a non-finite number (502; counted in the
                endpoint's ``stats.output_errors``).
        """
        who = self._authorize(project, caller)
        route = self._route(project, endpoint)
        cpu_from = time.thread_time_ns()  # the endpoint's CPU time: checking, model, answer
        try:
            rows = [records] if isinstance(records, Mapping) else records
            if hasattr(rows, "__len__") and len(rows) > MAX_RECORDS:
                raise InvalidInputError(
                    f"An invocation carries at most {MAX_RECORDS:,} records, not {len(rows):,}.",
                    hint="Split the records into several requests, or use a batch job.",
                )
            loaded = route.loaded
            if explain and isinstance(loaded.model, SandboxedModel):
                raise InvalidInputError(
                    f"Model {loaded.model_name} v{loaded.version} behind endpoint {endpoint!r} "
                    "is a pickle served from a sandbox; it cannot be explained.",
                    hint="Invoke without explain: SHAP would need the pickled object in the "
                    "server, which never unpickles. Train with civicml for explanations.",
                )
            if isinstance(rows, list):
                _check_keys(rows, loaded.model.signature)
            batch = loaded.prepare(rows)
        except InvalidInputError:
            self._count(route, "input_errors")
            raise
        predictions, probabilities = loaded.predict_batched(batch)
        result = self._answer(route, rows, predictions, probabilities, who, cpu_from)
        if explain:
            result["explanations"] = loaded.explainer.explain(loaded.validate(rows))
        return result

    def invoke_nowait(
        self, project: str, endpoint: str, records: Any, *, caller: Principal | None = None
    ) -> Invocation | None:
        """:meth:`invoke` on the caller's thread when that costs microseconds, else ``None``.

        For a server's event loop: answers only when the endpoint's route is fresh (no database
        read), its model has an inline fast path (a linear model), and ``records`` are at most
        :data:`INLINE_MAX_RECORDS` plain records that fit the signature. ``None`` means: call
        :meth:`invoke` in a worker thread (which also words any input error).

        Raises:
            InvalidInputError: A record lacks a column (the message names it).
            ModelOutputError: The model answered a non-finite number.
        """
        route = self._routes.get((project, endpoint))
        if route is None or time.monotonic() - route.checked >= self._refresh_s:
            return None
        who = self._authorize(project, caller)
        loaded = route.loaded
        fast = loaded.fast
        if fast is None or not fast.inline:
            return None
        rows = [records] if type(records) is dict else records
        if type(rows) is not list or len(rows) > INLINE_MAX_RECORDS:
            return None
        try:
            _check_keys(rows, loaded.model.signature)
        except InvalidInputError:
            self._count(route, "input_errors")
            raise
        # The CPU clock is a system call, a tenth of this path's cost: read it for one
        # invocation in CPU_SAMPLE and count that one CPU_SAMPLE times (docs/costs.md).
        self._tick = tick = (self._tick + 1) % CPU_SAMPLE
        cpu_from = 0 if tick else time.thread_time_ns()
        batch = fast.encode(rows)
        if batch is None:
            return None
        predictions, probabilities = loaded.predict(batch)
        return self._answer(route, rows, predictions, probabilities, who, cpu_from, CPU_SAMPLE)

    def _authorize(self, project: str, caller: Principal | None) -> str:
        """Refuse a caller without ``endpoints.invoke`` on ``project``; returns its user name.

        A caller whose roles on every project give the permission is let through without a
        database read (the hot path); one relying on a project grant reads the project (and
        its grants, cached for ``auth_cache_ttl_s``).
        """
        principal = self._ctx.principal if caller is None else caller
        if principal.reaches(project) and "endpoints.invoke" in global_permissions(
            principal, self._ctx.settings
        ):
            return principal.user
        ProjectService(self._ctx.as_principal(principal)).get(project, "endpoints.invoke")
        return principal.user

    def stats(self, endpoint_id: str) -> EndpointStats | None:
        """What this host counted for the endpoint since it started serving it here, or
        ``None`` when this process does not serve it (e.g. a CLI beside a running server)."""
        if not any(r.endpoint.id == endpoint_id for r in list(self._routes.values())):
            return None
        with self._counts_lock:
            counts = self._counts.get(endpoint_id)
            values = dict(counts) if counts is not None else {}
        return EndpointStats(
            since=self._since,
            invocations=values.get("invocations", 0),
            input_errors=values.get("input_errors", 0),
            output_errors=values.get("output_errors", 0),
        )

    def _count(self, route: _Route, what: str) -> None:
        with self._counts_lock:
            counts = self._counts.setdefault(route.endpoint.id, {})
            counts[what] = counts.get(what, 0) + 1

    def _served(self, route: _Route, cpu_ns: int) -> None:
        """Count an answered invocation and its CPU time (added to the usage ledger every
        :data:`USAGE_FLUSH_S` by a background thread, and at :meth:`close`)."""
        endpoint_id = route.endpoint.id
        with self._counts_lock:
            counts = self._counts.setdefault(endpoint_id, {})
            counts["invocations"] = counts.get("invocations", 0) + 1
            if cpu_ns:
                counts["cpu_ns"] = counts.get("cpu_ns", 0) + cpu_ns
            if endpoint_id not in self._owners:
                self._owners[endpoint_id] = (route.project_id, route.endpoint.name)
        if self._flusher is None:
            with self._flush_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="civicml-endpoint-usage", daemon=True
                    )
                    self._flusher.start()

    def flush_usage(self) -> None:
        """Add the endpoints' CPU seconds and invocations counted since the last flush to the
        usage ledger (docs/costs.md); what the database refuses is added at the next flush."""
        with self._flush_lock:
            with self._counts_lock:
                now = {
                    e: (c.get("invocations", 0), c.get("cpu_ns", 0))
                    for e, c in self._counts.items()
                    if e in self._owners
                }
                owners = dict(self._owners)
            items = []
            for endpoint_id, (invocations, cpu_ns) in now.items():
                done = self._flushed.get(endpoint_id, (0, 0))
                if (invocations, cpu_ns) != done:
                    project_id, name = owners[endpoint_id]
                    cpu_s, count = (cpu_ns - done[1]) / 1e9, invocations - done[0]
                    items.append((project_id, endpoint_id, name, cpu_s, count))
            if not items:
                return
            try:
                record_endpoint_usage(self._ctx, items, self._ctx.clock.now())
            except Exception:
                log.exception("recording endpoint usage failed; it is added at the next flush")
                return
            self._flushed.update(now)

    def _flush_loop(self) -> None:
        while not self._stop_flushing.wait(USAGE_FLUSH_S):
            self.flush_usage()

    def _answer(
        self,
        route: _Route,
        rows: Any,
        predictions: list[Any],
        probabilities: list[list[float]] | None,
        caller: str | None,
        cpu_from: int = 0,
        scale: int = 1,
    ) -> Invocation:
        """The invocation's answer, captured when the endpoint's sample says so; its CPU time
        since ``cpu_from`` (``time.thread_time_ns()``) goes to the endpoint's usage.

        Raises:
            ModelOutputError: A prediction or probability is not finite: JSON cannot carry it
                and no caller should act on it. Counted, logged (without any value) and
                captured with the error in place of the output.
        """
        loaded = route.loaded
        result: Invocation = {
            "predictions": predictions,
            "probabilities": probabilities,
            "classes": loaded.classes,
            "model_version": loaded.version,
            "inference_ids": [str(uuid.uuid4()) for _ in predictions],
        }
        bad = _non_finite_record(predictions, probabilities, loaded.classification)
        capture = route.endpoint.capture
        sampled = capture.enabled and self.capture.sampled(capture.percent)
        if bad is None:
            self._served(route, (time.thread_time_ns() - cpu_from) * scale if cpu_from else 0)
            if sampled:
                self._capture(route, rows, result, caller, None)
            return result
        self._count(route, "output_errors")
        error = ModelOutputError(
            f"Model {loaded.model_name} v{loaded.version} behind endpoint "
            f"{route.endpoint.name!r} returned a non-finite value (NaN or infinity) for record "
            f"{bad} of {len(predictions)}; no prediction was answered.",
            hint="The input was valid: this model version misbehaves on it. Switch the "
            "endpoint to another approved version (civicml endpoints update "
            f"{route.endpoint.name} --version N) and report the model; the captured request "
            "holds the input.",
            details=[{"record": bad, "problem": "non_finite_output"}],
        )
        log.error(
            "endpoint %s: model %s v%d returned a non-finite value for record %d of %d "
            "(answered %d)",
            route.endpoint.name,
            loaded.model_name,
            loaded.version,
            bad,
            len(predictions),
            error.status,
        )
        if sampled:
            self._capture(route, rows, result, caller, "non_finite_output")
        raise error

    def _capture(
        self, route: _Route, rows: Any, result: Invocation, caller: str | None, error: str | None
    ) -> None:
        try:
            self.capture.submit(
                CaptureEvent(
                    project_id=route.project_id,
                    endpoint_id=route.endpoint.id,
                    endpoint=route.endpoint.name,
                    model_name=route.loaded.model_name,
                    model_version=route.loaded.version,
                    model_version_id=route.loaded.version_id,
                    time=self._ctx.clock.now(),
                    request_id=str(uuid.uuid4()),
                    records=rows,
                    predictions=result["predictions"],
                    probabilities=result["probabilities"],
                    classes=result["classes"],
                    inference_ids=result["inference_ids"],
                    caller=caller if caller is not None else self._ctx.principal.user,
                    error=error,
                )
            )
        except Exception:  # capture never fails a request
            log.exception("capturing a request to endpoint %s failed", route.endpoint.name)

    def _route(self, project: str, endpoint: str) -> _Route:
        key = (project, endpoint)
        route = self._routes.get(key)
        if route is not None and time.monotonic() - route.checked < self._refresh_s:
            return route
        with self._lock:
            lock = self._refreshing.setdefault(key, threading.Lock())
        if route is not None:
            if not lock.acquire(blocking=False):
                return route  # another request is refreshing it: serve the current model
            try:
                return self._refresh(key, route)
            finally:
                lock.release()
        with lock:
            route = self._routes.get(key)
            if route is not None and time.monotonic() - route.checked < self._refresh_s:
                return route
            return self._refresh(key, route)

    def _refresh(self, key: tuple[str, str], current: _Route | None) -> _Route:
        project, name = key
        proj = ProjectService(self._ctx).get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = find_endpoint(conn, proj.id, name)
            if row is None:
                self.forget(project, name)
                endpoint_row(conn, proj, name)  # raises NotFoundError with close names
                raise NotFoundError(f"Endpoint {name!r} does not exist.")  # pragma: no cover
        info = to_info(row, proj.name)
        if current is not None and current.loaded.version_id == info.model_version_id:
            route = replace(current, endpoint=info, checked=time.monotonic())
        else:
            try:
                mv = RegistryService(self._ctx).get_version(
                    project, info.model_name, info.model_version
                )
                loaded = self.load(mv)
            except Exception:
                if current is None:
                    raise
                log.exception(
                    "endpoint %s: could not load %s v%d; still serving v%d",
                    name,
                    info.model_name,
                    info.model_version,
                    current.loaded.version,
                )
                route = replace(current, checked=time.monotonic())
            else:
                route = _Route(proj.id, info, loaded, time.monotonic())
        with self._lock:
            self._routes[key] = route
            self._evict()
        return route

    def _evict(self) -> None:
        """Drop models no route uses (called with ``self._lock`` held)."""
        used = {r.loaded.version_id for r in self._routes.values()}
        for version_id in [v for v in self._models if v not in used]:
            del self._models[version_id]


def _non_finite_record(
    predictions: list[Any], probabilities: list[list[float]] | None, classification: bool
) -> int | None:
    """The index of the first record whose output is not finite, or None (the common case,
    found with one C-level sum: a sum of finite probabilities is finite)."""
    if classification:
        if probabilities is None:
            return None
        with contextlib.suppress(TypeError):
            if math.isfinite(sum(map(sum, probabilities))):
                return None
        for index, row in enumerate(probabilities):
            if not all(isinstance(p, int | float) and math.isfinite(p) for p in row):
                return index
        return None
    with contextlib.suppress(TypeError, OverflowError):
        if math.isfinite(math.fsum(predictions)):
            return None
    for index, value in enumerate(predictions):
        if isinstance(value, float | np.floating) and not math.isfinite(value):
            return index
    return None


def _check_keys(rows: list[Any], signature: list[Any]) -> None:
    """Refuse a record that lacks a column (tables would read it as null; an explicit null is
    fine). Columns no record should have are left to the model's own validation."""
    names = {column["name"] for column in signature}
    for index, row in enumerate(rows):
        if isinstance(row, Mapping) and row.keys() != names:
            for column in signature:
                if column["name"] not in row:
                    raise InvalidInputError(
                        f"Input is missing column {column['name']!r} ({column['type']}) in "
                        f"record {index}.",
                        hint="Every record must carry all model input columns (null where a "
                        "value is unknown): " + ", ".join(c["name"] for c in signature) + ".",
                        details=[
                            {
                                "column": column["name"],
                                "problem": "missing",
                                "expected": column["type"],
                                "record": index,
                            }
                        ],
                    )


def refuse_non_finite(rows: Any) -> None:
    """Refuse records holding a non-finite number (NaN, Infinity, -Infinity) in any column.

    ``rows`` is one record (a mapping) or a list of them; anything else (a DataFrame, whose NaN
    means missing) passes. The documented input rule: a non-finite number is a 422 naming the
    column and record; ``null`` (``None``) is the way to send an unknown value.

    Raises:
        InvalidInputError: A value is a non-finite float (``float`` or a NumPy float).
    """
    if isinstance(rows, Mapping):
        rows = [rows]
    if not isinstance(rows, list):
        return
    for index, row in enumerate(rows):
        if isinstance(row, Mapping):
            for name, value in row.items():
                if isinstance(value, float | np.floating) and not math.isfinite(value):
                    _not_finite(str(name), index, float(value))


def _refuse_infinite(frame: Any, numbers: list[str]) -> None:
    """Refuse an infinity in a validated frame (built from a DataFrame: NaN there is missing)."""
    if numbers:
        infinite = np.isinf(frame[numbers].to_numpy(dtype=np.float64))
        if infinite.any():
            row, column = (int(i) for i in np.argwhere(infinite)[0])
            value = float(frame[numbers[column]].iloc[row])
            _not_finite(numbers[column], row, value)


def _not_finite(name: str, record: int, value: float) -> NoReturn:
    word = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    raise InvalidInputError(
        f"Column {name!r} has a non-finite value ({word}) in record {record}; numbers must be "
        "finite.",
        hint="Send null (None in Python) for an unknown value.",
        details=[{"column": name, "problem": "not_finite", "record": record, "got": word}],
    )


def _numeric_frame(
    rows: list[Any], names: list[str], known: frozenset[str], ints: frozenset[str]
) -> Any:
    """The float64 frame of records whose values all plainly fit ``names``, else ``None``."""
    import pandas as pd  # type: ignore[import-untyped]

    for row in rows:
        if not isinstance(row, dict) or row.keys() != known:
            return None
        for name in names:
            value = row[name]
            kind = type(value)
            if kind is float:
                if name in ints and not value.is_integer() and not math.isnan(value):
                    return None  # a fraction in an integer column: let validate word it
            elif kind is not int and value is not None:
                return None
    values = np.array([[row[name] for name in names] for row in rows], dtype="float64")
    return pd.DataFrame(values, columns=names)


def load_version(ctx: Context, mv: ModelVersion, cache_root: Path) -> LoadedModel:
    """Load ``mv`` for serving, each file verified first (see :func:`load_tabular_model`).

    A pickled bundle (``civicml.pickle/1``) becomes a :class:`SandboxedModel` when the setting
    ``pickle_models`` is ``"sandbox"`` and its registration signature verifies; otherwise it is
    refused (422) as before.
    """
    model: Any
    try:
        model = load_tabular_model(ctx, mv, cache_root)
    except UnsafeModelFormatError as refused:
        model = load_sandboxed(ctx, mv, refused)
    classification = model.task == "classification"
    return LoadedModel(
        version_id=mv.id,
        model_name=mv.name,
        version=mv.version,
        model=model,
        classes=list(model.classes_) if classification else [],
        classification=classification,
    )
