"""A pipeline execution whose process is killed mid-step is resumed by ``retry``: the steps that
succeeded are reused, the rest run; one whose process is alive is not taken over."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from civicml.core import FrozenClock, Principal, Settings
from civicml.core.errors import ConflictError
from civicml.governance.audit import AuditTrail
from civicml.pipelines import ExecutionStatus, PipelineService, StepStatus
from civicml.store import Context
from tests.conftest import make_context

# The pipeline, as a file both processes import: its second step kills its own process unless
# the marker file exists.
_PIPELINE = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    import civicml as cm

    MARKER = Path(os.environ["CIVICML_TEST_MARKER"])

    @cm.step
    def first(n: int) -> list[int]:
        Path(os.environ["CIVICML_TEST_MARKER"] + ".first").write_text("ran")
        return list(range(n))

    @cm.step
    def second(values: list[int]) -> int:
        if not MARKER.exists():
            os.kill(os.getpid(), signal.SIGKILL)  # as a power cut or the OOM killer would
        return sum(values)

    @cm.pipeline(name="fragile")
    def fragile(n: int = 5) -> None:
        second(first(n))
    """
)


def _load_pipeline(path: Path) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fragile_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fragile


def test_a_killed_execution_is_retried_from_where_it_died(
    tmp_path: Path,
    principal: Principal,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    source = tmp_path / "fragile_pipeline.py"
    source.write_text(_PIPELINE)
    marker = tmp_path / "marker"
    env = {
        **os.environ,
        "CIVICML_HOME": str(home),
        "CIVICML_TEST_MARKER": str(marker),
        "CIVICML_USER": principal.user,
    }
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import civicml as cm; "
        "from fragile_pipeline import fragile; "
        "ml = cm.connect(); ml.create_project('benefits'); "
        "ml.pipelines.run(fragile, project='benefits')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, timeout=180, check=False
    )
    assert done.returncode == -9  # SIGKILL, inside the second step
    assert (tmp_path / "marker.first").read_text() == "ran"

    monkeypatch.setenv("CIVICML_TEST_MARKER", str(marker))
    ctx: Context = make_context(Settings.load(home=home), principal, clock)
    try:
        service = PipelineService(ctx)
        [killed] = service.list("benefits")
        assert killed.status is ExecutionStatus.RUNNING  # nobody was left to say otherwise
        steps = {s.step: s.status for s in killed.steps}
        assert steps == {"first": StepStatus.SUCCEEDED, "second": StepStatus.RUNNING}

        (tmp_path / "marker.first").unlink()
        marker.write_text("go on")
        fragile = _load_pipeline(source)
        done_execution = service.retry(killed.id, fragile)  # type: ignore[arg-type]

        assert done_execution.status is ExecutionStatus.SUCCEEDED
        assert not (tmp_path / "marker.first").exists()  # the first step's output was reused
        after = {s.step: s.status for s in done_execution.steps}
        assert after == {"first": StepStatus.SUCCEEDED, "second": StepStatus.SUCCEEDED}
        actions = [e.action for e in AuditTrail(ctx).list(entity_id=killed.id)]
        assert actions == [
            "pipeline.execution.started",
            "pipeline.execution.abandoned",
            "pipeline.execution.retried",
            "pipeline.execution.succeeded",
        ]
        abandoned = AuditTrail(ctx).list(action="pipeline.execution.abandoned")[0]
        assert "is gone" in str(abandoned.after)
    finally:
        ctx.db.close()


def test_a_running_execution_whose_process_lives_is_not_taken_over(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "fragile_pipeline.py"
    source.write_text(_PIPELINE)
    monkeypatch.setenv("CIVICML_TEST_MARKER", str(tmp_path / "marker"))
    (tmp_path / "marker").write_text("go on")
    fragile = _load_pipeline(source)
    service = PipelineService(ctx)
    from civicml.governance.projects import ProjectService

    ProjectService(ctx).create("benefits")
    execution = service.run(fragile, project="benefits")  # type: ignore[arg-type]
    assert execution.status is ExecutionStatus.SUCCEEDED
    # Pretend it is still running in this (living) process.
    from sqlalchemy import update

    from civicml.pipelines._tables import pipeline_executions

    with ctx.db.write() as uow:
        uow.conn.execute(
            update(pipeline_executions)
            .where(pipeline_executions.c.id == execution.id)
            .values(status="running")
        )
    with pytest.raises(ConflictError, match=r"is still running \(process \d+\)"):
        service.retry(execution.id, fragile)  # type: ignore[arg-type]
    assert service.get(execution.id).status is ExecutionStatus.RUNNING
