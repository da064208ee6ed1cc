"""ModelHost: verified loading, predictions equal the model's own, switches without failures."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from civicml.core import ArtifactIntegrityError, InvalidInputError, NotFoundError
from civicml.registry import RegistryService
from civicml.serving import CaptureService, EndpointService, ModelHost
from civicml.serving.runtime import ModelOutputError
from civicml.store import Context
from civicml.training import TabularModel
from tests.serving.helpers import MODEL, records, register, tamper, train_nan


def test_predictions_equal_the_models_own(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(25)
    result = host.invoke(project, "web", rows)
    model = TabularModel.load(model_dirs[0])
    assert result["predictions"] == model.predict(rows).tolist()
    # The compiled fast path sums the same products in another order: equal to the last bits.
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(rows), rtol=1e-12)
    assert result["classes"] == [False, True] and result["model_version"] == 1
    assert len(set(result["inference_ids"])) == 25
    single = host.invoke(project, "web", rows[0])  # one record, not a list
    assert single["predictions"] == result["predictions"][:1]
    frame = host.invoke(project, "web", pd.DataFrame(rows))
    assert frame["predictions"] == result["predictions"]


def test_a_fresh_host_finds_endpoints_deployed_elsewhere(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx).deploy(project, "web", MODEL, 1)  # another process, no host
    assert host.invoke(project, "web", records(2))["model_version"] == 1
    with pytest.raises(NotFoundError, match="Endpoint 'wbe' does not exist") as caught:
        host.invoke(project, "wbe", records(1))
    assert caught.value.hint == "Did you mean 'web'?"


def test_tampered_files_are_never_loaded(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    mv = register(ctx, model_dirs[0])
    EndpointService(ctx).deploy(project, "web", MODEL, 1)
    tamper(ctx, RegistryService(ctx).get_manifest(mv)["files"]["model.skops"]["digest"])
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        host.invoke(project, "web", records(1))
    assert host.loaded_versions() == []
    assert list((ctx.settings.home / "serving" / "cache").iterdir()) == []


def test_a_tampered_manifest_is_refused(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    mv = register(ctx, model_dirs[0])
    tamper(ctx, mv.artifact_digest)
    with pytest.raises(ArtifactIntegrityError, match=mv.artifact_digest):
        host.load(mv)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("income"), "Input is missing column 'income' (float64) in record 1."),
        (lambda r: r.update(age="old"), "Column 'age' should be int64 but has string values"),
        (lambda r: r.update(incme=3.0), "Input has unexpected column 'incme'"),
    ],
)
def test_input_errors_name_the_column(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    host: ModelHost,
    change: Any,
    message: str,
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(2)
    change(rows[1])
    with pytest.raises(InvalidInputError, match=re.escape(message)) as caught:
        host.invoke(project, "web", rows)
    assert caught.value.status == 422 and caught.value.details


def test_update_under_load_fails_no_request(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    svc = EndpointService(ctx, host)
    register(ctx, model_dirs[0])
    register(ctx, model_dirs[1])
    svc.deploy(project, "web", MODEL, 1, capture_percent=0)
    rows = records(3)
    expected = {
        n: TabularModel.load(d).predict_proba(rows).tolist()
        for n, d in zip((1, 2), model_dirs, strict=True)
    }
    stop = threading.Event()
    switched = threading.Event()
    seen: list[int] = []
    after: list[int] = []  # versions of requests that started once the update had returned
    errors: list[BaseException] = []

    def client() -> None:
        while not stop.is_set():
            try:
                late = switched.is_set()
                result = host.invoke(project, "web", rows)
                np.testing.assert_allclose(
                    result["probabilities"], expected[result["model_version"]], rtol=1e-12
                )
                seen.append(result["model_version"])
                if late:
                    after.append(result["model_version"])
            except BaseException as err:
                errors.append(err)
                return

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    while len(seen) < 50:
        threading.Event().wait(0.005)
    svc.update(project, "web", 2)
    switched.set()
    while len(after) < 50:
        threading.Event().wait(0.005)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    # Requests in flight during the switch finish on v1 (one may finish last, after requests that
    # started later: the order of `seen` is the order they finished); every request started after
    # the update returned: v2.
    assert seen[0] == 1 and 2 in seen
    assert set(after) == {2}
    assert host.invoke(project, "web", rows)["model_version"] == 2
    assert len(host.loaded_versions()) == 1  # v1 was dropped once no route used it


def test_infinite_numbers_are_refused_naming_the_column(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(2)
    rows[1]["income"] = float("-inf")  # what JSON's -Infinity parses to
    message = r"Column 'income' has a non-finite value \(-Infinity\) in record 1"
    with pytest.raises(InvalidInputError, match=message):
        host.invoke(project, "web", rows)
    with pytest.raises(InvalidInputError, match=message):
        host.invoke(project, "web", pd.DataFrame(rows))


@pytest.mark.parametrize(
    ("value", "word"),
    [(float("nan"), "NaN"), (np.float64("nan"), "NaN"), (float("inf"), "Infinity")],
)
@pytest.mark.parametrize("fast", [True, False])
def test_non_finite_numbers_in_records_are_refused_naming_column_and_record(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    host: ModelHost,
    monkeypatch: pytest.MonkeyPatch,
    value: float,
    word: str,
    fast: bool,
) -> None:
    if not fast:
        monkeypatch.setattr("civicml.serving.runtime.compile_fast_path", lambda model: None)
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(3)
    rows[2]["income"] = value  # not null: a NaN is no way to say "unknown" in a record
    message = re.escape(
        f"Column 'income' has a non-finite value ({word}) in record 2; numbers must be finite."
    )
    with pytest.raises(InvalidInputError, match=message) as caught:
        host.invoke(project, "web", rows)
    assert caught.value.status == 422 and "null" in (caught.value.hint or "")
    assert caught.value.details == [
        {"column": "income", "problem": "not_finite", "record": 2, "got": word}
    ]
    assert host.invoke_nowait(project, "web", rows) is None  # the thread path words it
    with pytest.raises(InvalidInputError, match=r"\(" + word + r"\) in record 0"):
        host.invoke(project, "web", rows[2])  # one record
    rows[2]["income"] = None  # null is how a record says "unknown"
    assert len(host.invoke(project, "web", rows)["predictions"]) == 3
    stats = EndpointService(ctx, host).get(project, "web").stats
    assert stats is not None and stats.input_errors == 2 and stats.invocations == 1


def test_nan_in_a_dataframe_is_pandas_missing_value(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(2)
    rows[1]["income"] = None
    frame = pd.DataFrame(rows)
    assert np.isnan(frame["income"][1])
    assert (
        host.invoke(project, "web", frame)["predictions"]
        == host.invoke(project, "web", rows)["predictions"]
    )


@pytest.mark.parametrize(
    ("regression", "fast"), [(False, True), (False, False), (True, True), (True, False)]
)
def test_a_model_answering_nan_fails_the_request_with_502(
    ctx: Context,
    project: str,
    tmp_path: Path,
    host: ModelHost,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    regression: bool,
    fast: bool,
) -> None:
    model_dir = tmp_path / "nan-model"
    train_nan(model_dir, regression=regression)
    mv = register(ctx, model_dir)
    if fast:  # its compiled arithmetic gives NaN as the pipeline does: use it anyway
        monkeypatch.setattr("civicml.serving.fastpath._agrees", lambda fast, model: True)
    assert (host.load(mv).fast is not None) == fast
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(2)
    if regression:
        for row in rows:
            row.pop("income")  # the value it predicts
    with caplog.at_level(logging.ERROR, logger="civicml.serving"):
        with pytest.raises(ModelOutputError, match="returned a non-finite value") as caught:
            host.invoke(project, "web", rows)
        if fast and not regression:  # the event loop's inline path fails it the same way
            with pytest.raises(ModelOutputError, match="for record 0 of 2"):
                host.invoke_nowait(project, "web", rows)
    assert caught.value.status == 502 and caught.value.hint
    assert "eligibility v1" in caught.value.message and "'web'" in caught.value.message
    assert "non-finite value for record 0 of 2" in caplog.text
    assert "nan" not in caplog.text.lower().replace("non-finite", "")  # no values logged
    stats = EndpointService(ctx, host).get(project, "web").stats
    assert stats is not None and stats.output_errors == (2 if fast and not regression else 1)
    assert stats.invocations == 0
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    assert len(captured) == (4 if fast and not regression else 2)
    outputs = {c["captureData"]["endpointOutput"]["data"] for c in captured}
    assert outputs == {'{"error":"non_finite_output"}'}  # the input is kept, no values
    with pytest.raises(InvalidInputError, match="no captured records"):
        CaptureService(ctx, host.capture).to_dataset(project, "web")  # nothing was answered
