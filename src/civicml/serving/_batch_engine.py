"""The chunk engine of batch jobs: Arrow record batches of a dataset version in, record batches
of predictions out, one chunk in memory at a time.

Each chunk goes through what an endpoint does with a request: the model's validation
(:meth:`LoadedModel.validate <civicml.serving.runtime.LoadedModel.validate>`), the compiled fast
path when the model has one (:meth:`FastPath.predict_raw
<civicml.serving.fastpath.FastPath.predict_raw>`: arrays, no per-row lists), the model's own
pipeline otherwise, and the sandbox for a pickled model (never unpickled here). A non-finite
output fails the chunk as it fails a request (:class:`~civicml.serving.runtime.ModelOutputError`).

Output columns, after the input columns (``join="input"``) or an identifying column
(``join="none"``: ``id_column``, else ``row``, the 0-based input row): ``prediction``; for a
classifier ``probability_<class>`` per class; with ``explain``, SHAP attributions per signature
column (``shap_<column>`` and ``shap_base_value``; per class ``shap_<class>_<column>`` for a
multiclass model), where ``base_value + Σ attributions`` is the model's output.

With ``compute`` naming Ray, chunks go out as Ray tasks (Arrow IPC bytes of the signature's
columns: data, not pickles) at most :data:`RAY_IN_FLIGHT` at a time; each worker loads the model
from the artifact store (verified, once per worker process) and sends back the output columns,
which are joined to the input here, in input order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.core.identity import Principal
from civicml.registry.schemas import ModelVersion
from civicml.serving.batch_schemas import BatchJoin
from civicml.serving.runtime import LoadedModel, ModelOutputError, load_version
from civicml.serving.sandbox import SandboxedModel
from civicml.store.context import Context

__all__ = ["RAY_IN_FLIGHT", "Plan", "Tally", "check_plan", "output_names", "predicted"]

#: Chunks handed to Ray and not yet joined (memory: about this many chunks).
RAY_IN_FLIGHT = 8
#: Models a Ray worker process keeps loaded between chunks.
_WORKER_MODELS = 4


@dataclass(frozen=True, slots=True)
class Plan:
    """What each output row carries."""

    join: BatchJoin
    id_column: str | None
    explain: bool
    #: The input, for messages, e.g. ``"applications v3"``.
    label: str


@dataclass
class Tally:
    """What a stream predicted so far (read once it is consumed)."""

    rows: int = 0
    chunks: int = 0
    workers: set[str] = field(default_factory=set)


def signature_columns(loaded: LoadedModel) -> list[str]:
    """The model's input columns, in signature order."""
    return [str(c["name"]) for c in loaded.model.signature]


def output_names(loaded: LoadedModel, plan: Plan) -> list[str]:
    """Every column a chunk may add (for a clash check before anything runs)."""
    names = ["prediction"]
    if loaded.classification:
        names += [f"probability_{c}" for c in loaded.classes]
    if plan.explain:
        columns = signature_columns(loaded)
        if loaded.classification and len(loaded.classes) > 2:
            prefixes = [f"shap_{c}_" for c in loaded.classes]
        else:
            prefixes = ["shap_"]
        names += [p + c for p in prefixes for c in [*columns, "base_value"]]
    if plan.join is BatchJoin.NONE:
        names.insert(0, plan.id_column or "row")
    return names


def check_plan(loaded: LoadedModel, input_columns: list[str], plan: Plan) -> None:
    """Refuse, before any chunk runs, an input the model cannot read or whose columns clash
    with the outputs.

    Raises:
        InvalidInputError: A signature column or the id column is missing, an output column
            is already an input column, or a pickled model is asked to explain.
    """
    have = set(input_columns)
    missing = [c for c in signature_columns(loaded) if c not in have]
    if missing:
        raise InvalidInputError(
            f"Dataset {plan.label} lacks the model's input columns "
            f"{', '.join(map(repr, missing))}.",
            hint=f"Model {loaded.model_name} v{loaded.version} reads: "
            f"{', '.join(signature_columns(loaded))}.",
        )
    if plan.id_column is not None and plan.id_column not in have:
        raise InvalidInputError(
            f"Dataset {plan.label} has no column {plan.id_column!r} (id_column).",
            hint=f"Its columns: {', '.join(input_columns[:20])}.",
        )
    outputs = output_names(loaded, plan)
    clash = [n for n in outputs if n in have and n != plan.id_column]
    if plan.join is BatchJoin.INPUT and clash:
        raise InvalidInputError(
            f"Dataset {plan.label} already has the output column {clash[0]!r}.",
            hint="Use join='none' (with id_column naming the column that identifies a row), "
            "or drop or rename the column first.",
        )
    if plan.explain and isinstance(loaded.model, SandboxedModel):
        raise InvalidInputError(
            f"Model {loaded.model_name} v{loaded.version} is a pickle run in a sandbox; it "
            "cannot be explained.",
            hint="Run without explain, or train with civicml for explanations.",
        )


