"""The remote SDK against the real server gives what the embedded SDK gives (sdk/remote.py).

The same scenario runs once embedded (``connect(home=...)``) and once remote
(``connect(url)``); results, errors (class, message, hint) and audit trails must match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import civicml as cm
from civicml.core.errors import (
    CivicMLError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from civicml.sdk.client import Client, ProjectHandle, RunHandle
from civicml.sdk.remote import RemoteBackend, RemoteError
from civicml.server import create_app
from tests.server.helpers import API, isolated_settings, serve

SIGNATURE = [{"name": "income", "type": "float64"}, {"name": "household", "type": "int64"}]


def _plain(value: Any) -> Any:
    """NaN never equals itself: compare it as a marker."""
    if isinstance(value, float) and math.isnan(value):
        return "<nan>"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def scenario(ml: Client, reviewer: Client, tmp: Path) -> dict[str, Any]:
    """A whole journey; returns what a user would look at, minus ids and times."""
    proj = ml.project("benefits")
    runs: list[RunHandle] = []
    for lr, auc in ((0.3, 0.82), (0.1, 0.91), (0.03, 0.77)):
        with proj.start_run(
            experiment="baseline",
            name=f"lr-{lr}",
            params={"lr": lr, "algorithm": "gbm", "depth": 4},
            tags={"team": "eligibility"},
        ) as run:
            for step in range(5):
                run.log_metric("loss", round(1 / (step + 1), 4), step=step)
            run.log_metrics({"auc": auc, "unstable": float("nan"), "big": math.inf}, step=5)
            run.log_bytes(f"weights lr={lr}".encode(), "model/model.bin")
            run.log_text('{"format": "pickle"}', "model/meta.json")
            run.set_tags({"stage": "trained"})
        runs.append(run)
    found = proj.runs.search("metrics.auc > 0.8", order_by=["metrics.auc DESC"])
    ordered = proj.runs.list(experiment="baseline")

    mv1 = proj.models.register("eligibility", run=runs[1], signature=SIGNATURE)
    mv2 = proj.models.register("eligibility", run=runs[0], description="second")
    review = reviewer.project("benefits")
    mv1 = review.models.approve(mv1, note="AUC 0.91 meets policy")
    review.models.set_alias("eligibility", "production", mv1.version)
    mv2 = review.models.reject(mv2, note="worse than v1")
    archived = proj.models.archive(mv2)
    graph = ml.lineage("model_version", mv1.id, direction="upstream")
    events = ml.audit_events(project="benefits", limit=1000)
    exported = ml.backend.audit_export(tmp / "audit.jsonl")

    def version(mv: Any) -> dict[str, Any]:
        return {
            k: getattr(mv, k)
            for k in (
                "name",
                "version",
                "approval_status",
                "approval_by",
                "approval_note",
                "aliases",
                "archived",
                "metrics",
                "signature",
                "artifact_digest",
                "artifact_path",
                "description",
                "created_by",
            )
        }

    return _plain(
        {
            "projects": [p.name for p in ml.projects()],
            "experiments": [e.name for e in proj.experiments()],
            "runs": [
                {
                    k: getattr(r.info, k)
                    for k in (
                        "name",
                        "experiment",
                        "status",
                        "params",
                        "tags",
                        "metrics",
                        "created_by",
                    )
                }
                for r in runs
            ],
            "loss_history": [(v.step, v.value) for v in runs[0].metric_history("loss")],
            "artifacts": [(a.path, a.digest, a.size) for a in runs[0].list_artifacts()],
            "bytes": runs[2].read_artifact("model/model.bin"),
            "search": [r.name for r in found],
            "list": sorted(r.name for r in ordered),
            "versions": [
                version(v) for v in proj.models.versions("eligibility", include_archived=True)
            ],
            "by_alias": version(proj.models.version("eligibility", "production")),
            "archived": archived.archived,
            "model": (
                proj.models.get("eligibility").latest_version,
                proj.models.get("eligibility").aliases,
            ),
            "history": [
                (h.from_status, h.to_status, h.by, h.note)
                for h in proj.models.history(("eligibility", 1))
            ],
            "lineage": sorted((n.kind, n.name) for n in graph.nodes),
            "audit": [(e.action, e.entity_kind, e.actor) for e in events],
            "audit_ok": ml.verify_audit().ok,
            "exported_events": exported,
        }
    )


def test_the_same_scenario_gives_the_same_results_embedded_and_remote(
    live_server: str, tmp_path: Path
) -> None:
    results = []
    for target in ({"home": tmp_path / "embedded"}, {"url": live_server}):
        out = tmp_path / ("remote" if "url" in target else "local")
        out.mkdir()
        with (
            cm.connect(**target, user="data-scientist") as ml,
            cm.connect(**target, user="risk-officer") as reviewer,
        ):
            results.append(scenario(ml, reviewer, out))
    embedded, remote = results

    assert remote == embedded
    assert embedded["search"] == ["lr-0.1", "lr-0.3"]
    assert [v["approval_status"] for v in embedded["versions"]] == ["Approved", "Rejected"]
    assert embedded["versions"][0]["approval_by"] == "risk-officer"
    assert embedded["runs"][0]["metrics"] == {
        "loss": 0.2,
        "auc": 0.82,
        "unstable": "<nan>",
        "big": math.inf,
    }
    assert embedded["audit_ok"] is True
    assert embedded["exported_events"] > len(embedded["audit"]) - 1


# Errors --------------------------------------------------------------------------------------
@dataclass
class Side:
    """One backend, seeded the same way as the other."""

    ml: Client
    proj: ProjectHandle
    running: RunHandle  # param lr=0.1, artifact model/model.bin
    done: RunHandle  # finished; registered as eligibility v1, alias production

    def ids(self) -> dict[str, str]:
        return {self.running.id: "<running>", self.done.id: "<done>"}


def _seed(ml: Client) -> Side:
    proj = ml.project("benefits")
    running = proj.start_run(params={"lr": 0.1})
    running.log_bytes(b"v1", "model/model.bin")
    done = proj.start_run(name="done")
    done.log_bytes(b"model", "model/model.bin")
    done.end()
    # production may point at this unapproved version only because the policy says so (set
    # before alice registers a version: who registered one may not write its model's policy)
    ml.backend.registry.create_model("benefits", "eligibility")
    proj.models.set_policy("eligibility", "[aliases]\nrequire_approved = []")
    proj.models.register("eligibility", run=done)
    proj.models.set_alias("eligibility", "production", 1)
    return Side(ml, proj, running, done)


@dataclass
class Pair:
    embedded: Side
    remote: Side


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """An embedded platform and a server, seeded alike, shared by the error cases (which
    change nothing)."""
    local = isolated_settings(tmp_path_factory.mktemp("embedded"))
    server_settings = isolated_settings(tmp_path_factory.mktemp("server"))
    with (
        serve(create_app(server_settings)) as url,
        cm.connect(settings=local, user="alice") as embedded,
        cm.connect(url, settings=server_settings, user="alice") as remote,
    ):
        yield Pair(_seed(embedded), _seed(remote))


@dataclass(frozen=True)
class ErrorCase:
    id: str
    call: Callable[[Side], object]
    error: type[CivicMLError]
    message: str  # a fragment of the embedded message


def _buffered_then_flush(side: Side) -> None:
    side.done.log_metric("late", 1.0)
    side.done.flush()


ERROR_CASES = [
    ErrorCase(
        "unknown-project",
        lambda s: s.ml.backend.get_project("benefit"),
        NotFoundError,
        "Project 'benefit' does not exist.",
    ),
    ErrorCase(
        "duplicate-project",
        lambda s: s.ml.create_project("benefits"),
        ConflictError,
        "Project 'benefits' already exists.",
    ),
    ErrorCase(
        "invalid-project-name",
        lambda s: s.ml.project("bad name!"),
        InvalidInputError,
        "Project name 'bad name!' is not valid.",
    ),
    ErrorCase("unknown-run", lambda s: s.proj.runs.get("0" * 32), NotFoundError, "does not exist."),
    ErrorCase(
        "immutable-param",
        lambda s: s.running.log_param("lr", 0.2),
        ConflictError,
        "it cannot become '0.2'",
    ),
    ErrorCase(
        "synchronous-metric-to-finished-run",
        lambda s: s.done.log_metric("late", 1.0, synchronous=True),
        ConflictError,
        "Cannot log metrics to run",
    ),
    ErrorCase(
        "buffered-metric-to-finished-run-raises-on-flush",
        _buffered_then_flush,
        ConflictError,
        "it is finished, not running.",
    ),
    ErrorCase(
        "params-to-finished-run",
        lambda s: s.done.log_params({"x": 1}),
        ConflictError,
        "Cannot log parameters to run",
    ),
    ErrorCase(
        "artifact-to-finished-run",
        lambda s: s.done.log_bytes(b"x", "late.bin"),
        ConflictError,
        "Cannot log artifacts to run",
    ),
    ErrorCase(
        "artifact-overwrite",
        lambda s: s.running.log_bytes(b"v2", "model/model.bin"),
        ConflictError,
        "already exists with different content",
    ),
    ErrorCase(
        "unknown-artifact",
        lambda s: s.running.read_artifact("model/none.bin"),
        NotFoundError,
        "has no artifact 'model/none.bin'",
    ),
    ErrorCase(
        "artifact-path-traversal",
        lambda s: s.running.log_bytes(b"x", "../x"),
        InvalidInputError,
        "'..' segment",
    ),
    ErrorCase(
        "bad-filter",
        lambda s: s.proj.runs.search("metrics.auc > 0.8 or x"),
        InvalidInputError,
        "Cannot parse the filter at position 17",
    ),
    ErrorCase(
        "max-results",
        lambda s: s.proj.runs.search(max_results=0),
        InvalidInputError,
        "max_results 0 is out of range.",
    ),
    ErrorCase(
        "register-without-files",
        lambda s: s.proj.models.register("eligibility"),
        InvalidInputError,
        "needs its files",
    ),
    ErrorCase(
        "register-unknown-run",
        lambda s: s.proj.models.register("eligibility", run="0" * 32),
        NotFoundError,
        "does not exist",
    ),
    ErrorCase(
        "unknown-model",
        lambda s: s.proj.models.version("eligibilty", 1),
        NotFoundError,
        "Model 'eligibilty' does not exist in project 'benefits'.",
    ),
    ErrorCase(
        "unknown-version",
        lambda s: s.proj.models.approve(("eligibility", 99), note="ok"),
        NotFoundError,
        "has no version 99.",
    ),
    ErrorCase(
        "approve-empty-note",
        lambda s: s.proj.models.approve(("eligibility", 1), note=" "),
        InvalidInputError,
        "needs a note saying why.",
    ),
    ErrorCase(
        "alias-like-a-number",
        lambda s: s.proj.models.set_alias("eligibility", "3", 1),
        InvalidInputError,
        "Alias '3' looks like a version number",
    ),
    ErrorCase(
        "delete-aliased-version",
        lambda s: s.ml.backend.registry.delete_version("benefits", "eligibility", 1),
        ConflictError,
        "alias 'production' points at it",
    ),
    ErrorCase(
        "unknown-lineage",
        lambda s: s.ml.lineage("run", "0" * 32),
        NotFoundError,
        "No lineage is recorded",
    ),
]


def _normalized(err: CivicMLError, side: Side) -> tuple[str, str | None]:
    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        for raw, marker in side.ids().items():
            text = text.replace(raw, marker)
        return text

    return clean(err.message) or "", clean(err.hint)


def _expected_message(err: CivicMLError, embedded: Side, remote: Side) -> str:
    text = err.message
    for raw, marker in embedded.ids().items():
        real = next(r for r, m in remote.ids().items() if m == marker)
        text = text.replace(raw, real)
    return text


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.id for c in ERROR_CASES])
def test_errors_are_the_same_class_and_message_remotely(case: ErrorCase, pair: Pair) -> None:
    with pytest.raises(case.error, match=re.escape(case.message)) as local:
        case.call(pair.embedded)
    expected = _expected_message(local.value, pair.embedded, pair.remote)

    with pytest.raises(case.error, match=re.escape(expected)) as remote:
        case.call(pair.remote)

    assert type(remote.value) is type(local.value)
    assert _normalized(remote.value, pair.remote) == _normalized(local.value, pair.embedded)


def test_a_name_with_a_slash_fails_remotely_as_it_does_embedded(pair: Pair) -> None:
    with pytest.raises(InvalidInputError, match=re.escape("Project name 'a/b' is not valid.")):
        pair.embedded.ml.project("a/b")

    with pytest.raises(InvalidInputError, match=re.escape("Project name 'a/b' is not valid.")):
        pair.remote.ml.project("a/b")


# Buffering, durability, identity -------------------------------------------------------------
def _history(url: str, run_id: str, key: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url) as http:
        return http.get(f"{API}/runs/{run_id}/metrics/{key}").json()["values"]  # type: ignore[no-any-return]


def test_buffered_metrics_are_durable_after_flush(live_server: str) -> None:
    with cm.connect(live_server) as ml:
        run = ml.project("benefits").start_run()
        for step in range(200):
            run.log_metric("loss", 1.0 / (step + 1), step=step)

        run.flush()

        stored = _history(live_server, run.id, "loss")
        assert [v["step"] for v in stored] == list(range(200))
        assert stored[-1]["value"] == pytest.approx(1 / 200)


def test_a_synchronous_metric_is_on_the_server_when_the_call_returns(live_server: str) -> None:
    with cm.connect(live_server) as ml:
        run = ml.project("benefits").start_run()

        run.log_metric("auc", 0.9, step=3, synchronous=True)

        assert [(v["step"], v["value"]) for v in _history(live_server, run.id, "auc")] == [(3, 0.9)]


def test_a_retried_batch_is_stored_once(live_server: str) -> None:
    with cm.connect(live_server) as ml:
        run = ml.project("benefits").start_run()
        backend: RemoteBackend = ml.backend
        batch = [_batch(run.id, "retry-42")]

        first = backend.log_metric_batches(batch)
        second = backend.log_metric_batches(batch)

        assert [(r.stored, r.duplicate) for r in first] == [(1, False)]  # type: ignore[union-attr]
        assert [(r.stored, r.duplicate) for r in second] == [(0, True)]  # type: ignore[union-attr]
        assert len(_history(live_server, run.id, "acc")) == 1


def _batch(run_id: str, batch_id: str) -> Any:
    from civicml.tracking.schemas import MetricValue
    from civicml.tracking.service import MetricBatch

    return MetricBatch(run_id, [MetricValue(key="acc", value=0.7)], batch_id)


def test_ending_a_run_flushes_its_buffered_metrics(live_server: str) -> None:
    with cm.connect(live_server) as ml:
        with ml.project("benefits").start_run() as run:
            run.log_metrics({"a": 1.0, "b": 2.0}, step=1)

        assert run.info.status == "finished"
        assert run.info.metrics == {"a": 1.0, "b": 2.0}


def test_the_user_is_sent_and_recorded_as_the_audit_actor(live_server: str) -> None:
    with (
        cm.connect(live_server, user="data-scientist") as ml,
        cm.connect(live_server, user="risk-officer") as reviewer,
    ):
        run = ml.project("benefits").start_run()
        run.log_bytes(b"m", "model/m.bin")
        run.end()
        mv = ml.project("benefits").models.register("eligibility", run=run)

        approved = reviewer.project("benefits").models.approve(mv, note="ok")

        assert approved.approval_by == "risk-officer"
        assert run.info.created_by == "data-scientist"
        actors = {(e.action, e.actor) for e in ml.audit_events(project="benefits")}
        assert ("run.created", "data-scientist") in actors
        assert ("model_version.registered", "data-scientist") in actors
        assert ("model_version.approval_changed", "risk-officer") in actors
        assert repr(ml).startswith("<civicml.Client remote http://127.0.0.1:")


def test_an_email_user_is_recorded_remotely_as_embedded(live_server: str, tmp_path: Path) -> None:
    actors = []
    for target in ({"home": tmp_path / "embedded"}, {"url": live_server}):
        with cm.connect(**target, user="ana@agency.gov") as ml:
            run = ml.project("benefits").start_run()
            actors.append(run.info.created_by)

    assert actors == ["ana@agency.gov", "ana@agency.gov"]


def test_a_nan_parameter_is_stored_as_embedded_stores_it(live_server: str, tmp_path: Path) -> None:
    stored = []
    for target in ({"home": tmp_path / "embedded"}, {"url": live_server}):
        with cm.connect(**target) as ml:
            run = ml.project("benefits").start_run(params={"alpha": float("nan")})
            stored.append(run.info.params["alpha"])

    assert stored == ["nan", "nan"]


def test_an_infinite_parameter_is_accepted_remotely(live_server: str) -> None:
    with cm.connect(live_server) as ml:
        run = ml.project("benefits").start_run(params={"clip": math.inf})

        assert run.info.params == {"clip": "inf"}


def test_an_unreachable_server_is_a_remote_error() -> None:
    from tests.conftest import free_port

    with (
        cm.connect(f"http://127.0.0.1:{free_port()}") as ml,
        pytest.raises(
            RemoteError, match=re.escape("Cannot reach the civicml server at http://127.0.0.1")
        ),
    ):
        ml.projects()


def test_an_answer_that_is_not_the_error_body_is_a_remote_error(tmp_path: Path) -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    backend = RemoteBackend("http://civicml.internal", transport=httpx.MockTransport(proxy))
    try:
        with pytest.raises(RemoteError, match=re.escape("answered HTTP 502")):
            backend.list_projects()
    finally:
        backend.close()


@pytest.mark.parametrize(
    "status,error,cls",
    [
        (404, "NotFoundError", NotFoundError),
        (409, "ConflictError", ConflictError),
        (422, "InvalidInputError", InvalidInputError),
        (415, "UnsupportedMediaTypeError", InvalidInputError),
    ],
)
def test_error_bodies_map_to_the_same_classes(
    status: int, error: str, cls: type[CivicMLError]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            json={
                "ok": False,
                "status": status,
                "error": error,
                "message": "m",
                "hint": "h",
                "details": [{"x": 1}],
            },
        )

    backend = RemoteBackend("http://civicml.internal", transport=httpx.MockTransport(answer))
    try:
        with pytest.raises(cls, match=r"^m$") as info:
            backend.get_project("p")
    finally:
        backend.close()
    assert (info.value.hint, info.value.details) == ("h", [{"x": 1}])


def test_keys_with_slashes_and_spaces_work_remotely_as_embedded(
    live_server: str, tmp_path: Path
) -> None:
    seen = []
    for target in ({"home": tmp_path / "embedded"}, {"url": live_server}):
        with cm.connect(**target) as ml:
            run = ml.project("benefits").start_run(tags={"team/unit": "a", "note ?": "b"})
            run.log_metric("train/loss", 0.5, step=1, synchronous=True)
            run.log_metric("val loss %", 0.25, synchronous=True)
            run.delete_tag("team/unit")
            seen.append(
                (
                    [(v.step, v.value) for v in run.metric_history("train/loss")],
                    [v.value for v in run.metric_history("val loss %")],
                    {k: v for k, v in run.info.tags.items() if not k.startswith("civicml.")},
                    run.info.metrics,
                )
            )

    assert seen[1] == seen[0]
    assert seen[0][2] == {"note ?": "b"}


def test_non_finite_registration_metrics_are_stored_as_none_in_both(
    live_server: str, tmp_path: Path
) -> None:
    stored = []
    for target in ({"home": tmp_path / "embedded"}, {"url": live_server}):
        with cm.connect(**target) as ml:
            ml.project("benefits")
            digest = ml.backend.put_blob(b"weights", project="benefits")
            mv = ml.backend.registry.register(
                "benefits",
                "eligibility",
                artifacts={"m.bin": digest},
                metrics={"auc": 0.9, "f1": math.nan, "ll": -math.inf},
            )
            stored.append(mv.metrics)

    assert stored == [{"auc": 0.9, "f1": None, "ll": None}] * 2
