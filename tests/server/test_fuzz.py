"""Property-based test of the whole REST API from its own ``/openapi.json`` (schemathesis).

The real app runs under uvicorn on a loopback port, on a home seeded with real things: a project
with a dataset, a run with params, tags, metrics and an artifact, an approved model version with
an alias, a deployed endpoint, a drift report and a bias evaluation. Two phases:

- Every operation, with generated valid data (positive cases: path parameters name the seeded
  things, so they reach real resources, not 404s) and with data that breaks its schema
  (negative cases). No answer may be a 5xx (``not_a_server_error``) and every request that
  violates the schema must be refused with a 4xx (``negative_data_rejection``).
- The stateful phase: sequences of calls along the links schemathesis infers from the schema
  (a run created by one call is read, logged to and ended by the next), with the same checks.

Bounded and deterministic: a fixed seed (``derandomize``), a few examples per operation, no
example database, no shrinking (a failure is reported as found), and every failure of the first
phase is collected and reported at once.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.data.service import DatasetService
from civicml.evaluation.service import EvaluationService
from civicml.governance.projects import ProjectService
from civicml.monitoring.service import MonitoringService
from civicml.registry import RegistryService
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from civicml.serving.service import EndpointService
from civicml.tracking.schemas import MetricValue
from civicml.tracking.service import TrackingService
from tests.server.helpers import API, Server, isolated_settings, serve
from tests.serving.helpers import MODEL, PROJECT, register, train, training_frame

CHECKS = [not_a_server_error, negative_data_rejection]
_COMMON = {
    "derandomize": True,  # the same requests on every run: the test cannot be flaky
    "database": None,  # no .hypothesis directory, nothing replayed from an earlier run
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "print_blob": False,
}
# About 80 operations x 2 modes x 6 examples, then 25 scenarios of up to 6 calls: the module
# takes well under two minutes on two cores.
STATELESS = settings(max_examples=6, phases=[Phase.explicit, Phase.generate], **_COMMON)
STATEFUL_SCENARIOS = 25
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
_ID = re.compile(r"[0-9a-f]{32}")
_CREATES = re.compile(r"/(projects|experiments|models|endpoints)$")


def _seed(root: Path, settings_: Settings) -> dict[str, str]:
    """Real things for the fuzzer to find; returns the value of each path parameter naming one.

    Every kind of thing a ``{name}`` can be (model, endpoint, dataset, experiment) is called
    ``MODEL``, so one value reaches each of them.
    """
    ctx = open_context(settings_, Principal(user="seeder"))
    try:
        ProjectService(ctx).ensure(PROJECT, "projects.read")
        datasets = DatasetService(ctx)
        datasets.ingest(PROJECT, "applications", training_frame())
        datasets.ingest(PROJECT, MODEL, training_frame(seed=1))
        model_dir = root / "model"
        train(model_dir)
        register(ctx, model_dir)
        RegistryService(ctx).set_alias(PROJECT, MODEL, "production", 1)
        EndpointService(ctx).deploy(PROJECT, MODEL, MODEL, 1, capture_percent=100.0)
        report = MonitoringService(ctx).drift(
            PROJECT, current=(MODEL, 1), baseline=("applications", 1)
        )
        evaluation = EvaluationService(ctx).bias(
            PROJECT,
            dataset=("applications", 1),
            label="eligible",
            positive_label=True,
            facets=["region"],
        )
        tracking = TrackingService(ctx)
        run = tracking.create_run(PROJECT, experiment=MODEL, params={"lr": "0.1"})
        tracking.log_metrics(run.id, [MetricValue(key="loss", value=0.5, step=s) for s in range(3)])
        tracking.set_tags(run.id, {"loss": "tracked"})
        tracking.log_artifact(run.id, "model/model.bin", b"weights")
        return {
            "project": PROJECT,
            "name": MODEL,
            "version": "1",
            "alias": "production",
            "run_id": run.id,
            "key": "loss",
            "path": "model/model.bin",
            "report_id": report.id,
            "evaluation_id": evaluation.id,
            "kind": "run",
            "ref": run.id,
        }
    finally:
        ctx.db.close()


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, str]]]:
    root = tmp_path_factory.mktemp("fuzz")
    settings_ = isolated_settings(root)
    seeded = _seed(root, settings_)
    with serve(create_app(settings_)) as url:
        yield Server(url, settings_), seeded


@pytest.fixture(scope="module")
def api_schema(fuzz_server: tuple[Server, dict[str, str]]) -> Any:
    server, _ = fuzz_server
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.update(base_url=server.url)
    schema.config.generation.update(deterministic=True, database="none")
    return schema


def test_the_seeded_resources_are_reachable(fuzz_server: tuple[Server, dict[str, str]]) -> None:
    server, seeded = fuzz_server
    with httpx.Client(base_url=server.url) as api:
        for path in (
            f"/runs/{seeded['run_id']}",
            f"/projects/{PROJECT}/endpoints/{MODEL}",
            f"/projects/{PROJECT}/models/{MODEL}/aliases/production",
            f"/reports/{seeded['report_id']}",
            f"/evaluations/{seeded['evaluation_id']}",
            f"/projects/{PROJECT}/datasets/{MODEL}/versions/1",
            f"/projects/{PROJECT}/experiments/{MODEL}",
        ):
            assert api.get(f"{API}{path}").status_code == 200, path


def test_no_operation_answers_a_server_error_or_accepts_invalid_data(
    api_schema: Any, fuzz_server: tuple[Server, dict[str, str]]
) -> None:
    """Every operation, positive and negative cases; all failures are reported together."""
    _, seeded = fuzz_server
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        names = _PATH_PARAMETER.findall(operation.path)
        real = {n: seeded[n] for n in names if n in seeded}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            pinned = real if mode is GenerationMode.POSITIVE else None
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned)

            @STATELESS
            @given(case=strategy)
            def fuzz(case: Any) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:
                continue  # nothing in this operation's schema can be made invalid
            except (Exception, BaseExceptionGroup) as err:  # collected, then reported at once
                failures.append(f"{operation.label} ({mode.value}):\n{err}")
    assert not failures, "\n\n".join(failures)


def test_call_sequences_along_the_schemas_links_never_fail(
    api_schema: Any, fuzz_server: tuple[Server, dict[str, str]]
) -> None:
    """The stateful phase: a run created by one call is read, logged to and ended by the next.

    Each scenario gets its own project holding a running run (made in ``setup``): a generated
    ``project`` path parameter names that project, and a generated ``run_id`` mostly (three
    times in four, chosen from the value itself) names that run; an id handed on by a link is
    kept. A name given to create a
    project, experiment, model or endpoint gets the scenario's number appended. So no scenario
    sees what another one changed: the same calls get the same answers in every scenario, as
    Hypothesis requires of a state machine, and the test cannot be flaky.
    """
    server, _ = fuzz_server
    scenarios = itertools.count()

    class Workflow(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.number = next(scenarios)
            project = f"scenario-{self.number}"
            with httpx.Client(base_url=server.url) as api:
                created = api.post(f"{API}/projects/{project}/runs", json={"name": "seed"})
            assert created.status_code == 201, created.text
            self.pins = {"project": project, "run_id": created.json()["id"]}

        def before_call(self, case: Any) -> None:
            for name, value in (case.path_parameters or {}).items():
                text = str(value)
                linked = _ID.fullmatch(text) is not None
                keep = name != "project" and zlib.crc32(text.encode()) % 4 == 0
                if name in self.pins and not linked and not keep:
                    case.path_parameters[name] = self.pins[name]
            body = case.body if isinstance(case.body, dict) else {}
            creates = case.method == "POST" and _CREATES.search(case.operation.path)
            if creates and isinstance(body.get("name"), str):
                body["name"] = f"{body['name'][:100]}-{self.number}"

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Workflow.run(
        settings=settings(
            Workflow.TestCase.settings,
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            phases=[Phase.generate],
            **_COMMON,
        )
    )
