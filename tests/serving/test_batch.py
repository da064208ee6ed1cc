"""Batch prediction jobs (embedded): a dataset version in, a predictions version out — equal to a
bare ``predict`` over the same rows, chunked, joined or not, explained, with lineage, refused
when the input or caller is wrong, and crash safe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import civicml as cm
from civicml.core import Principal
from civicml.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.data.service import DatasetService
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.pipelines import steps
from civicml.registry import ModelVersion, RegistryService
from civicml.serving import _batch_engine
from civicml.serving.batch import BatchService
from civicml.serving.batch_schemas import BatchJobCreate, BatchJobFailedError, BatchJobStatus
from civicml.store import Context
from civicml.training import TabularModel, fit_tabular
from tests.serving.helpers import PROJECT, training_frame

ROWS = 700


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved models: a linear one, two tree ones and a multiclass one."""
    root = tmp_path_factory.mktemp("batch-models")
    data = training_frame(300)
    found = {}
    for algorithm in ("logistic", "random_forest", "lightgbm"):
        params = {"n_estimators": 20} if algorithm != "logistic" else None
        fit_tabular(data, "eligible", algorithm=algorithm, params=params, seed=0).save(
            root / algorithm
        )
        found[algorithm] = root / algorithm
    multi = data.assign(band=pd.cut(data["income"], 3, labels=["low", "mid", "high"]).astype(str))
    fit_tabular(multi.drop(columns=["eligible", "income"]), "band", seed=0).save(root / "multi")
    found["multi"] = root / "multi"
    return found


def _register(ctx: Context, directory: Path, name: str) -> ModelVersion:
    model = TabularModel.load(directory)
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted(directory.iterdir())}
    return RegistryService(ctx).register(
        PROJECT, name, artifacts=digests, signature=model.signature
    )


@pytest.fixture
def inputs(ctx: Context, project: str) -> pd.DataFrame:
    frame = training_frame(ROWS, seed=5)
    frame.loc[3, "income"] = None  # a missing value goes through the model's imputer
    DatasetService(ctx).ingest(project, "applications", frame, progress=False)
    return frame


def _job(**values: Any) -> BatchJobCreate:
    base: dict[str, Any] = {
        "model": "linear",
        "model_version": 1,
        "input_dataset": "applications",
        "output_dataset": "scored",
        "chunk_rows": 128,
    }
    return BatchJobCreate.model_validate({**base, **values})


def _read(ctx: Context, name: str, version: int) -> pd.DataFrame:
    datasets = DatasetService(ctx)
    return datasets.to_pandas(datasets.get_version(PROJECT, name, version))


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_output_equals_a_bare_predict_over_the_same_rows(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path], algorithm: str
) -> None:
    _register(ctx, models[algorithm], "linear")
    job = BatchService(ctx).run(PROJECT, _job())
    assert job.status is BatchJobStatus.SUCCEEDED
    assert (job.rows, job.chunks, job.output_version) == (ROWS, 6, 1)  # 700 rows by 128
    assert job.executor == "local" and job.error is None and job.started_at is not None
    out = _read(ctx, "scored", 1)
    model = TabularModel.load(models[algorithm])
    features = inputs.drop(columns="eligible")
    pd.testing.assert_frame_equal(out[list(inputs.columns)], inputs, check_dtype=False)
    assert out["prediction"].tolist() == model.predict(features).tolist()
    proba = out[["probability_False", "probability_True"]].to_numpy()
    np.testing.assert_allclose(proba, model.predict_proba(features), rtol=0, atol=1e-12)


