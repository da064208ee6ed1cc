"""The pipeline DSL: ``@step`` functions composed in a ``@pipeline`` function.

Calling a step inside a pipeline function runs nothing: it records a node in the graph and returns
an :class:`OutputRef` (or a tuple of them, for ``outputs=("a", "b")``) that later steps take as
arguments. A pipeline's parameters are references too (:class:`ParamRef`), so the graph — and
the pipeline's content version — does not depend on their values. Outside a pipeline a step is
the plain function.

This module imports nothing heavy: ``import civicml`` stays fast.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import hashlib
import inspect
import json
import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import CodeType
from typing import Any, overload

from civicml.core.errors import InvalidInputError
from civicml.core.names import validate_name

__all__ = [
    "BoundPipeline",
    "Graph",
    "Node",
    "OutputRef",
    "ParamRef",
    "Pipeline",
    "Step",
    "StepContext",
    "StepWaiting",
    "canonical_json",
    "current",
    "pipeline",
    "step",
]

_MAX_PIPELINE_NAME = 119  # its runs go to the experiment "pipeline.<name>" (128 at most)


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def is_jsonable(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is plain JSON data (dict with str keys, list, str, finite number...)."""
    if depth > 64:
        return False
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(is_jsonable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_jsonable(v, depth + 1) for k, v in value.items())
    return False


@dataclass(frozen=True, slots=True)
class OutputRef:
    """A reference to one output of a step in the graph being built (not its value)."""

    node: str
    output: str

    def __bool__(self) -> bool:
        raise InvalidInputError(
            f"The output {self.output!r} of step {self.node!r} has no value while the "
            "pipeline's graph is built.",
            hint="Pass it to another step; branch on values inside a step.",
        )


@dataclass(frozen=True, slots=True)
class ParamRef:
    """A reference to a pipeline parameter; its value is known only when the pipeline runs."""

    name: str

    def __bool__(self) -> bool:
        raise InvalidInputError(
            f"The pipeline parameter {self.name!r} has no value while the graph is built.",
            hint="Pass it to a step and use its value inside the step.",
        )