def predict_outputs(loaded: LoadedModel, batch: Any, plan: Plan) -> list[tuple[str, Any]]:
    """The output columns (name, Arrow array) of one chunk, in :func:`output_names` order.

    Raises:
        InvalidInputError: A value does not fit the model's signature.
        ModelOutputError: The model answered a non-finite number.
    """
    frame = batch.select(signature_columns(loaded)).to_pandas()
    valid = loaded.validate(frame)
    proba: np.ndarray[Any, Any] | None = None
    labels: Any = None
    if loaded.fast is not None:
        raw = loaded.fast.predict_raw(loaded.fast.from_frame(valid))
        proba, values = (raw, None) if loaded.classification else (None, raw)
    else:
        found, probabilities = loaded.predict(valid)
        if probabilities is not None:
            proba = np.asarray(probabilities, dtype=np.float64)
        values = None if loaded.classification else np.asarray(found, dtype=np.float64)
        labels = found
    _check_finite(loaded, proba if values is None else values, plan, len(frame))
    columns: list[tuple[str, Any]] = []
    if not loaded.classification:
        columns.append(("prediction", pa.array(values, type=pa.float64())))
    else:
        classes = pa.array(loaded.classes)
        if proba is not None:
            columns.append(("prediction", classes.take(pa.array(proba.argmax(axis=1)))))
            columns += [
                (f"probability_{c}", pa.array(proba[:, i])) for i, c in enumerate(loaded.classes)
            ]
        else:  # a sandboxed classifier without predict_proba
            columns.append(("prediction", pa.array(labels, type=classes.type)))
    if plan.explain:
        columns += _shap_columns(loaded, valid)
    return columns


def _check_finite(loaded: LoadedModel, output: Any, plan: Plan, rows: int) -> None:
    if output is None:
        return
    finite = np.isfinite(output)
    if finite.all():
        return
    bad = int(np.flatnonzero(~finite.reshape(rows, -1).all(axis=1))[0])
    raise ModelOutputError(
        f"Model {loaded.model_name} v{loaded.version} returned a non-finite value (NaN or "
        f"infinity) for row {bad} of a chunk of {plan.label}; nothing was written.",
        hint="The input was valid: this model version misbehaves on it. Use another version "
        "and report the model.",
    )


def _shap_columns(loaded: LoadedModel, valid: Any) -> list[tuple[str, Any]]:
    found = loaded.explainer.attributions(valid)
    single = len(found.outputs) == 1
    columns: list[tuple[str, Any]] = []
    for k, label in enumerate(found.outputs):
        prefix = "shap_" if single else f"shap_{label}_"
        for j, name in enumerate(found.columns):
            columns.append((prefix + name, pa.array(found.values[:, j, k])))
        base = np.full(len(valid), float(found.base_values[k]))
        columns.append((prefix + "base_value", pa.array(base)))
    return columns