def test_join_none_keeps_only_an_id_and_the_outputs(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    _register(ctx, models["logistic"], "linear")
    service = BatchService(ctx)
    rows = service.run(PROJECT, _job(join="none", output_dataset="by-row"))
    out = _read(ctx, "by-row", rows.output_version or 0)
    assert list(out.columns) == ["row", "prediction", "probability_False", "probability_True"]
    assert out["row"].tolist() == list(range(ROWS))
    by_age = service.run(PROJECT, _job(join="none", id_column="age", output_dataset="by-age"))
    out = _read(ctx, "by-age", by_age.output_version or 0)
    assert out.columns[0] == "age" and out["age"].tolist() == inputs["age"].tolist()
    assert by_age.id_column == "age"


def test_explain_adds_shap_columns_that_add_up_to_the_model_output(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    _register(ctx, models["logistic"], "linear")
    _register(ctx, models["multi"], "bands")
    service = BatchService(ctx)
    job = service.run(PROJECT, _job(explain=True, join="none"))
    out = _read(ctx, "scored", job.output_version or 0)
    shap = ["shap_age", "shap_income", "shap_region"]
    assert [c for c in out.columns if c.startswith("shap_")] == [*shap, "shap_base_value"]
    p = out["probability_True"].to_numpy()
    margin = out[shap].sum(axis=1).to_numpy() + out["shap_base_value"].to_numpy()
    np.testing.assert_allclose(margin, np.log(p / (1 - p)), atol=1e-6)  # log-odds
    bands = service.run(PROJECT, _job(model="bands", explain=True, output_dataset="bands"))
    out = _read(ctx, "bands", bands.output_version or 0)
    for band in ("high", "low", "mid"):
        assert {f"shap_{band}_age", f"shap_{band}_region", f"shap_{band}_base_value"} <= set(
            out.columns
        )
    assert set(out["prediction"]) <= {"low", "mid", "high"}


def test_lineage_and_audit_link_model_job_input_and_output(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    mv = _register(ctx, models["logistic"], "linear")
    job = BatchService(ctx).run(PROJECT, _job())
    graph = LineageService(ctx).query("model_version", mv.id, direction="downstream", max_depth=5)
    kinds = {(n.kind, n.ref) for n in graph.nodes}
    assert ("batch_job", job.id) in kinds
    assert ("dataset_version", job.output_version_id) in kinds
    upstream = LineageService(ctx).query(
        "dataset_version", str(job.output_version_id), direction="upstream", max_depth=5
    )
    assert ("dataset_version", job.input_version_id) in {(n.kind, n.ref) for n in upstream.nodes}
    actions = [e.action for e in AuditTrail(ctx).list(entity_kind="batch_job", entity_id=job.id)]
    assert actions == ["batch_job.created", "batch_job.succeeded"]
    assert [j.id for j in BatchService(ctx).list(PROJECT)] == [job.id]
    assert BatchService(ctx).get(PROJECT, job.id) == job


def test_bad_input_is_refused_before_anything_runs(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    _register(ctx, models["logistic"], "linear")
    service = BatchService(ctx)
    with pytest.raises(NotFoundError, match="linaer"):
        service.create(PROJECT, _job(model="linaer"))
    with pytest.raises(NotFoundError):
        service.create(PROJECT, _job(model_version=7))
    with pytest.raises(NotFoundError, match="aplications"):
        service.create(PROJECT, _job(input_dataset="aplications"))
    with pytest.raises(InvalidInputError, match="id_column only applies"):
        service.create(PROJECT, _job(id_column="age"))
    with pytest.raises(InvalidInputError, match="no column 'nope'"):
        service.create(PROJECT, _job(join="none", id_column="nope"))
    with pytest.raises(ValidationError):
        _job(chunk_rows=0)
    with pytest.raises(InvalidInputError, match="must not be the input dataset"):
        service.create(PROJECT, _job(output_dataset="Applications"))
    narrow = inputs.drop(columns=["region"])
    DatasetService(ctx).ingest(PROJECT, "narrow", narrow, progress=False)
    with pytest.raises(InvalidInputError, match="lacks the model's input columns 'region'"):
        service.create(PROJECT, _job(input_dataset="narrow"))
    scored = inputs.assign(prediction=1)
    DatasetService(ctx).ingest(PROJECT, "scored-before", scored, progress=False)
    with pytest.raises(InvalidInputError, match="already has the output column"):
        service.create(PROJECT, _job(input_dataset="scored-before"))
    assert service.list(PROJECT) == []


def test_a_caller_without_permission_is_refused(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    _register(ctx, models["logistic"], "linear")
    job = BatchService(ctx).run(PROJECT, _job())
    viewer = BatchService(ctx.as_principal(Principal(user="val", roles=frozenset({"viewer"}))))
    with pytest.raises(PermissionDeniedError, match=r"datasets\.write"):
        viewer.create(PROJECT, _job())
    assert [j.id for j in viewer.list(PROJECT)] == [job.id]  # reading takes datasets.read
    outsider = BatchService(ctx.as_principal(Principal(user="eve", roles=frozenset())))
    with pytest.raises(NotFoundError):
        outsider.list(PROJECT)


def test_a_failing_chunk_fails_the_job_and_writes_nothing(
    ctx: Context,
    inputs: pd.DataFrame,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _register(ctx, models["logistic"], "linear")
    real = _batch_engine.predict_outputs
    calls = []

    def third_fails(loaded: Any, batch: Any, plan: Any) -> Any:
        calls.append(batch.num_rows)
        if len(calls) == 3:
            raise InvalidInputError("Column 'income' holds an infinity in record 5.")
        return real(loaded, batch, plan)

    monkeypatch.setattr(_batch_engine, "predict_outputs", third_fails)
    service = BatchService(ctx)
    with pytest.raises(BatchJobFailedError, match="infinity"):
        service.run(PROJECT, _job())
    [job] = service.list(PROJECT)
    assert job.status is BatchJobStatus.FAILED and "infinity" in (job.error or "")
    assert job.output_version is None
    with pytest.raises(NotFoundError):
        DatasetService(ctx).get_dataset(PROJECT, "scored")
    assert not list((ctx.artifacts.root / "tmp").glob("*.part"))
    with pytest.raises(ConflictError, match="only a queued job"):
        service.execute(PROJECT, job.id)


def test_a_killed_job_is_marked_failed_and_leaves_no_output(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    _register(ctx, models["logistic"], "linear")
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from civicml.core import Principal, Settings
        from civicml.data import ingest
        from civicml.serving import _batch_engine
        from civicml.serving.batch import BatchService
        from civicml.serving.batch_schemas import BatchJobCreate
        from civicml.store import Context, MetadataStore
        from civicml.store.artifacts import artifact_store_for

        settings = Settings.load(home={str(ctx.settings.home)!r})
        ctx = Context(
            db=MetadataStore(settings.database_url),
            artifacts=artifact_store_for(settings),
            principal=Principal(user="alice", roles=frozenset({{"admin"}})),
            settings=settings,
        )
        real, calls = _batch_engine.predict_outputs, []
        ingest.ROW_GROUP_ROWS = 128  # row groups of two chunks: the writer starts early
        tmp = ctx.artifacts.root / "tmp"

        def killed(loaded, batch, plan):
            calls.append(1)
            if len(calls) == 4:  # a row group of three chunks is in the output's temp file
                for _ in range(1000):
                    if any(tmp.glob("*.part")):
                        break
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(loaded, batch, plan)

        _batch_engine.predict_outputs = killed
        request = BatchJobCreate(
            model="linear", model_version=1, input_dataset="applications",
            output_dataset="scored", chunk_rows=64,
        )
        BatchService(ctx).run("{PROJECT}", request)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == -9, done.stderr
    with ctx.db.read() as conn:
        from sqlalchemy import select

        from civicml.serving._tables import batch_jobs

        row = conn.execute(select(batch_jobs.c.status, batch_jobs.c.pid)).one()
    assert row.status == "running" and row.pid != os.getpid()
    from civicml.server.app import recover_abandoned_work  # what a server does at start

    _, failed = recover_abandoned_work(ctx)
    [job] = BatchService(ctx).list(PROJECT)
    assert failed == [job.id]
    assert job.status is BatchJobStatus.FAILED
    assert job.error == f"abandoned: process {row.pid} on {os.uname().nodename} is gone"
    with pytest.raises(NotFoundError):
        DatasetService(ctx).get_dataset(PROJECT, "scored")
    assert ctx.artifacts.recover() >= 1  # the dead job's temp file
    events = [e.action for e in AuditTrail(ctx).list(entity_kind="batch_job", entity_id=job.id)]
    assert events == ["batch_job.created", "batch_job.failed"]


def test_chunks_go_out_through_the_remote_executor_in_order(
    ctx: Context,
    inputs: pd.DataFrame,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Ray path (chunks as Arrow IPC bytes to a worker that loads the model itself), run
    on threads: the output equals the local path's."""
    from civicml.core import compute

    _register(ctx, models["lightgbm"], "linear")
    local = BatchService(ctx).run(PROJECT, _job(output_dataset="here"))
    monkeypatch.setattr(compute, "executor_for", lambda *a, **k: compute.LocalExecutor(2))
    remote_ctx = Context(
        db=ctx.db,
        artifacts=ctx.artifacts,
        principal=ctx.principal,
        settings=ctx.settings.model_copy(update={"compute": "ray"}),
        clock=ctx.clock,
    )
    job = BatchService(remote_ctx).run(PROJECT, _job(output_dataset="there", chunk_rows=50))
    assert job.executor == "ray" and job.chunks == 14
    pd.testing.assert_frame_equal(
        _read(ctx, "there", 1), _read(ctx, "here", local.output_version or 0)
    )


@cm.step(cache=False)
def model_version_step(name: str) -> Any:
    from civicml.pipelines import current

    here = current()
    return RegistryService(here.ctx).get_version(here.project, name, 1)


@cm.step(cache=False)
def input_version_step(name: str) -> Any:
    from civicml.pipelines import current

    here = current()
    return DatasetService(here.ctx).get_version(here.project, name)


@cm.pipeline(name="batch-job-scoring")
def _scoring(model: str = "linear") -> None:
    steps.batch_predict(
        model_version_step(model),
        input_version_step("applications"),
        chunk_rows=100,
        output="piped",
    )


def test_the_pipeline_step_runs_a_batch_job_when_given_an_output(
    ctx: Context, inputs: pd.DataFrame, models: dict[str, Path]
) -> None:
    _register(ctx, models["logistic"], "linear")
    with cm.connect(home=ctx.settings.home, user="alice") as ml:
        done = ml.pipelines.run(_scoring, project=PROJECT)
        assert done.status.value == "succeeded", [s.error for s in done.steps]
        run = ml.project(PROJECT).runs.get(done.step("batch_predict").run_id)
    [job] = BatchService(ctx).list(PROJECT)
    assert run.tags["civicml.batch_job"] == job.id
    assert (job.output_dataset, job.rows, job.chunks) == ("piped", ROWS, 7)
    assert len(_read(ctx, "piped", 1)) == ROWS


def test_a_job_on_postgresql(
    pg_url: str, tmp_path: Path, models: dict[str, Path], principal: Principal, clock: Any
) -> None:
    from civicml.core import Settings
    from civicml.governance.projects import ProjectService
    from tests.conftest import make_context

    pg = make_context(Settings.load(home=tmp_path / "pg", db_url=pg_url), principal, clock)
    try:
        ProjectService(pg).create(PROJECT)
        DatasetService(pg).ingest(PROJECT, "applications", training_frame(300), progress=False)
        _register(pg, models["random_forest"], "linear")
        job = BatchService(pg).run(PROJECT, _job(explain=True))
        assert (job.status, job.rows, job.chunks) == (BatchJobStatus.SUCCEEDED, 300, 3)
        assert [j.id for j in BatchService(pg).list(PROJECT, status=BatchJobStatus.SUCCEEDED)] == [
            job.id
        ]
        assert "shap_income" in _read(pg, "scored", 1).columns
    finally:
        pg.db.close()
