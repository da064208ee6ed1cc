"""The Ray executor on a real local Ray cluster (``ray start --head``, 2 CPUs), with the
artifacts in an S3 bucket on a real S3 API server on loopback (moto's server mode): the README's
pipeline as written, tuning trials with median stopping, and batch prediction in chunks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.data.samples import benefit_applications
from tests.conftest import skip_or_fail
from tests.test_snippets import FENCE, README

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
MARKER = "<!-- pipeline-example -->"
# A throwaway cluster on loopback: no usage reports, no token (its GCS listens on 127.0.0.1 only)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def readme_pipeline() -> str:
    """The README's pipeline example: the Python block right after its marker comment."""
    text = README.read_text(encoding="utf-8")
    at = text.index(MARKER)
    found = FENCE.search(text, at)
    assert found is not None and found.group(1) == "python"
    assert text[at + len(MARKER) : found.start()].strip() == "", "the block follows the marker"
    return found.group(2)


def stop_cluster(temp: str, *, grace_s: float = 15.0) -> list[int]:
    """Stop the Ray cluster whose processes name ``temp`` (its --temp-dir): those processes and
    their descendants, by pid — never ``ray stop``, which stops every cluster of the user."""

    def table() -> dict[int, tuple[int, str]]:
        found: dict[int, tuple[int, str]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", encoding="utf-8") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/cmdline", "rb") as cmd:
                    line = cmd.read().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            found[int(name)] = (ppid, line)
        return found

    procs = table()
    ours = {pid for pid, (_, line) in procs.items() if temp in line}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in ours} - ours
        grew = bool(more)
        ours |= more
    ours.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in ours):
            time.sleep(0.2)
    return sorted(ours)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent))
    if found is None:
        skip_or_fail("Ray is not installed: pip install -e '.[dev]'")
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real local Ray cluster with 2 CPUs, started for this module and stopped after it; its
    workers get the S3 test credentials, as a cluster's nodes have their own."""
    ray_cli = _ray_cli()
    temp = tempfile.mkdtemp(prefix="cmray", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    env = {**os.environ, **CREDENTIALS, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--num-cpus=2",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        cwd=temp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real S3 API server (moto) on a free loopback port."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        skip_or_fail("moto's server mode is not installed: pip install -e '.[dev]'")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def on_ray(
    cluster: str, s3: Any, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """CIVICML_COMPUTE=ray on the cluster, artifacts in a new bucket; returns the bucket."""
    bucket = f"civicml-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for key in [k for k in os.environ if k.startswith("CIVICML_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CIVICML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CIVICML_COMPUTE", "ray")
    monkeypatch.setenv("CIVICML_ARTIFACTS", f"s3://{bucket}/ray")
    monkeypatch.setenv("CIVICML_S3_ENDPOINT_URL", endpoint)
    monkeypatch.chdir(tmp_path)
    return bucket


def _objects(s3: Any, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ray/objects/")
    return {o["Key"].rsplit("/", 1)[-1] for page in pages for o in page.get("Contents", [])}


def test_the_readme_pipeline_runs_on_ray_with_s3_artifacts(
    on_ray: str, s3: Any, tmp_path: Path
) -> None:
    benefit_applications(1_500, seed=7).to_csv("applications.csv", index=False)
    namespace: dict[str, Any] = {"__name__": "__readme_pipeline__"}
    try:
        exec(compile(readme_pipeline(), "README.md", "exec"), namespace)  # noqa: S102
        done = namespace["done"]
        team = namespace["team"]
        assert done.status.value == "succeeded"
        proj = team.project("benefits-eligibility")
        ran = [s for s in done.steps if s.status.value == "succeeded"]
        assert {s.step for s in ran} >= {"ingest", "tune", "evaluate_bias", "register", "deploy"}
        for item in ran:  # each step's function ran in a Ray worker, not in this process
            tags = proj.runs.get(item.run_id).tags
            assert tags["civicml.compute.executor"] == "ray", item.step
            assert int(tags["civicml.compute.pid"]) != os.getpid(), item.step
            assert tags["civicml.compute.node_id"], item.step
        tuning = done.step("tune")
        trials = proj.runs.search(f"tags.`tuning.id` = '{tuning.run_id}'")
        trials = [r for r in trials if r.tags.get("tuning.role") == "trial"]
        assert len(trials) == 4
        assert all(r.tags["civicml.compute.executor"] == "ray" for r in trials)
        assert all(int(r.tags["civicml.compute.pid"]) != os.getpid() for r in trials)
        # every value passed between steps, and the model files, are objects in the bucket
        stored = _objects(s3, on_ray)
        for item in ran:
            for output in item.outputs.values():
                assert output["digest"] in stored, item.step
        best = proj.models.versions("eligibility-release")[-1]
        assert best.run_id in {r.id for r in trials}
        assert best.approval_status.value == "Approved"
        assert not (tmp_path / "home" / "artifacts").exists()  # nothing went to local files
        assert proj.endpoints.get("eligibility-release").info.model_version == best.version
    finally:
        for value in namespace.values():
            if isinstance(value, cm.Client):
                value.close()


def test_tuning_trials_run_as_ray_tasks_and_median_stopping_prunes(on_ray: str) -> None:
    from tests.training.test_tune import FAST, SEED_PICKING_THE_BAD_RATE, _frame

    with cm.connect(user="tuner") as ml:
        proj = ml.project("benefits")
        raw = proj.datasets.ingest("applications", _frame())
        rates = cm.train.tune.categorical([0.3, 0.2, 0.25, 1e-6])
        first = cm.train.tune(
            raw,
            target="y",
            project=proj,
            metric="val_log_loss",
            params=FAST,
            space={"learning_rate": rates},
            strategy="grid",
            max_parallel=2,
            register="tuned-on-ray",
        )
        assert len(first.trials) == 4 and first.stopped == "grid_exhausted"
        assert first.model_version.run_id == first.best_run_id
        # one trial at a time, so each sees every earlier trial: the bad rate is pruned
        later = cm.train.tune(
            raw,
            target="y",
            project=proj,
            metric="val_log_loss",
            params=FAST,
            space={"learning_rate": rates},
            strategy="random",
            seed=SEED_PICKING_THE_BAD_RATE,
            early_stopping="median",
            max_trials=5,
            warm_start=first.tuning_id,
        )
        assert [t.params["learning_rate"] for t in later.trials[:3]] == [0.2, 0.25, 0.3]
        assert "pruned" in [t.state for t in later.trials[3:]]
        for trial in [*first.trials, *later.trials]:
            run = proj.runs.get(trial.run_id)
            assert run.tags["civicml.compute.executor"] == "ray"
            assert int(run.tags["civicml.compute.pid"]) != os.getpid()
            expected = {"complete": "finished", "pruned": "killed"}[trial.state]
            assert run.status.value == expected and run.tags["tuning.state"] == trial.state
        pruned = next(t for t in later.trials if t.state == "pruned")
        steps = [m.step for m in ml._backend.metric_history(pruned.run_id, "val_log_loss")]
        assert steps == sorted(steps) and steps[-1] == pruned.last_step  # reported, then pruned


def test_batch_prediction_runs_in_chunks_on_ray(on_ray: str) -> None:
    from civicml.pipelines import steps as st
    from civicml.pipelines.values import load_value

    frame = benefit_applications(1_000, seed=3)
    frame_path = "batch-input.csv"
    frame.to_csv(frame_path, index=False)

    @cm.pipeline(name="batch-scoring")
    def scoring(rows: int = 300) -> None:
        data = st.ingest("applications", frame_path)
        mv = st.register("batch-model", st.train(data, "eligible"))
        st.batch_predict(mv, data, chunk_rows=rows)

    with cm.connect() as ml:
        ml.project("benefits")
        done = ml.pipelines.run(scoring, project="benefits")
        assert done.status.value == "succeeded", [s.error for s in done.steps]
        step = done.step("batch_predict")
        tags = ml.project("benefits").runs.get(step.run_id).tags
        assert tags["civicml.compute.batch_chunks"] == "4"  # 1,000 rows in chunks of 300
        workers = json.loads(tags["civicml.compute.batch_workers"])
        assert workers and all(not w.endswith(f"/{os.getpid()}") for w in workers)
        ctx = ml._backend.ctx
        scored = load_value(ctx.artifacts, _stored(step.outputs["output"]))
        assert len(scored) == 1_000 and scored.index.is_unique
        mv = ml.project("benefits").models.versions("batch-model")[-1]
        expected = st._predict_frame(ctx, mv, scored[list(frame.columns)], "the same rows")
        assert scored["prediction"].tolist() == expected["prediction"].tolist()
        assert scored["probability_1"].round(9).tolist() == (
            expected["probability_1"].round(9).tolist()
        )


def _stored(doc: dict[str, Any]) -> Any:
    from civicml.pipelines.values import StoredValue

    return StoredValue.from_dict(doc)
