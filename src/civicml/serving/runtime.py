"""The in-process model host: verified loading, per-endpoint routes, atomic version switches.

A model version is loaded only after every byte was checked: the manifest's SHA-256 must equal
the registry's ``artifact_digest`` and each file is copied out of the artifact store into a
private cache directory while being hashed against the digest the manifest names. Only then does
:meth:`TabularModel.load <civicml.training.TabularModel.load>` read it — a skops file loaded with
an allowlist of types, never a pickle: a bundle in any other format is refused (422), so a model
file cannot run code in the server.

Requests resolve an endpoint to a :class:`Route` — an immutable snapshot of the endpoint, its
variants (each a loaded model), their cumulative traffic weights and the capture settings, held
in a dict. A request picks its variant with one random draw against the cumulative weights (a
single-variant endpoint skips even that), or the variant it pins (``civicml-variant`` header).
Changing versions or weights loads any new model first, then replaces the route in one dict
assignment: a request in flight keeps the route (and model) it started with, so no request
fails or mixes versions during a switch or a weight change. Routes are re-read from the
database every ``refresh_s`` seconds, so a change made by another process (the CLI beside a
running server, another server's rollout tick) takes effect without a restart; the request path
itself never reads the database.

Each answer is counted per variant in memory (:mod:`civicml.serving.stats`: requests, 4xx, 5xx,
a latency histogram), flushed every ``serving_stats_flush_s`` for the alarms of guarded
rollouts. When the endpoint has a shadow variant, a sampled copy of each unpinned request is
handed to it *after* the live answer is ready (:mod:`civicml.serving.shadow`): a bounded queue
and a thread of its own, the shadow model predicting in a worker process or in that thread
(``serving_shadow_mode``, :func:`~civicml.serving.shadow.shadow_mode`), so the shadow never
delays or changes a live answer.

Each loaded model is compiled once into a :mod:`~civicml.serving.fastpath` (NumPy arithmetic
equal to the pipeline) when its pipeline is one civicml built; records that plainly fit the
signature are checked and encoded without a DataFrame (:meth:`LoadedModel.prepare`), anything
else goes through the model's own validation. A server answers small requests to linear models,
and to tree models measured at load to predict a few records within a millisecond, on its event
loop (:meth:`ModelHost.invoke_nowait`: cheaper than a hop to a worker thread and back) and
everything else in a worker thread (:meth:`ModelHost.invoke`).

Micro-batching plugs in at :meth:`LoadedModel.predict`: it takes a prepared batch (an
:class:`~civicml.serving.fastpath.Encoded` or a validated frame) and returns one prediction (and
probability row) per row, so :meth:`LoadedModel.predict_batched` (a
:class:`~civicml.serving.batching.MicroBatcher` per loaded model) concatenates the batches of
requests that arrive while a ``predict`` runs, calls it once and splits the result by row
counts. Validation and capture stay per request.

Explanations (``explain=True``) are computed per request by the model's
:class:`~civicml.serving.explanations.LazyExplainer`, built on first use.

A multi-model endpoint's route is a :class:`~civicml.serving.multi_route.MultiRoute`: each
request names its model (``target``), which is loaded — verified as above, and checked to be
Approved still — on first use into the endpoint's LRU
:class:`~civicml.serving.model_cache.ModelCache`, and answered as a one-variant route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from civicml.core.errors import BadRequestError, CivicMLError, InvalidInputError, NotFoundError
from civicml.core.identity import Principal
from civicml.core.process import hostname
from civicml.core.uuids import uuid4_str
from civicml.costs.service import record_endpoint_usage
from civicml.evaluation.models import load_tabular_model
from civicml.governance.access import global_permissions
from civicml.governance.projects import ProjectService
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving._checks import (
    check_keys,
    non_finite_record,
    numeric_frame,
    refuse_infinite,
    refuse_non_finite,
)
from civicml.serving._queries import (
    endpoint_row,
    find_endpoint,
    is_multi_model,
    model_rows,
    to_info,
    variant_rows,
)
from civicml.serving._shadow_process import ANSWERED, INVALID_INPUT, ShadowWorkers
from civicml.serving.batching import MicroBatcher
from civicml.serving.capture import CaptureEvent, CaptureLines, CaptureWriter, sent_text
from civicml.serving.explanations import LazyExplainer
from civicml.serving.fastpath import INLINE_MAX_RECORDS, Encoded, FastPath, compile_fast_path
from civicml.serving.model_cache import CacheCounters
from civicml.serving.multi_route import (
    MB,
    Member,
    MultiRoute,
    build_multi_route,
    check_servable,
    not_multi_model,
)
from civicml.serving.routing import Route, RouteVariant, build_route, variants_of
from civicml.serving.sandbox import SandboxedModel, load_sandboxed
from civicml.serving.schemas import EndpointInfo, EndpointStats
from civicml.serving.shadow import (
    ShadowAnswer,
    ShadowBatch,
    ShadowJob,
    ShadowRunner,
    shadow_mode,
)
from civicml.serving.stats import VariantCounters, VariantSample, flush_counters
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
#: The fast (event-loop) path reads the CPU clock for one invocation in this many (a system
#: call, twice per sampled invocation: on a busy machine a chance for the scheduler to take the
#: core away while the event loop holds the GIL).
CPU_SAMPLE = 64


class Invocation(TypedDict):
    """What :meth:`ModelHost.invoke` answers (the REST body of an invocation)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any]
    model_version: int
    variant: str
    inference_ids: list[str]
    explanations: NotRequired[list[dict[str, Any]]]
    target_model: NotRequired[str]


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
            frame = numeric_frame(rows, *self._numeric)
        if frame is None:
            frame = self.model.validate(rows)
        if not isinstance(rows, list):
            refuse_infinite(frame, numbers)
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
        self._routes: dict[tuple[str, str], Route | MultiRoute] = {}
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
        #: Per variant id: what this process counted (see civicml.serving.stats).
        self._variant_counts: dict[str, VariantCounters] = {}
        #: This process's key in endpoint_variant_stats.
        self.source = f"{hostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stats_flusher: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._shadow_workers = (
            ShadowWorkers(ctx, self._cache)
            if shadow_mode(ctx.settings.serving_shadow_mode) == "process"
            else None
        )
        self._shadow = ShadowRunner(
            self._answer_shadow,
            self._record_shadow,
            ctx.settings.serving_shadow_queue,
            self._shadow_workers,
            self._record_shadow_batch,
        )

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

    def activate(
        self, project_id: str, endpoint: EndpointInfo, models: Mapping[str, LoadedModel]
    ) -> None:
        """Route ``endpoint`` to its variants, whose models ``models`` holds by model version
        id (one atomic swap; requests in flight finish on the model they started with).

        Raises:
            KeyError: A variant's model is not in ``models``.
        """
        route = build_route(project_id, endpoint, models, time.monotonic())
        with self._lock:
            self._routes[(endpoint.project, endpoint.name)] = route
            self._evict()

    def forget(self, project: str, endpoint: str) -> None:
        """Stop serving ``endpoint`` here (after it was deleted)."""
        with self._lock:
            gone = self._routes.pop((project, endpoint), None)
            self._evict()
        if isinstance(gone, MultiRoute):
            gone.cache.clear()

    def loaded_versions(self) -> list[str]:
        """Ids of the model versions held in memory."""
        with self._lock:
            return sorted(self._models)

    def close(self) -> None:
        """Write out pending capture files, endpoint usage and variant counters, and drop the
        models (shadow copies still queued are dropped, the shadow's worker processes stopped)."""
        self._stop_flushing.set()
        self._shadow.close()
        if self._shadow_workers is not None:
            self._shadow_workers.close()
        self.flush_usage()
        with contextlib.suppress(Exception):  # logged inside; closing goes on
            self.flush_variant_stats()
        self.capture.close()
        with self._lock:
            for route in self._routes.values():
                if isinstance(route, MultiRoute):
                    route.cache.clear()
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
        variant: str | None = None,
        target: str | None = None,
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
            variant: Pin the request to this variant (any letter case), bypassing the traffic
                weights; None follows them.
            target: The model of a multi-model endpoint, ``MODEL[/VERSION]`` (loaded on
                first use); required there, refused elsewhere.

        Raises:
            BadRequestError: A multi-model endpoint without a target (or with a malformed
                one), or a target for a single-model endpoint.
            NotFoundError: The project, endpoint, pinned variant or target model does not
                exist, or the caller may not see the project.
            ConflictError: The target model's version is no longer Approved.
            ArtifactIntegrityError: The target model's files fail their hash check.
            PermissionDeniedError: The caller sees the project but may not invoke.
            InvalidInputError: A column is missing, unexpected or of the wrong type, or a
                number is not finite (the message names the column and record), there are no
                (or too many) records, or the model cannot be explained.
            ModelOutputError: The model answered a non-finite number (502; counted in the
                endpoint's ``stats.output_errors``).
        """
        who = self._authorize(project, caller)
        found = self._route(project, endpoint)
        if isinstance(found, MultiRoute):
            chosen = self._member(found, target, variant)
            route = found.route_for(chosen)
        elif target is not None:
            raise not_multi_model(endpoint)
        else:
            route = found
            chosen = route.pick(variant)
        started = time.perf_counter_ns()
        cpu_from = time.thread_time_ns()  # the endpoint's CPU time: checking, model, answer
        loaded = chosen.loaded
        try:
            rows = [records] if isinstance(records, Mapping) else records
            if hasattr(rows, "__len__") and len(rows) > MAX_RECORDS:
                raise InvalidInputError(
                    f"An invocation carries at most {MAX_RECORDS:,} records, not {len(rows):,}.",
                    hint="Split the records into several requests, or use a batch job.",
                )
            if explain and isinstance(loaded.model, SandboxedModel):
                raise InvalidInputError(
                    f"Model {loaded.model_name} v{loaded.version} behind endpoint {endpoint!r} "
                    "is a pickle served from a sandbox; it cannot be explained.",
                    hint="Invoke without explain: SHAP would need the pickled object in the "
                    "server, which never unpickles. Train with civicml for explanations.",
                )
            if isinstance(rows, list):
                check_keys(rows, loaded.model.signature)
            batch = loaded.prepare(rows)
        except InvalidInputError:
            self._count(route, chosen, "input_errors")
            raise
        try:
            predictions, probabilities = loaded.predict_batched(batch)
        except Exception:
            self._count(route, chosen, "model_errors")
            raise
        result = self._answer(
            route, chosen, rows, predictions, probabilities, who, started, variant is None, cpu_from
        )
        if isinstance(found, MultiRoute):
            result["target_model"] = chosen.name
        if explain:
            result["explanations"] = loaded.explainer.explain(loaded.validate(rows))
        return result

    def invoke_nowait(
        self,
        project: str,
        endpoint: str,
        records: Any,
        *,
        caller: Principal | None = None,
        variant: str | None = None,
        target: str | None = None,
        body: bytes | None = None,
    ) -> Invocation | None:
        """:meth:`invoke` on the caller's thread when that costs microseconds, else ``None``.

        For a server's event loop: answers only when the endpoint's route is fresh (no database
        read), the picked variant's model has an inline fast path (a linear model, or a tree
        model measured to predict a few records within a millisecond), and ``records`` are at
        most its :attr:`FastPath.inline_records` (at most :data:`INLINE_MAX_RECORDS`) plain
        records that fit the signature; for a multi-model endpoint, when the ``target`` model is
        loaded already.
        ``None`` means: call :meth:`invoke` in a worker thread (which also words any input
        error — :meth:`FastPath.encode` takes only records with exactly the signature's
        columns — and loads a model on first use). ``body``: the invocation body ``records``
        was parsed from; a captured request keeps its records' text as sent
        (:func:`~civicml.serving.capture.sent_text`).

        Raises:
            NotFoundError: The endpoint has no variant ``variant``.
            ModelOutputError: The model answered a non-finite number.
        """
        found = self._routes.get((project, endpoint))
        if found is None or time.monotonic() - found.checked >= self._refresh_s:
            return None
        started = time.perf_counter_ns()
        who = self._authorize(project, caller)
        key = ""
        if isinstance(found, MultiRoute):
            if variant is not None:
                return None  # invoke words the refusal
            key = found.member(target).version_id
            cached = found.cache.peek(key, count=False)  # counted once it is answered here
            if cached is None:
                return None  # not loaded yet: invoke loads it in a worker thread
            route, chosen = found.route_for(cached), cached
        elif target is not None:
            return None  # invoke refuses it
        else:
            route = found
            chosen = route.pick(variant)
        loaded = chosen.loaded
        fast = loaded.fast
        if fast is None or not fast.inline_records:
            return None
        rows = [records] if type(records) is dict else records
        if type(rows) is not list or len(rows) > fast.inline_records:
            return None
        # The CPU clock is a system call, a good part of this path's cost: read it for one
        # invocation in CPU_SAMPLE and count that one CPU_SAMPLE times (docs/costs.md).
        self._tick = tick = (self._tick + 1) % CPU_SAMPLE
        cpu_from = 0 if tick else time.thread_time_ns()
        batch = fast.encode(rows)
        if batch is None:
            return None
        if isinstance(found, MultiRoute):  # a multi-model hit, answered on this path
            found.cache.peek(key)
        try:
            predictions, probabilities = loaded.predict(batch)
        except Exception:
            self._count(route, chosen, "model_errors")
            raise
        result = self._answer(
            route,
            chosen,
            rows,
            predictions,
            probabilities,
            who,
            started,
            variant is None,
            cpu_from,
            CPU_SAMPLE,
            plain=True,  # fast.encode took them: plain JSON records
            body=body,
        )
        if route is not found:
            result["target_model"] = chosen.name
        return result

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
        routes = [r for r in list(self._routes.values()) if r.endpoint.id == endpoint_id]
        if not routes:
            return None
        shadow = routes[0].shadow if isinstance(routes[0], Route) else None
        failure = None
        if shadow is not None and self._shadow_workers is not None:
            failure = self._shadow_workers.failure(shadow.loaded.version_id)
        with self._counts_lock:
            counts = self._counts.get(endpoint_id)
            values = dict(counts) if counts is not None else {}
        return EndpointStats(
            since=self._since,
            invocations=values.get("invocations", 0),
            input_errors=values.get("input_errors", 0),
            output_errors=values.get("output_errors", 0),
            shadow_dropped=values.get("shadow_dropped", 0),
            shadow_failure=failure,
        )

    def model_cache(self, endpoint_id: str) -> CacheCounters | None:
        """The cache of a multi-model endpoint this process serves (loaded models, hits,
        loads, evictions), or None."""
        for route in list(self._routes.values()):
            if isinstance(route, MultiRoute) and route.endpoint.id == endpoint_id:
                counters = route.cache.counters()
                targets = {m.version_id: m.target for ms in route.by_model.values() for m in ms}
                loaded = tuple(targets.get(k, k) for k in counters.loaded)
                return replace(counters, loaded=loaded)
        return None

    def _member(self, multi: MultiRoute, target: str | None, variant: str | None) -> RouteVariant:
        """The loaded model of a multi-model request: from the cache, or loaded now (once,
        however many requests ask at the same time).

        Raises:
            BadRequestError: A pinned variant, or no (or a malformed) target.
            NotFoundError: The endpoint holds no such model.
            ConflictError: The version is no longer Approved (or archived).
            ArtifactIntegrityError: Its files fail their hash check.
        """
        if variant is not None:
            raise BadRequestError(
                f"Endpoint {multi.endpoint.name!r} is a multi-model endpoint; it has no "
                "variants to pin.",
                hint="Name the model with X-Civicml-Target-Model: MODEL[/VERSION] instead of "
                "civicml-variant.",
                details=[{"header": "civicml-variant", "problem": "multi-model endpoint"}],
            )
        member = multi.member(target)
        return multi.cache.get(
            member.version_id, member.size_bytes, lambda: self._load_member(multi, member)
        )

    def _load_member(self, multi: MultiRoute, member: Member) -> RouteVariant:
        """Load a member of a multi-model endpoint: still Approved, its approved files and
        signature checked, then each file hashed as it is read (:func:`load_version`)."""
        registry = RegistryService(self._ctx)
        try:
            mv = registry.get_version(multi.endpoint.project, member.model_name, member.version)
            check_servable(registry, mv)
            with self._lock:
                loaded = self._models.get(mv.id)  # served by a variant here too: shared
            if loaded is None:
                loaded = load_version(self._ctx, mv, self._cache)
        except CivicMLError as err:
            log.error("endpoint %s: model %s refused: %s", multi.endpoint.name, member.target, err)
            raise
        log.info("endpoint %s: loaded model %s (%s)", multi.endpoint.name, member.target, mv.id)
        return RouteVariant(
            id=member.id, name=member.target, loaded=loaded, weight=1.0, shadow_percent=0.0
        )

    def _count(self, route: Route, variant: RouteVariant | None, what: str) -> None:
        """Count a refused (``input_errors``: 4xx) or failed (``output_errors``,
        ``model_errors``: 5xx) request, or a dropped shadow copy, for the endpoint and the
        variant that had it."""
        with self._counts_lock:
            counts = self._counts.setdefault(route.endpoint.id, {})
            counts[what] = counts.get(what, 0) + 1
            if variant is not None:
                found = self._variant_counts.get(variant.id)
                if found is None:
                    found = self._new_counters(route, variant)
                if what == "input_errors":
                    found.errors_4xx += 1
                elif what in ("output_errors", "model_errors"):
                    found.errors_5xx += 1
        self._start_stats_flusher()

    def _served(self, route: Route, variant: RouteVariant, cpu_ns: int, latency_ns: int) -> None:
        """Count an answered invocation, its CPU time (added to the usage ledger every
        :data:`USAGE_FLUSH_S` by a background thread, and at :meth:`close`) and its variant's
        latency (flushed every ``serving_stats_flush_s``)."""
        endpoint_id = route.endpoint.id
        with self._counts_lock:
            counts = self._counts.setdefault(endpoint_id, {})
            counts["invocations"] = counts.get("invocations", 0) + 1
            if cpu_ns:
                counts["cpu_ns"] = counts.get("cpu_ns", 0) + cpu_ns
            if endpoint_id not in self._owners:
                self._owners[endpoint_id] = (route.project_id, route.endpoint.name)
            found = self._variant_counts.get(variant.id)
            if found is None:
                found = self._new_counters(route, variant)
            found.answered(latency_ns)
        if self._flusher is None:
            with self._flush_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="civicml-endpoint-usage", daemon=True
                    )
                    self._flusher.start()
            self._start_stats_flusher()

    def _shadow_served(
        self, route: Route, variant: RouteVariant, what: str, latency_ns: int
    ) -> None:
        """Count one answer of the shadow (``answered``, ``input_errors``, ``output_errors``)
        for its variant only: it answered nobody, so the endpoint's counters leave it out."""
        with self._counts_lock:
            found = self._variant_counts.get(variant.id)
            if found is None:
                found = self._new_counters(route, variant)
            if what == "answered":
                found.answered(latency_ns)
            elif what == "input_errors":
                found.errors_4xx += 1
            else:
                found.errors_5xx += 1

    def _new_counters(self, route: Route, variant: RouteVariant) -> VariantCounters:
        """A variant's first counters here (called with ``self._counts_lock`` held)."""
        names = (route.endpoint.project, route.endpoint.name, variant.name)
        found = self._variant_counts[variant.id] = VariantCounters(route.endpoint.id, names)
        return found

    def variant_samples(self) -> list[VariantSample]:
        """What this process counted per variant, cumulative since it started, with the
        names of its project, endpoint and variant (for ``GET /metrics``)."""
        with self._counts_lock:
            return [c.sample() for c in self._variant_counts.values()]

    def variant_counters(self) -> dict[str, tuple[str, tuple[int, int, int, tuple[int, ...]]]]:
        """What this process counted per variant id: (endpoint id, (invocations, 4xx, 5xx,
        latency histogram)), cumulative since it started."""
        with self._counts_lock:
            return {v: (c.endpoint_id, c.snapshot()) for v, c in self._variant_counts.items()}

    def flush_variant_stats(self) -> None:
        """Write this process's per-variant counters to the database now (what rollout
        alarms read); a failure is logged and retried at the next flush."""
        with self._stats_lock:
            counters = self.variant_counters()
            if not counters:
                return
            try:
                with self._ctx.db.write() as uow:
                    flush_counters(uow, self.source, counters, self._ctx.clock.now())
            except Exception:
                log.exception("writing the endpoint variant counters failed; retried later")
                raise

    def _start_stats_flusher(self) -> None:
        if self._stats_flusher is not None:
            return
        with self._flush_lock:
            if self._stats_flusher is None:
                self._stats_flusher = threading.Thread(
                    target=self._stats_loop, name="civicml-variant-stats", daemon=True
                )
                self._stats_flusher.start()

    def _stats_loop(self) -> None:
        interval = self._ctx.settings.serving_stats_flush_s
        while not self._stop_flushing.wait(interval):
            with contextlib.suppress(Exception):  # logged in flush_variant_stats
                self.flush_variant_stats()

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
        route: Route,
        variant: RouteVariant,
        rows: Any,
        predictions: list[Any],
        probabilities: list[list[float]] | None,
        caller: str | None,
        started: int,
        mirror: bool,
        cpu_from: int = 0,
        scale: int = 1,
        *,
        plain: bool = False,
        body: bytes | None = None,
    ) -> Invocation:
        """The invocation's answer, captured when the endpoint's sample says so; its CPU time
        since ``cpu_from`` (``time.thread_time_ns()``) goes to the endpoint's usage and its
        latency since ``started`` (``time.perf_counter_ns()``) to the variant's counters. With
        ``mirror`` (an unpinned request) and a shadow variant, a sampled copy goes to the
        shadow once the answer is ready (and the pair is captured when capture is on).
        ``plain``: the records are known to be plain JSON records (the fast path's ``encode``
        took them), so capture skips checking them; ``body``: the invocation body the records
        were parsed from, whose records' text a captured request keeps as sent (cut from it only
        when the request is captured: ``CaptureEvent.text``).

        Raises:
            ModelOutputError: A prediction or probability is not finite: JSON cannot carry it
                and no caller should act on it. Counted, logged (without any value) and
                captured with the error in place of the output.
        """
        loaded = variant.loaded
        result: Invocation = {
            "predictions": predictions,
            "probabilities": probabilities,
            "classes": loaded.classes,
            "model_version": loaded.version,
            "variant": variant.name,
            "inference_ids": [uuid4_str() for _ in predictions],
        }
        bad = non_finite_record(predictions, probabilities, loaded.classification)
        capture = route.endpoint.capture
        shadow = route.shadow if mirror else None
        copy = shadow is not None and self.capture.sampled(shadow.shadow_percent)
        sampled = capture.enabled and (copy or self.capture.sampled(capture.percent))
        if bad is None:
            latency = time.perf_counter_ns() - started
            self._served(
                route,
                variant,
                (time.thread_time_ns() - cpu_from) * scale if cpu_from else 0,
                latency,
            )
            if sampled:
                text = None if body is None else sent_text(body, rows)
                self._capture(
                    route, variant, rows, result, caller, None, latency, plain=plain, text=text
                )
            if copy:
                self._mirror(route, rows, result, caller)
            return result
        self._count(route, variant, "output_errors")
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
            self._capture(
                route, variant, rows, result, caller, "non_finite_output", None, plain=plain
            )
        raise error

    def _capture(
        self,
        route: Route,
        variant: RouteVariant,
        rows: Any,
        result: Invocation,
        caller: str | None,
        error: str | None,
        latency_ns: int | None,
        *,
        shadow: bool = False,
        when: datetime | None = None,
        plain: bool = False,
        text: bytes | None = None,
    ) -> None:
        loaded = variant.loaded
        try:
            # positional, in CaptureEvent's order: half the cost of keywords, on the event loop
            # for every captured request; the request id is made when the lines are formatted
            event = CaptureEvent(
                route.project_id, route.endpoint.id, route.endpoint.name,
                loaded.model_name, loaded.version, loaded.version_id,
                when if when is not None else self._ctx.clock.now(), None,
                rows, result["predictions"], result["probabilities"], result["classes"],
                result["inference_ids"],
                caller if caller is not None else self._ctx.principal.user,
                error, variant.name, shadow,
                None if latency_ns is None else latency_ns / 1e6, plain, text,
            )  # fmt: skip
            self.capture.submit(event)
        except Exception:  # capture never fails a request
            log.exception("capturing a request to endpoint %s failed", route.endpoint.name)

    # Shadow -----------------------------------------------------------------------------------
    def _mirror(self, route: Route, rows: Any, result: Invocation, caller: str | None) -> None:
        """Hand a copy of an answered request to the shadow (never waits; drops when full)."""
        job = ShadowJob(route, rows, result["inference_ids"], caller, self._ctx.clock.now())
        if not self._shadow.offer(job):
            self._count(route, None, "shadow_dropped")

    def answer_shadow_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer shadow copies on ``loop``, the server's event loop, where they cost
        microseconds: copies of up to its inline number of records for a shadow with an inline
        fast path, the requests :meth:`invoke_nowait` answers on the loop too
        (:meth:`ShadowRunner.answer_on_loop`; thread mode only). Call it on the loop's
        thread."""
        self._shadow.answer_on_loop(loop, _shadow_inline)

    def drain_shadow(self, timeout: float = 30.0) -> bool:
        """Wait until the shadow has answered every copy queued so far (tests, reports)."""
        return self._shadow.drain(timeout)

    def _answer_shadow(self, job: ShadowJob) -> ShadowAnswer:
        """Answer one copy with the shadow in this thread (``serving_shadow_mode = "thread"``,
        or records that are not plain JSON)."""
        loaded = job.route.shadow.loaded
        started = time.perf_counter_ns()
        try:
            if isinstance(job.rows, list):
                check_keys(job.rows, loaded.model.signature)
            predictions, probabilities = loaded.predict(loaded.prepare(job.rows))
        except InvalidInputError:
            return ShadowAnswer(error="invalid_input")
        except Exception:
            route = job.route
            log.exception(
                "endpoint %s: shadow variant %s failed", route.endpoint.name, route.shadow.name
            )
            return ShadowAnswer(error="model_error")
        return ShadowAnswer(predictions, probabilities, time.perf_counter_ns() - started)

    def _record_shadow(self, job: ShadowJob, answer: ShadowAnswer | None) -> None:
        """Count one copy's answer for the shadow variant and capture it (marked shadow, with
        the live answer's inference ids); ``None``: the shadow is marked failed, the copy was
        dropped."""
        route = job.route
        shadow = route.shadow
        if shadow is None:  # pragma: no cover - only routes with a shadow are mirrored
            return
        if answer is None:
            self._count(route, None, "shadow_dropped")
            return
        loaded = shadow.loaded
        empty: Invocation = {
            "predictions": [],
            "probabilities": None,
            "classes": loaded.classes,
            "model_version": loaded.version,
            "variant": shadow.name,
            "inference_ids": job.inference_ids,
        }
        capture = route.endpoint.capture.enabled
        if answer.error is not None or answer.predictions is None:
            invalid = answer.error == "invalid_input"
            self._shadow_served(route, shadow, "input_errors" if invalid else "output_errors", 0)
            if capture:
                self._capture(
                    route, shadow, job.rows, empty, job.caller,
                    "invalid_input" if invalid else "model_error", None,
                    shadow=True, when=job.time,
                )  # fmt: skip
            return
        predictions, probabilities = answer.predictions, answer.probabilities
        latency = answer.latency_ns
        result: Invocation = {**empty, "predictions": predictions, "probabilities": probabilities}
        bad = non_finite_record(predictions, probabilities, loaded.classification)
        self._shadow_served(route, shadow, "answered" if bad is None else "output_errors", latency)
        if capture:
            self._capture(
                route,
                shadow,
                job.rows,
                result,
                job.caller,
                None if bad is None else "non_finite_output",
                latency if bad is None else None,
                shadow=True,
                when=job.time,
            )

    def _record_shadow_batch(self, jobs: list[ShadowJob], batch: ShadowBatch) -> None:
        """Count a worker's answers to ``jobs`` for the shadow variant (as
        :meth:`_record_shadow` does one by one: one lock for all) and hand the capture lines it
        formatted to the capture writer, which appends them as they are."""
        routes = batch.routes
        with self._counts_lock:
            counters = []
            for route in routes:
                shadow = route.shadow
                found = self._variant_counts.get(shadow.id)
                counters.append(found if found is not None else self._new_counters(route, shadow))
            for index, outcome, latency in zip(
                batch.route_of, batch.outcomes, batch.latencies, strict=True
            ):
                if outcome == ANSWERED:
                    counters[index].answered(latency)
                elif outcome == INVALID_INPUT:
                    counters[index].errors_4xx += 1
                else:
                    counters[index].errors_5xx += 1
        for index, hour, data in batch.lines:
            route = routes[index]
            try:
                self.capture.submit(CaptureLines(route.project_id, route.endpoint.id, hour, data))
            except Exception:  # capture never fails anything
                log.exception("capturing shadow answers of endpoint %s failed", route.endpoint.name)

    # Routing ----------------------------------------------------------------------------------
    def _route(self, project: str, endpoint: str) -> Route | MultiRoute:
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

    def refresh(self, project: str, endpoint: str) -> None:
        """Re-read ``endpoint`` from the database now (after a change made in this process by
        a service without the new route at hand, e.g. a rollout tick)."""
        key = (project, endpoint)
        with self._lock:
            lock = self._refreshing.setdefault(key, threading.Lock())
        with lock:
            self._refresh(key, self._routes.get(key))

    def _refresh(
        self, key: tuple[str, str], current: Route | MultiRoute | None
    ) -> Route | MultiRoute:
        project, name = key
        proj = ProjectService(self._ctx).get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = find_endpoint(conn, proj.id, name)
            if row is None:
                self.forget(project, name)
                endpoint_row(conn, proj, name)  # raises NotFoundError with close names
                raise NotFoundError(f"Endpoint {name!r} does not exist.")  # pragma: no cover
            multi = is_multi_model(row)
            variants = [] if multi else variant_rows(conn, row.id)
            members = model_rows(conn, row.id) if multi else []
        if multi:  # models load on first use, into the endpoint's cache
            mb = row.model_cache_mb or self._ctx.settings.serving_model_cache_mb
            found = build_multi_route(
                proj.id,
                to_info(row, proj.name, (), members),
                members,
                current,
                int(mb * MB),
                time.monotonic(),
            )
            with self._lock:
                self._routes[key] = found
                self._evict()
            return found
        info = to_info(row, proj.name, variants)
        models = (
            {}
            if not isinstance(current, Route)
            else {v.loaded.version_id: v.loaded for v in current.by_name.values()}
        )
        try:
            for variant in variants_of(info):
                if variant.model_version_id not in models:
                    mv = RegistryService(self._ctx).get_version(
                        project, variant.model_name, variant.model_version
                    )
                    models[variant.model_version_id] = self.load(mv)
            route: Route | MultiRoute = build_route(proj.id, info, models, time.monotonic())
        except Exception:
            if current is None:
                raise
            log.exception(
                "endpoint %s: could not load every variant's model; still serving as before",
                name,
            )
            route = replace(current, checked=time.monotonic())
        with self._lock:
            self._routes[key] = route
            self._evict()
        return route

    def _evict(self) -> None:
        """Drop models no route uses (called with ``self._lock`` held)."""
        used = {
            v.loaded.version_id
            for r in self._routes.values()
            if isinstance(r, Route)
            for v in r.by_name.values()
        }
        for version_id in [v for v in self._models if v not in used]:
            del self._models[version_id]


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


def _shadow_inline(job: ShadowJob) -> bool:
    """Whether the shadow answers ``job`` in microseconds: its model has an inline fast path
    and the copy is at most that many plain records."""
    fast = job.route.shadow.loaded.fast
    rows = job.rows
    return fast is not None and type(rows) is list and 0 < len(rows) <= fast.inline_records