def joined(batch: Any, outputs: list[tuple[str, Any]], plan: Plan, offset: int) -> Any:
    """The output record batch: the input's columns (or its id) and then the outputs."""
    if plan.join is BatchJoin.INPUT:
        names, arrays = list(batch.schema.names), list(batch.columns)
    elif plan.id_column is not None:
        names, arrays = [plan.id_column], [batch.column(plan.id_column)]
    else:
        rows = np.arange(offset, offset + batch.num_rows, dtype=np.int64)
        names, arrays = ["row"], [pa.array(rows)]
    names += [n for n, _ in outputs]
    arrays += [a for _, a in outputs]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def predicted(
    ctx: Context,
    mv: ModelVersion,
    loaded: LoadedModel,
    batches: Iterator[Any],
    plan: Plan,
    tally: Tally,
    beat: Callable[[Tally], None] | None = None,
) -> Iterator[Any]:
    """The predicted record batches of ``batches``, in order; ``tally`` counts them and
    ``beat`` is called after each (a job's heartbeat)."""
    if ctx.settings.compute == "local":
        yield from _locally(loaded, batches, plan, tally, beat)
        return
    yield from _on_ray(ctx, mv, loaded, batches, plan, tally, beat)


def _locally(
    loaded: LoadedModel,
    batches: Iterator[Any],
    plan: Plan,
    tally: Tally,
    beat: Callable[[Tally], None] | None,
) -> Iterator[Any]:
    offset = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        out = joined(batch, predict_outputs(loaded, batch, plan), plan, offset)
        offset += batch.num_rows
        _count(tally, batch.num_rows, "local", beat)
        yield out


def _count(tally: Tally, rows: int, worker: str, beat: Callable[[Tally], None] | None) -> None:
    tally.rows += rows
    tally.chunks += 1
    tally.workers.add(worker)
    if beat is not None:
        beat(tally)


def _on_ray(
    ctx: Context,
    mv: ModelVersion,
    loaded: LoadedModel,
    batches: Iterator[Any],
    plan: Plan,
    tally: Tally,
    beat: Callable[[Tally], None] | None,
) -> Iterator[Any]:
    from civicml.core.compute import executor_for
    from civicml.store.context import shippable_settings

    executor = executor_for(ctx.settings.compute)
    settings = shippable_settings(ctx.settings)
    columns = signature_columns(loaded)
    pending: deque[tuple[Any, int, Any]] = deque()
    offset = 0

    def finish() -> Any:
        batch, start, future = pending.popleft()
        data, where = future.result()
        outputs = _from_ipc(data)
        pairs = list(zip(outputs.schema.names, outputs.columns, strict=True))
        worker = f"{where.get('node_id', where['host'])}/{where['pid']}"
        _count(tally, batch.num_rows, worker, beat)
        return joined(batch, [(n, c.combine_chunks()) for n, c in pairs], plan, start)

    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            data = _to_ipc(pa.Table.from_batches([batch.select(columns)]))
            future = executor.submit(_remote_chunk, settings, ctx.principal, mv, data, plan)
            pending.append((batch, offset, future))
            offset += batch.num_rows
            if len(pending) >= RAY_IN_FLIGHT:
                yield finish()
        while pending:
            yield finish()
    finally:
        executor.close()


def _remote_chunk(
    settings: dict[str, Any], principal: Principal, mv: ModelVersion, data: bytes, plan: Plan
) -> tuple[bytes, dict[str, Any]]:
    """One chunk on a worker: Arrow IPC of the signature's columns in, of the outputs out."""
    from civicml.core.compute import worker_info
    from civicml.store.context import worker_context

    ctx = worker_context(settings, principal)
    loaded = _worker_model(ctx, mv)
    table = _from_ipc(data)
    outputs = predict_outputs(loaded, table.combine_chunks().to_batches()[0], plan)
    result = pa.Table.from_arrays([a for _, a in outputs], names=[n for n, _ in outputs])
    return _to_ipc(result), worker_info()


_MODELS: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _worker_model(ctx: Context, mv: ModelVersion) -> LoadedModel:
    """The model of ``mv`` in this worker process, loaded (verified) once."""
    key = (str(ctx.settings.home), mv.id)
    with _MODELS_LOCK:
        found = _MODELS.get(key)
        if found is not None:
            _MODELS.move_to_end(key)
            return found
    loaded = load_version(ctx, mv, ctx.settings.home / "cache" / "models")
    with _MODELS_LOCK:
        _MODELS[key] = loaded
        while len(_MODELS) > _WORKER_MODELS:
            _MODELS.popitem(last=False)
    return loaded


def _to_ipc(table: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(data: bytes) -> Any:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
