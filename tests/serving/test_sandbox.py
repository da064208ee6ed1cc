"""Pickled models served from the isolated worker (civicml.serving.sandbox), and refused without.

The hostile pickles carry their code as attackers do: a ``__reduce__`` that evaluates a string,
so the worker needs nothing from the test suite to run them.
"""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path
from typing import Any

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy import update

from civicml.core import Settings
from civicml.core.identity import Principal
from civicml.registry import ModelVersion, RegistryService
from civicml.registry._tables import model_versions
from civicml.serving import EndpointService, ModelHost
from civicml.serving.sandbox import ModelSandboxError, ModelTimeoutError, isolation_problem
from civicml.store import Context
from civicml.training import UnsafeModelFormatError
from civicml.training._signature import conform, infer_signature
from tests.serving.helpers import PROJECT, records, training_frame

FEATURES = ["age", "income", "region"]

_PROBLEM = isolation_problem()
pytestmark = pytest.mark.skipif(
    _PROBLEM is not None, reason=f"this host cannot isolate a model worker: {_PROBLEM}"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        home=tmp_path / "home",
        pickle_models="sandbox",
        sandbox_memory_mb=1024,
        sandbox_cpu_s=60,
        sandbox_call_timeout_s=4,
    )


class Hostile:
    """Unpickles to whatever ``expression`` evaluates to (the attacker's code)."""

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, (self.expression,))


def model_with(predict: str) -> Hostile:
    """An object whose ``predict(self, X)`` is the lambda body ``predict``."""
    return Hostile(f"type('M', (), {{'predict': lambda self, X: {predict}}})()")


def fitted_pipeline() -> tuple[Pipeline, list[Any]]:
    frame = training_frame()
    signature = infer_signature(frame, FEATURES)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    )
    pipe.fit(conform(frame[FEATURES], signature), frame["eligible"])
    return pipe, list(signature)


def register_pickle(
    ctx: Context,
    tmp_path: Path,
    name: str,
    obj: Any,
    *,
    task: str = "regression",
    signature: list[Any] | None = None,
    classes: list[Any] | None = None,
) -> ModelVersion:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(obj))
    manifest = {
        "format": "civicml.pickle/1",
        "model_file": "model.pkl",
        "task": task,
        "signature": signature or [{"name": "x", "type": "float64", "nullable": False}],
        "classes": classes or [],
    }
    (folder / "civicml-model.json").write_text(json.dumps(manifest))
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted(folder.iterdir())}
    mv = RegistryService(ctx).register(
        PROJECT, name, artifacts=digests, signature=manifest["signature"]
    )
    reviewer = RegistryService(ctx.as_principal(Principal(user="reviewer")))
    return reviewer.approve(PROJECT, name, mv.version, "reviewed")


def deploy(ctx: Context, host: ModelHost, name: str) -> None:
    EndpointService(ctx, host).deploy(PROJECT, name, name, 1)


def test_a_pickled_pipeline_predicts_as_in_process(
    ctx: Context, host: ModelHost, project: str, tmp_path: Path
) -> None:
    pipe, signature = fitted_pipeline()
    register_pickle(
        ctx,
        tmp_path,
        "byo",
        pipe,
        task="classification",
        signature=signature,
        classes=[False, True],
    )
    deploy(ctx, host, "byo")
    rows = records(20)

    answer = host.invoke(project, "byo", rows)

    frame = conform(rows, signature)
    assert answer["predictions"] == pipe.predict(frame).tolist()
    assert answer["probabilities"] == pipe.predict_proba(frame).tolist()
    assert answer["classes"] == [False, True]
    with pytest.raises(Exception, match="cannot be explained"):
        host.invoke(project, "byo", rows, explain=True)


def test_unpickling_cannot_write_a_file(
    ctx: Context, host: ModelHost, project: str, tmp_path: Path
) -> None:
    open_dir = tmp_path / "world-writable"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    target = open_dir / "pwned"
    register_pickle(ctx, tmp_path, "writer", Hostile(f"open({str(target)!r}, 'w').write('x')"))

    with pytest.raises(ModelSandboxError, match="could not be loaded in its sandbox"):
        deploy(ctx, host, "writer")

    assert not target.exists()


def test_predict_cannot_reach_the_network(
    ctx: Context, host: ModelHost, project: str, tmp_path: Path
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        connect = f"__import__('socket').socket().connect(('127.0.0.1', {port}))"
        register_pickle(ctx, tmp_path, "caller", model_with(f"[{connect}] and [0.0] * len(X)"))
        deploy(ctx, host, "caller")

        with pytest.raises(ModelSandboxError, match="failed in its sandbox: OSError"):
            host.invoke(project, "caller", [{"x": 1.0}])

        with pytest.raises(TimeoutError):
            listener.accept()  # nothing arrived


def test_a_call_past_the_time_limit_is_killed_and_the_next_starts_fresh(
    ctx: Context, host: ModelHost, project: str, tmp_path: Path
) -> None:
    looping = "next(filter(None, iter(int, 1))) if X['x'].iloc[0] > 0 else [1.5] * len(X)"
    register_pickle(ctx, tmp_path, "looper", model_with(looping))
    deploy(ctx, host, "looper")

    with pytest.raises(ModelTimeoutError, match="did not answer within 4 s") as caught:
        host.invoke(project, "looper", [{"x": 1.0}])

    assert caught.value.status == 504
    assert host.invoke(project, "looper", [{"x": -1.0}])["predictions"] == [1.5]


def test_allocating_past_the_memory_limit_is_an_error_answer(
    ctx: Context, host: ModelHost, project: str, tmp_path: Path
) -> None:
    register_pickle(ctx, tmp_path, "hog", model_with("bytearray(4 << 30)"))
    deploy(ctx, host, "hog")

    with pytest.raises(ModelSandboxError, match="MemoryError") as caught:
        host.invoke(project, "hog", [{"x": 1.0}])

    assert caught.value.status == 502


def test_a_version_without_a_signature_is_refused(
    ctx: Context, host: ModelHost, project: str, tmp_path: Path
) -> None:
    mv = register_pickle(ctx, tmp_path, "unsigned", model_with("[0.0] * len(X)"))
    with ctx.db.write() as uow:
        uow.conn.execute(
            update(model_versions)
            .where(model_versions.c.id == mv.id)
            .values(manifest_signature=None)
        )

    with pytest.raises(UnsafeModelFormatError, match="not signed at registration"):
        deploy(ctx, host, "unsigned")


def test_by_default_a_pickle_is_refused(
    tmp_path: Path, principal: Principal, clock: Any, project: str, ctx: Context
) -> None:
    from tests.conftest import make_context

    register_pickle(ctx, tmp_path, "plain", model_with("[0.0] * len(X)"))
    default = make_context(Settings.load(home=tmp_path / "home"), principal, clock)
    try:
        with pytest.raises(UnsafeModelFormatError, match="does not load pickled model files"):
            EndpointService(default, ModelHost(default)).deploy(PROJECT, "plain", "plain", 1)
    finally:
        default.db.close()
