"""The ready-made steps: ingest → train → evaluate_bias → condition → register →
wait_for_approval (the callback pattern) → deploy, and batch_predict, fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.core import Settings
from civicml.core.errors import CivicMLError, InvalidInputError
from civicml.data.samples import benefit_applications
from civicml.pipelines import ExecutionStatus, StepStatus, current
from civicml.pipelines import steps as st
from civicml.pipelines.service import PipelineService
from civicml.pipelines.values import StoredValue, load_value


@cm.pipeline(name="eligibility-release")
def release(
    source: str = "",
    min_accuracy: float = 0.5,
    endpoint: str = "eligibility",
) -> None:
    data = st.ingest("applications", source)
    trained = st.train(data, "eligible", algorithm="logistic")
    bias = st.evaluate_bias(data, None, "eligible", 1, ["sex"])
    good = st.condition(trained, ">=", min_accuracy, key="metrics.val_accuracy")
    mv = st.register("eligibility", st.when(trained, good_model(good, bias)))
    approved = st.wait_for_approval(mv, timeout_s=3600)
    st.deploy(endpoint, approved)


@cm.step
def good_model(good: bool, bias: dict[str, Any]) -> bool:
    return good and bool(bias["evaluation_id"])  # after the bias report was stored


@cm.pipeline(name="scoring")
def scoring(source: str = "", model: str = "eligibility", version: int = 1) -> None:
    st.batch_predict(find_version(model, version), st.ingest("to-score", source))


@cm.step(cache=False)
def find_version(model: str, version: int) -> Any:
    from civicml.registry.service import RegistryService

    here = current()
    return RegistryService(here.ctx).get_version(here.project, model, version)


@cm.pipeline(name="stop")
def stop(message: str = "no") -> None:
    st.fail(message)


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "applications.csv"
    benefit_applications(300, seed=3).to_csv(path, index=False)
    return str(path)


def _statuses(execution: Any) -> dict[str, str]:
    return {s.step: s.status.value for s in execution.steps}


def test_pause_at_approval_second_user_approves_resume_deploys_and_rerun_caches(
    settings: Settings, source: str
) -> None:
    with (
        cm.connect(home=settings.home, user="alice") as ml,
        cm.connect(home=settings.home, user="rosa") as reviewer,
    ):
        proj = ml.project("benefits")
        first = ml.pipelines.run(release, project="benefits", params={"source": source})
        assert first.status is ExecutionStatus.WAITING
        assert first.step("wait_for_approval").status is StepStatus.WAITING
        assert first.step("deploy").status is StepStatus.PENDING
        assert first.step("evaluate_bias").status is StepStatus.SUCCEEDED
        mv = proj.models.version("eligibility", 1)
        assert mv.run_id == first.step("train").run_id  # files are the train step's artifacts

        still = ml.pipelines.retry(first.id)  # not yet approved: still waiting
        assert still.status is ExecutionStatus.WAITING
        with pytest.raises(CivicMLError, match="alice"):
            proj.models.approve(mv, note="looks fine")  # the registrar may not approve
        reviewer.project("benefits").models.approve(mv, note="accuracy and bias reviewed")

        done = PipelineService(ml.backend.ctx).resume(first.id)
        assert done.status is ExecutionStatus.SUCCEEDED, _statuses(done)
        assert done.step("deploy").status is StepStatus.SUCCEEDED
        endpoint = proj.endpoints.get("eligibility")
        assert endpoint.info.model_version == 1
        row = benefit_applications(1, seed=9).drop(columns=["eligible"])
        assert len(endpoint.predict(row).predictions) == 1

        again = ml.pipelines.run(
            release, project="benefits", params={"source": source, "endpoint": "eligibility-2"}
        )
        statuses = _statuses(again)
        assert statuses["ingest"] == "succeeded"  # cache=False, yet the same version
        assert statuses["train"] == statuses["evaluate_bias"] == "cached"
        assert statuses["register"] == "cached"  # the same version again, no new one
        assert statuses["wait_for_approval"] == statuses["deploy"] == "succeeded"
        assert again.status is ExecutionStatus.SUCCEEDED


def test_rejection_fails_the_execution_with_the_reviewers_note(
    settings: Settings, source: str
) -> None:
    with (
        cm.connect(home=settings.home, user="alice") as ml,
        cm.connect(home=settings.home, user="rosa") as reviewer,
    ):
        proj = ml.project("benefits")
        first = ml.pipelines.run(release, project="benefits", params={"source": source})
        mv = proj.models.version("eligibility", 1)
        reviewer.project("benefits").models.reject(mv, note="income proxy for sex")
        done = PipelineService(ml.backend.ctx).resume(first.id)
        assert done.status is ExecutionStatus.FAILED
        waited = done.step("wait_for_approval")
        assert waited.status is StepStatus.FAILED
        assert "income proxy for sex" in (waited.error or "")
        assert "rosa" in (waited.error or "")
        assert done.step("deploy").status is StepStatus.SKIPPED


def test_false_condition_skips_what_follows_and_the_execution_succeeds(
    settings: Settings, source: str
) -> None:
    with cm.connect(home=settings.home, user="alice") as ml:
        proj = ml.project("benefits")
        done = ml.pipelines.run(
            release, project="benefits", params={"source": source, "min_accuracy": 1.01}
        )
        assert done.status is ExecutionStatus.SUCCEEDED
        statuses = _statuses(done)
        assert statuses["condition"] == "succeeded"
        for name in ("good_model", "when", "register", "wait_for_approval", "deploy"):
            assert statuses[name] == "skipped", statuses
        assert "false" in (done.step("register").error or "")
        assert proj.models.list() == []


def test_batch_predict_returns_rows_with_predictions(settings: Settings, source: str) -> None:
    with (
        cm.connect(home=settings.home, user="alice") as ml,
        cm.connect(home=settings.home, user="rosa") as reviewer,
    ):
        proj = ml.project("benefits")
        first = ml.pipelines.run(release, project="benefits", params={"source": source})
        mv = proj.models.version("eligibility", 1)
        reviewer.project("benefits").models.approve(mv, note="ok")
        PipelineService(ml.backend.ctx).resume(first.id)
        done = ml.pipelines.run(scoring, project="benefits", params={"source": source})
        assert done.status is ExecutionStatus.SUCCEEDED, _statuses(done)
        stored = StoredValue.from_dict(done.step("batch_predict").outputs["output"])
        frame = load_value(ml.backend.ctx.artifacts, stored)
        assert len(frame) == 300
        assert set(frame["prediction"]) <= {0, 1}
        assert ((frame["probability_0"] + frame["probability_1"]) - 1).abs().max() < 1e-9


def test_fail_step_and_condition_otherwise_fail(settings: Settings) -> None:
    with cm.connect(home=settings.home, user="alice") as ml:
        ml.project("benefits")
        done = ml.pipelines.run(stop, project="benefits", params={"message": "stop here"})
        assert done.status is ExecutionStatus.FAILED
        assert "stop here" in (done.step("fail").error or "")
    with pytest.raises(InvalidInputError, match="operator"):
        st.condition.fn(1, "=>", 2)
    assert st.condition.fn(0.9, ">", 0.5) is True
    with pytest.raises(st.StepFailedError, match="false"):
        st.condition.fn({"a": {"b": 0.1}}, ">", 0.5, key="a.b", otherwise="fail")
    with pytest.raises(InvalidInputError, match="outside a running pipeline step"):
        current()


@cm.pipeline(name="explained")
def explained(source: str = "", version: int = 1) -> None:
    st.explain(find_version("eligibility", version), st.ingest("applications", source), rows=200)


def test_explain_stores_a_shap_evaluation_of_a_registered_version(
    settings: Settings, source: str
) -> None:
    with cm.connect(home=settings.home, user="alice") as ml:
        ml.project("benefits")  # created
        first = ml.pipelines.run(release, project="benefits", params={"source": source})
        assert first.step("register").status is StepStatus.SUCCEEDED
        done = ml.pipelines.run(explained, project="benefits", params={"source": source})
        assert done.status is ExecutionStatus.SUCCEEDED, _statuses(done)
        stored = StoredValue.from_dict(done.step("explain").outputs["output"])
        summary = load_value(ml.backend.ctx.artifacts, stored)
        evaluation = ml.project("benefits").evaluations.get(summary["evaluation_id"])
        assert evaluation.kind == "explanation"
        features = [f["column"] for f in summary["top_features"]]
        assert set(features) <= set(benefit_applications(1, seed=0).columns) - {"eligible"}
        assert len(features) >= 3