def code_hash(fn: Callable[..., Any]) -> str:
    """SHA-256 of a function's normalised source: parsed and unparsed, so formatting and
    comments do not count. Functions without source (defined in ``exec``) hash their code."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        text = ast.unparse(ast.parse(source))
    except (OSError, TypeError, SyntaxError):
        text = _code_text(fn.__code__)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _code_text(code: CodeType) -> str:
    consts = [_code_text(c) if isinstance(c, CodeType) else repr(c) for c in code.co_consts]
    return repr((code.co_code.hex(), consts, code.co_names, code.co_varnames))


class Step:
    """A function made a pipeline step by :func:`step`.

    Called inside a ``@pipeline`` function it adds a node and returns output references; called
    anywhere else it is the plain function.
    """

    #: A gate (``civicml.pipelines.steps.condition``): when it returns ``False`` the steps that
    #: take its output, and what depends on them, are skipped and the execution still succeeds.
    gate: bool = False

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        outputs: tuple[str, ...] = ("output",),
        cache: bool = True,
        cache_expiry_s: float | None = None,
        compress: bool = False,
    ) -> None:
        self.fn = fn
        self.name = validate_name("Step", name or fn.__name__)
        if isinstance(outputs, str) or not outputs or len(set(outputs)) != len(outputs):
            raise InvalidInputError(
                f"Step {self.name!r}: outputs {outputs!r} must be distinct names.",
                hint='Declare several outputs as a tuple: outputs=("train", "test").',
            )
        for output in outputs:
            validate_name("Output", output)
        self.outputs = tuple(outputs)
        self.cache = cache
        if cache_expiry_s is not None and not cache_expiry_s > 0:
            raise InvalidInputError(
                f"Step {self.name!r}: cache_expiry_s must be positive, not {cache_expiry_s!r}.",
                hint="Leave it None for a cache that never expires.",
            )
        self.cache_expiry_s = cache_expiry_s
        self.compress = bool(compress)  # how its DataFrames are stored, not what they are
        self.signature = inspect.signature(fn)
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise InvalidInputError(
                    f"Step {self.name!r} takes *{param.name}; a step's inputs must be named.",
                    hint="Give the step one named parameter per input.",
                )
        self.code = code_hash(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<step {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _BUILDER.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add(self, args, kwargs)


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    outputs: tuple[str, ...] = ("output",),
    cache: bool = True,
    cache_expiry_s: float | None = None,
    compress: bool = False,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    outputs: tuple[str, ...] = ("output",),
    cache: bool = True,
    cache_expiry_s: float | None = None,
    compress: bool = False,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step: ``@step`` or ``@step(cache=False, outputs=("a", "b"))``.

    Args:
        name: The step's name (default: the function's name).
        outputs: Names of its outputs; more than one means the function returns a tuple.
        cache: Reuse the outputs of an earlier successful execution with the same cache key.
        cache_expiry_s: Reuse only executions that ended at most this many seconds ago.
        compress: Store the DataFrames it returns zstd-compressed (smaller, slower to write);
            by default they are stored as uncompressed Arrow IPC, the fastest to hand on.
            Neither the cache key nor the pipeline's version depends on it.
    """

    def wrap(func: Callable[..., Any]) -> Step:
        return Step(
            func,
            name=name,
            outputs=outputs,
            cache=cache,
            cache_expiry_s=cache_expiry_s,
            compress=compress,
        )

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True, slots=True)
class Node:
    """One call of a step in the graph: its inputs are references, parameters or JSON values."""

    name: str
    step: Step
    inputs: dict[str, OutputRef | ParamRef | Any]

    def upstream(self) -> set[str]:
        return {v.node for v in self.inputs.values() if isinstance(v, OutputRef)}

    def describe(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for arg, value in self.inputs.items():
            if isinstance(value, OutputRef):
                inputs[arg] = {"ref": value.node, "output": value.output}
            elif isinstance(value, ParamRef):
                inputs[arg] = {"param": value.name}
            else:
                inputs[arg] = {"value": value}
        return {
            "name": self.name,
            "step": self.step.name,
            "code": self.step.code,
            "outputs": list(self.step.outputs),
            "cache": self.step.cache,
            "cache_expiry_s": self.step.cache_expiry_s,
            "inputs": inputs,
        }


@dataclass(slots=True)
class Graph:
    """The nodes of a pipeline in the order they were added (a topological order)."""

    name: str
    params: dict[str, Any]
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, step_: Step, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = step_.signature.bind(*args, **kwargs)
        except TypeError as err:
            raise InvalidInputError(
                f"Step {step_.name!r} was called with arguments that do not fit it: {err}.",
                hint=f"Its signature is {step_.name}{step_.signature}.",
            ) from err
        inputs: dict[str, Any] = {}
        for arg, value in bound.arguments.items():
            if isinstance(value, OutputRef | ParamRef):
                if isinstance(value, OutputRef) and value.node not in self.nodes:
                    raise InvalidInputError(
                        f"Step {step_.name!r} got an output of {value.node!r}, a step of "
                        "another pipeline.",
                        hint="Pass only outputs of steps called in the same pipeline function.",
                    )
                inputs[arg] = value
            elif is_jsonable(value):
                inputs[arg] = json.loads(canonical_json(value))
            else:
                raise InvalidInputError(
                    f"Step {step_.name!r} got a {type(value).__qualname__} for {arg!r}; a "
                    "constant passed to a step must be JSON data.",
                    hint="Pass JSON-able values, pipeline parameters or outputs of other steps.",
                )
        name = step_.name
        counter = 2
        while name in self.nodes:
            name = f"{step_.name}-{counter}"
            counter += 1
        self.nodes[name] = Node(name, step_, inputs)
        refs = tuple(OutputRef(name, output) for output in step_.outputs)
        return refs[0] if len(refs) == 1 else refs

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "steps": [node.describe() for node in self.nodes.values()],
        }

    def version(self) -> str:
        """The content hash of the graph: its steps, their code, edges and parameters."""
        return hashlib.sha256(canonical_json(self.describe())).hexdigest()

    def downstream(self, roots: set[str]) -> set[str]:
        """``roots`` and every node that depends on one of them."""
        found = set(roots)
        for node in self.nodes.values():  # insertion order is topological
            if node.upstream() & found:
                found.add(node.name)
        return found


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a running step can know of its execution (see :func:`current`)."""

    ctx: Any  #: the :class:`civicml.store.context.Context` the execution runs with
    project: str
    execution_id: str
    step: str
    run_id: str  #: the step's own tracking run
    waiting_since: datetime | None = None  #: when a callback step began waiting, if it did


class StepWaiting(Exception):
    """Raised by a callback step to pause: the step ends ``waiting`` and the execution pauses
    until ``PipelineService.resume(execution_id)`` runs the step again."""


_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "civicml_pipeline_step", default=None
)


def current() -> StepContext:
    """The execution of the step that is running: its civicml context, project, execution id,
    step name and run id.

    Raises:
        InvalidInputError: Called outside a running pipeline step.
    """
    found = _CURRENT.get()
    if found is None:
        raise InvalidInputError(
            "civicml.pipelines.current() was called outside a running pipeline step.",
            hint="Call it inside a @step function run by ml.pipelines.run(...).",
        )
    return found


_BUILDER: contextvars.ContextVar[Graph | None] = contextvars.ContextVar(
    "civicml_pipeline_builder", default=None
)


class Pipeline:
    """A function made a pipeline by :func:`pipeline`; call it with parameter overrides to get
    a :class:`BoundPipeline` to run."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        self.fn = fn
        self.name = validate_name("Pipeline", name or fn.__name__)
        if len(self.name) > _MAX_PIPELINE_NAME:
            raise InvalidInputError(
                f"Pipeline name {self.name!r} is longer than {_MAX_PIPELINE_NAME} characters.",
                hint="Choose a shorter name.",
            )
        self.params: dict[str, Any] = {}
        self.required: list[str] = []
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise InvalidInputError(
                    f"Pipeline {self.name!r} takes *{param.name}; parameters must be named.",
                    hint="Give the pipeline function one named parameter per setting.",
                )
            if param.default is inspect.Parameter.empty:
                self.required.append(param.name)
            elif is_jsonable(param.default):
                self.params[param.name] = json.loads(canonical_json(param.default))
            else:
                raise InvalidInputError(
                    f"Pipeline {self.name!r}: the default of {param.name!r} is a "
                    f"{type(param.default).__qualname__}, not JSON data.",
                    hint="Give parameters JSON-able defaults (numbers, strings, lists, dicts).",
                )
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"

    def __call__(self, **overrides: Any) -> BoundPipeline:
        return BoundPipeline(self, self.resolve(overrides))

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The parameter values of a run: the defaults with ``overrides`` applied."""
        known = [*self.required, *self.params]
        values = dict(self.params)
        for key, value in overrides.items():
            if key not in known:
                import difflib

                close = difflib.get_close_matches(key, known, n=1)
                raise InvalidInputError(
                    f"Pipeline {self.name!r} has no parameter {key!r}.",
                    hint=f"Did you mean {close[0]!r}?"
                    if close
                    else f"Its parameters are: {', '.join(known) or 'none'}.",
                )
            if not is_jsonable(value):
                raise InvalidInputError(
                    f"Pipeline {self.name!r}: parameter {key!r} is a "
                    f"{type(value).__qualname__}, not JSON data.",
                    hint="Pass numbers, strings, booleans, lists or dicts.",
                )
            values[key] = json.loads(canonical_json(value))
        missing = [key for key in self.required if key not in values]
        if missing:
            raise InvalidInputError(
                f"Pipeline {self.name!r} needs a value for {', '.join(map(repr, missing))}.",
                hint="Pass it in params={...}.",
            )
        return values

    def graph(self) -> Graph:
        """Build the graph by calling the function with parameter references (runs no step)."""
        names = [*self.required, *self.params]
        graph = Graph(self.name, {**dict.fromkeys(self.required), **self.params})
        token = _BUILDER.set(graph)
        try:
            self.fn(**{key: ParamRef(key) for key in names})
        finally:
            _BUILDER.reset(token)
        if not graph.nodes:
            raise InvalidInputError(
                f"Pipeline {self.name!r} calls no step.",
                hint="Decorate the functions it calls with @step.",
            )
        return graph


@dataclass(frozen=True, slots=True)
class BoundPipeline:
    """A pipeline with the parameter values of one run."""

    pipeline: Pipeline
    params: dict[str, Any]


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...


@overload
def pipeline(
    fn: None = None, /, *, name: str | None = None
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Make a function a pipeline: ``@pipeline`` or ``@pipeline(name="eligibility")``.

    Its parameters (with JSON-able defaults) are the pipeline's parameters; inside it, call
    ``@step`` functions and pass their outputs on. Nothing runs until
    :meth:`civicml.pipelines.PipelineService.run`.
    """

    def wrap(func: Callable[..., Any]) -> Pipeline:
        return Pipeline(func, name=name)

    return wrap(fn) if fn is not None else wrap
