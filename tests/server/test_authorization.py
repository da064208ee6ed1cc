"""Authorization through the real server (auth = "token"): every built-in role by every operation
of the REST API, each answer checked against the permission table (docs/security.md).

Each role but ``admin`` is granted on project ``p`` only, to a user whose token carries no role;
``admin`` is a token-global role. An operation is *allowed* (any answer but 401/403/404: the
permission check passed), *denied* (403) or *hidden* (404: the caller holds no permission at all
on the project). Platform permissions come only from roles held on every project, so a per-project
grant never gives them. The read operations are tried on project ``q`` too, which no grant
reaches: every non-admin role must be told it does not exist.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from civicml.core.identity import Principal
from civicml.core.permissions import (
    ADMIN_ROLE,
    BUILTIN_ROLES,
    PLATFORM_PERMISSIONS,
    PROJECT_PERMISSIONS,
)
from civicml.core.settings import Settings
from civicml.governance.schemas import TokenCreate
from civicml.pipelines import pipeline, step
from civicml.pipelines.service import PipelineService
from civicml.sdk.client import connect
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from tests.evaluation.helpers import DATASET, FEATURES, LABEL, MODEL, frame, publish
from tests.server.helpers import API, isolated_settings
from tests.server.helpers import serve as serve_app
from tests.server.test_auth import bearer, mint

P, Q = "p", "q"


@step(name="double")
def _double(x: int) -> int:
    return 2 * x


@pipeline(name="authz-pipe")
def _authz_pipe(x: int = 2) -> None:
    _double(_double(x))


M = f"{API}/projects/{{p}}/models/{MODEL}"
V1 = f"{M}/versions/1"

#: Routes this test leaves out, each with why.
EXCLUDED = {
    ("GET", "/api/v1/health"),  # open to everyone, no token
    ("GET", "/api/v1/health/live"),  # open to everyone, no token (probes)
    ("GET", "/api/v1/health/ready"),  # open to everyone, no token (probes)
    ("GET", "/api/v1/auth/oidc"),  # public: where to log in (civicml login --oidc)
    ("GET", "/api/v1/whoami"),  # the caller's own identity: no permission
    ("GET", "/api/v1/tokens"),  # the caller's own tokens (?all=true: tests/server/test_auth.py)
    ("GET", "/api/v1/tokens/{token_id}"),  # one of the caller's own tokens
    ("DELETE", "/api/v1/tokens/{token_id}"),  # revoking one's own token
}

_n = itertools.count(1)


@dataclass
class World:
    """What the fixture built: an admin client and the ids of each project's objects."""

    http: httpx.Client
    admin: dict[str, str]
    second: dict[str, str]  # another admin: approves and sets policies, as the registrar may not
    ids: dict[str, dict[str, str]] = field(default_factory=dict)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **self.admin}
        response = self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response

    def fresh_version(self, archived: bool = False) -> int:
        """A new version of the model (pending), registered by the admin from v1's run."""
        ids = self.ids[P]
        body = {"run_id": ids["run"], "artifact_path": ids["artifact_path"]}
        version = int(
            self.call("POST", f"{API}/projects/p/models/{MODEL}/versions", json=body).json()[
                "version"
            ]
        )
        if archived:
            self.call("POST", f"{API}/projects/p/models/{MODEL}/versions/{version}/archive")
        return version


Prep = Callable[[World, int], dict[str, Any]]


@dataclass
class Op:
    """One REST operation: the OpenAPI route, the permission it needs ('' none), the request."""

    method: str
    route: str
    need: str
    path: str  # formatted with the project's ids, ``n`` (unique per try) and what prep returns
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    prep: Prep | None = None

    def key(self) -> tuple[str, str]:
        return self.method, self.route

    def request(self, world: World, project: str) -> dict[str, Any]:
        n = next(_n)
        values: dict[str, Any] = {**world.ids[project], "p": project, "n": n}
        if self.prep is not None:
            values.update(self.prep(world, n))
        kwargs: dict[str, Any] = {"params": self.params}
        if self.json is not None:
            kwargs["json"] = _fill(self.json, values)
        elif self.content is not None:
            kwargs["content"] = self.content
            kwargs["headers"] = {"content-type": "application/octet-stream"}
        elif self.method in ("POST", "PUT", "PATCH"):
            kwargs["json"] = {}
        return {"method": self.method, "url": self.path.format(**values), **kwargs}


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


# Preps (run as the admin before each try, so every try finds a fresh object) -----------------
def _running_run(world: World, n: int) -> dict[str, Any]:
    run = world.call("POST", f"{API}/projects/p/runs", json={"experiment": "e"}).json()
    return {"fresh": run["id"]}


def _tag(world: World, n: int) -> dict[str, Any]:
    world.call("POST", f"{API}/runs/{world.ids[P]['live']}/tags", json={"tags": {f"t{n}": "x"}})
    return {}


def _grant(world: World, n: int) -> dict[str, Any]:
    world.call("POST", f"{API}/projects/p/members", json={"user": f"victim{n}", "role": "viewer"})
    return {}


def _old_key(world: World, n: int) -> dict[str, Any]:
    """A key that is no longer current (rotated out; retiring it is allowed once unused)."""
    done = world.call("POST", f"{API}/keys/rotate").json()
    return {"key": done["previous_key_id"]}


def _budget(world: World, n: int) -> dict[str, Any]:
    world.call("PUT", f"{API}/projects/p/budget", json={"amount": 1_000_000})
    return {}


def _version(world: World, n: int) -> dict[str, Any]:
    return {"v": world.fresh_version()}


def _archived(world: World, n: int) -> dict[str, Any]:
    return {"v": world.fresh_version(archived=True)}


def _alias(world: World, n: int) -> dict[str, Any]:
    world.call("PUT", f"{API}/projects/p/models/{MODEL}/aliases/d{n}", json={"version": 1})
    return {}


def _endpoint(world: World, n: int) -> dict[str, Any]:
    body = {"name": f"del{n}", "model": MODEL, "version": 1, "capture": False}
    world.call("POST", f"{API}/projects/p/endpoints", json=body)
    return {}


def _variant(world: World, n: int) -> dict[str, Any]:
    _endpoint(world, n)
    world.call("PUT", f"{API}/projects/p/endpoints/del{n}/variants/x", json={"version": 1})
    return {}


def _rolling(world: World, n: int) -> dict[str, Any]:
    """Endpoint ro{n} with a rollout in progress (v1 moving to its own variant 'b')."""
    body = {"name": f"ro{n}", "model": MODEL, "version": 1, "capture": False, "variant": "a"}
    world.call("POST", f"{API}/projects/p/endpoints", json=body)
    world.call("PUT", f"{API}/projects/p/endpoints/ro{n}/variants/b", json={"version": 1})
    rollout = {"version": 1, "variant": "b", "strategy": "canary", "bake_s": 600}
    world.call("PUT", f"{API}/projects/p/endpoints/ro{n}", json=rollout)
    return {}


def _shadow_report(world: World, n: int) -> dict[str, Any]:
    body = {"name": f"sh{n}", "model": MODEL, "version": 1}
    world.call("POST", f"{API}/projects/p/endpoints", json=body)
    world.call("PUT", f"{API}/projects/p/endpoints/sh{n}/shadow", json={"version": 1})
    made = world.call("POST", f"{API}/projects/p/endpoints/sh{n}/shadow/reports", json={})
    return {"sr": made.json()["id"]}


SCHEDULED = "tests.pipelines.scheduled:echo"

#: Routes and paths of the dataset checks (project p's dataset {DATASET}).
DS = "/api/v1/projects/{project}/datasets/{name}"
DSV = f"{DS}/versions/{{version}}"
DSP = f"{API}/projects/{{p}}/datasets/{DATASET}"


def _expectation(world: World, n: int) -> dict[str, Any]:
    body = {"name": f"del{n}", "kind": "row_count_between", "min": 0, "blocking": False}
    world.call("POST", f"{API}/projects/p/datasets/{DATASET}/expectations", json=body)
    return {}


def _quality(world: World, n: int) -> dict[str, Any]:
    """A quality report of project p's dataset v1 (a passing expectation, run)."""
    _expectation(world, n)
    world.call("POST", f"{API}/projects/p/datasets/{DATASET}/versions/1/quality")
    return {}


def _schedule(world: World, n: int) -> dict[str, Any]:
    body = {"name": f"del{n}", "pipeline": SCHEDULED, "cron": "0 0 1 1 *"}
    world.call("POST", f"{API}/projects/p/schedules", json=body)
    return {}


#: An alert rule that fires on any report (each project has one: its alert is {alert}).
WATCH = {"name": "watch", "source": "monitoring", "condition": "n_columns >= 0"}


def _alert_rule(world: World, n: int) -> dict[str, Any]:
    world.call("POST", f"{API}/projects/p/alerts/rules", json={**WATCH, "name": f"del{n}"})
    return {}


#: A database source of each project (its runs fail: the table does not exist; still 201).
SOURCE = {
    "name": "src",
    "kind": "database",
    "url": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "database": {"table": "civicml_authz_absent"},
}


def _source(world: World, n: int) -> dict[str, Any]:
    world.call("POST", f"{API}/projects/p/sources", json={**SOURCE, "name": f"del{n}"})
    return {}


#: A monitor of endpoint ep in project p (its execution is {mexec}).
MONITOR = {"name": "mon", "endpoint": "ep", "type": "data_quality", "every": "1h"}


#: A batch job of project p's model over its dataset (its id is {bjob}).
BATCH = {"model": MODEL, "model_version": 1, "input_dataset": DATASET, "output_dataset": "scored"}


def _monitor(world: World, n: int) -> dict[str, Any]:
    world.call("POST", f"{API}/projects/p/monitors", json={**MONITOR, "name": f"del{n}"})
    return {}


def _records() -> list[dict[str, Any]]:
    rows = frame(2)[FEATURES]
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in rows.to_dict(orient="records")
    ]


CSV = b"a,b\n1,2\n3,4\n"
SELECT = {"dataset": DATASET, "version": 1}
#: A policy that does not stand in the way of any approval (production's rule is the default).
POLICY = {"aliases": {"require_approved": ["production"]}}
RUN = f"{API}/runs/{{live}}"

OPS: list[Op] = [
    # Projects and members
    Op("GET", "/api/v1/projects", "", f"{API}/projects"),
    Op("POST", "/api/v1/projects", "projects.create", f"{API}/projects", json={"name": "new{n}"}),
    Op("PUT", "/api/v1/projects/{project}", "projects.read", f"{API}/projects/{{p}}"),
    Op("GET", "/api/v1/projects/{project}", "projects.read", f"{API}/projects/{{p}}"),
    Op(
        "GET",
        "/api/v1/projects/{project}/members",
        "projects.read",
        f"{API}/projects/{{p}}/members",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/members",
        "members.write",
        f"{API}/projects/{{p}}/members",
        json={"user": "g{n}", "role": "viewer"},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/members/{user}/roles/{role}",
        "members.write",
        f"{API}/projects/{{p}}/members/victim{{n}}/roles/viewer",
        prep=_grant,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/dashboard",
        "projects.read",
        f"{API}/projects/{{p}}/dashboard",
    ),
    # Experiments and runs
    Op(
        "GET",
        "/api/v1/projects/{project}/experiments",
        "experiments.read",
        f"{API}/projects/{{p}}/experiments",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/experiments",
        "experiments.write",
        f"{API}/projects/{{p}}/experiments",
        json={"name": "x{n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/experiments/{name}",
        "experiments.read",
        f"{API}/projects/{{p}}/experiments/e",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/runs",
        "experiments.write",
        f"{API}/projects/{{p}}/runs",
        json={"experiment": "e"},
    ),
    Op("GET", "/api/v1/projects/{project}/runs", "experiments.read", f"{API}/projects/{{p}}/runs"),
    Op(
        "POST",
        "/api/v1/projects/{project}/runs/search",
        "experiments.read",
        f"{API}/projects/{{p}}/runs/search",
        json={},
    ),
    Op("GET", "/api/v1/runs/{run_id}", "experiments.read", RUN),
    Op(
        "POST",
        "/api/v1/runs/{run_id}/params",
        "experiments.write",
        f"{RUN}/params",
        json={"params": {"k{n}": "v"}},
    ),
    Op(
        "POST",
        "/api/v1/runs/{run_id}/tags",
        "experiments.write",
        f"{RUN}/tags",
        json={"tags": {"s{n}": "v"}},
    ),
    Op(
        "DELETE",
        "/api/v1/runs/{run_id}/tags/{key}",
        "experiments.write",
        f"{RUN}/tags/t{{n}}",
        prep=_tag,
    ),
    Op(
        "POST",
        "/api/v1/runs/{run_id}/metrics",
        "experiments.write",
        f"{RUN}/metrics",
        json={"metrics": [{"key": "m", "value": 1.0}]},
    ),
    Op(
        "POST",
        "/api/v1/metrics/batches",
        "experiments.write",
        f"{API}/metrics/batches",
        json={"batches": [{"run_id": "{live}", "metrics": [{"key": "m", "value": 2.0}]}]},
    ),
    Op("GET", "/api/v1/runs/{run_id}/metrics/{key}", "experiments.read", f"{RUN}/metrics/m"),
    Op(
        "POST",
        "/api/v1/runs/{run_id}/inputs",
        "experiments.write",
        f"{RUN}/inputs",
        json={"kind": "dataset_version", "ref": "{dv}"},
    ),
    Op("POST", "/api/v1/runs/{run_id}/heartbeat", "experiments.write", f"{RUN}/heartbeat"),
    Op(
        "POST",
        "/api/v1/runs/{run_id}/end",
        "experiments.write",
        f"{API}/runs/{{fresh}}/end",
        prep=_running_run,
    ),
    Op(
        "PUT",
        "/api/v1/runs/{run_id}/artifacts/{path}",
        "experiments.write",
        f"{RUN}/artifacts/up{{n}}.txt",
        content=b"hello",
    ),
    Op(
        "GET",
        "/api/v1/runs/{run_id}/artifacts/{path}",
        "experiments.read",
        f"{RUN}/artifacts/a.txt",
    ),
    Op("GET", "/api/v1/runs/{run_id}/artifacts", "experiments.read", f"{RUN}/artifacts"),
    Op(
        "POST",
        "/api/v1/projects/{project}/blobs",
        "models.write",
        f"{API}/projects/{{p}}/blobs",
        content=b"blob",
    ),
    # Models, versions, approvals, aliases
    Op("GET", "/api/v1/projects/{project}/models", "models.read", f"{API}/projects/{{p}}/models"),
    Op(
        "POST",
        "/api/v1/projects/{project}/models",
        "models.write",
        f"{API}/projects/{{p}}/models",
        json={"name": "m{n}"},
    ),
    Op("GET", "/api/v1/projects/{project}/models/{name}", "models.read", M),
    Op("GET", "/api/v1/projects/{project}/models/{name}/versions", "models.read", f"{M}/versions"),
    # Another model: whoever registers a version of eligibility may no longer set its policy.
    Op(
        "POST",
        "/api/v1/projects/{project}/models/{name}/versions",
        "models.write",
        f"{API}/projects/{{p}}/models/reg/versions",
        json={"run_id": "{run}", "artifact_path": "{artifact_path}"},
    ),
    Op("GET", "/api/v1/projects/{project}/models/{name}/versions/{version}", "models.read", V1),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/models/{name}/versions/{version}",
        "models.write",
        f"{M}/versions/{{v}}",
        prep=_version,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/manifest",
        "models.read",
        f"{V1}/manifest",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/approve",
        "models.approve",
        f"{M}/versions/{{v}}/approve",
        json={"note": "fine"},
        prep=_version,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/reject",
        "models.approve",
        f"{M}/versions/{{v}}/reject",
        json={"note": "no"},
        prep=_version,
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/approval",
        "models.approve",
        f"{M}/versions/{{v}}/approval",
        json={"status": "Rejected", "note": "no"},
        prep=_version,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/approvals",
        "models.read",
        f"{V1}/approvals",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/archive",
        "models.write",
        f"{M}/versions/{{v}}/archive",
        prep=_version,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/unarchive",
        "models.write",
        f"{M}/versions/{{v}}/unarchive",
        prep=_archived,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/aliases/{alias}",
        "models.read",
        f"{M}/aliases/champion",
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/models/{name}/aliases/{alias}",
        "models.write",
        f"{M}/aliases/staging",
        json={"version": 1},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/models/{name}/aliases/{alias}",
        "models.write",
        f"{M}/aliases/d{{n}}",
        prep=_alias,
    ),
    # Policies, gate, cards, packages
    Op(
        "PUT",
        "/api/v1/projects/{project}/models/{name}/policy",
        "policies.write",
        f"{M}/policy",
        json={"policy": POLICY},
    ),
    Op("GET", "/api/v1/projects/{project}/models/{name}/policy", "models.read", f"{M}/policy"),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/policy/history",
        "models.read",
        f"{M}/policy/history",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/gate",
        "models.read",
        f"{V1}/gate",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/card",
        "models.read",
        f"{V1}/card",
    ),
    Op(
        "PATCH",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/card",
        "cards.write",
        f"{V1}/card",
        json={"fields": {"model_overview.model_owner": "team {n}"}, "note": "n"},
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/card/status",
        "cards.write",
        f"{V1}/card/status",
        json={"status": "Draft", "note": "n"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/card/history",
        "models.read",
        f"{V1}/card/history",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/card/html",
        "models.read",
        f"{V1}/card/html",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/card/markdown",
        "models.read",
        f"{V1}/card/markdown",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/models/{name}/versions/{version}/package",
        "models.export",
        f"{V1}/package",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/models/import",
        "models.write",
        f"{API}/projects/{{p}}/models/import",
        content=b"not a tar file",
    ),
    # Datasets
    Op(
        "GET",
        "/api/v1/projects/{project}/datasets",
        "datasets.read",
        f"{API}/projects/{{p}}/datasets",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/datasets/{name}",
        "datasets.read",
        f"{API}/projects/{{p}}/datasets/{DATASET}",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/datasets/{name}/versions",
        "datasets.read",
        f"{API}/projects/{{p}}/datasets/{DATASET}/versions",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/datasets/{name}/versions",
        "datasets.write",
        f"{API}/projects/{{p}}/datasets/extra/versions",
        content=CSV,
        params={"format": "csv"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/datasets/{name}/versions/{version}",
        "datasets.read",
        f"{API}/projects/{{p}}/datasets/{DATASET}/versions/1",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/datasets/{name}/versions/{version}/data",
        "datasets.read",
        f"{API}/projects/{{p}}/datasets/{DATASET}/versions/1/data",
    ),
    # Dataset quality expectations and personal data (routers/data_checks.py)
    Op("GET", f"{DS}/expectations", "datasets.read", f"{DSP}/expectations"),
    Op(
        "POST",
        f"{DS}/expectations",
        "datasets.write",
        f"{DSP}/expectations",
        json={"name": "e{n}", "kind": "row_count_between", "min": 0, "blocking": False},
    ),
    Op(
        "DELETE",
        f"{DS}/expectations/{{expectation}}",
        "datasets.write",
        f"{DSP}/expectations/del{{n}}",
        prep=_expectation,
    ),
    Op("POST", f"{DSV}/quality", "datasets.write", f"{DSP}/versions/1/quality"),
    Op("GET", f"{DSV}/quality", "datasets.read", f"{DSP}/versions/1/quality", prep=_quality),
    Op(
        "GET",
        f"{DSV}/quality/html",
        "datasets.read",
        f"{DSP}/versions/1/quality/html",
        prep=_quality,
    ),
    Op(
        "POST",
        f"{DSV}/quarantine/override",
        "datasets.override_quarantine",
        f"{DSP}/versions/1/quarantine/override",
        json={"justification": "checked by the data steward"},
    ),
    Op("POST", f"{DSV}/pii", "datasets.write", f"{DSP}/versions/1/pii"),
    Op("GET", f"{DSV}/pii", "datasets.read", f"{DSP}/versions/1/pii"),
    Op("GET", f"{DSV}/pii/html", "datasets.read", f"{DSP}/versions/1/pii/html"),
    Op(
        "POST",
        f"{DSV}/personal-use",
        "datasets.override_quarantine",
        f"{DSP}/versions/1/personal-use",
        json={"justification": "approved by the privacy board"},
    ),
    Op(
        "POST",
        f"{DSV}/redact",
        "datasets.write",
        f"{DSP}/versions/1/redact",
        json={"rules": [{"column": FEATURES[0], "action": "drop"}], "target": "red{n}"},
    ),
    Op("GET", f"{DSV}/usable", "datasets.read", f"{DSP}/versions/1/usable"),
    # Monitoring
    Op(
        "POST",
        "/api/v1/projects/{project}/reports/drift",
        "monitoring.write",
        f"{API}/projects/{{p}}/reports/drift",
        json={"current": SELECT, "baseline": SELECT},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/reports",
        "monitoring.read",
        f"{API}/projects/{{p}}/reports",
    ),
    Op("GET", "/api/v1/reports/{report_id}", "monitoring.read", f"{API}/reports/{{report}}"),
    Op(
        "GET",
        "/api/v1/reports/{report_id}/html",
        "monitoring.read",
        f"{API}/reports/{{report}}/html",
    ),
    Op(
        "GET",
        "/api/v1/reports/{report_id}/json",
        "monitoring.read",
        f"{API}/reports/{{report}}/json",
    ),
    # Evaluations
    Op(
        "POST",
        "/api/v1/projects/{project}/evaluations/bias",
        "evaluations.write",
        f"{API}/projects/{{p}}/evaluations/bias",
        json={"dataset": SELECT, "label": LABEL, "positive_label": 1, "facets": "sex"},
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/evaluations/explanation",
        "evaluations.write",
        f"{API}/projects/{{p}}/evaluations/explanation",
        json={"model": {"name": MODEL, "version": 1}, "dataset": SELECT, "rows": 10, "top_k": 1},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/evaluations",
        "evaluations.read",
        f"{API}/projects/{{p}}/evaluations",
    ),
    Op(
        "GET",
        "/api/v1/evaluations/{evaluation_id}",
        "evaluations.read",
        f"{API}/evaluations/{{evaluation}}",
    ),
    Op(
        "GET",
        "/api/v1/evaluations/{evaluation_id}/html",
        "evaluations.read",
        f"{API}/evaluations/{{evaluation}}/html",
    ),
    Op(
        "GET",
        "/api/v1/evaluations/{evaluation_id}/json",
        "evaluations.read",
        f"{API}/evaluations/{{evaluation}}/json",
    ),
    # Pipeline executions (run embedded where the code is; the server reads and cancels)
    Op(
        "GET",
        "/api/v1/projects/{project}/pipelines/executions",
        "experiments.read",
        f"{API}/projects/{{p}}/pipelines/executions",
    ),
    Op(
        "GET",
        "/api/v1/pipelines/executions/{execution_id}",
        "experiments.read",
        f"{API}/pipelines/executions/{{execution}}",
    ),
    Op(
        "GET",
        "/api/v1/pipelines/executions/{execution_id}/graph.html",
        "experiments.read",
        f"{API}/pipelines/executions/{{execution}}/graph.html",
    ),
    Op(  # the execution has succeeded: an allowed caller is told 409, not 403/404
        "POST",
        "/api/v1/pipelines/executions/{execution_id}/cancel",
        "experiments.write",
        f"{API}/pipelines/executions/{{execution}}/cancel",
    ),
    # Schedules (created with a module inside pipeline_modules; never due: 1 January, 00:00)
    Op(
        "GET",
        "/api/v1/projects/{project}/schedules",
        "experiments.read",
        f"{API}/projects/{{p}}/schedules",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/schedules",
        "experiments.write",
        f"{API}/projects/{{p}}/schedules",
        json={"name": "new{n}", "pipeline": SCHEDULED, "cron": "0 0 1 1 *"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/schedules/{name}",
        "experiments.read",
        f"{API}/projects/{{p}}/schedules/sched",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/schedules/{name}/pause",
        "experiments.write",
        f"{API}/projects/{{p}}/schedules/sched/pause",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/schedules/{name}/resume",
        "experiments.write",
        f"{API}/projects/{{p}}/schedules/sched/resume",
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/schedules/{name}",
        "experiments.write",
        f"{API}/projects/{{p}}/schedules/del{{n}}",
        prep=_schedule,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/schedules/{name}/firings",
        "experiments.read",
        f"{API}/projects/{{p}}/schedules/sched/firings",
    ),
    # Alerts (rules, evaluation and tests: monitoring.write; reading: monitoring.read)
    Op(
        "GET",
        "/api/v1/projects/{project}/alerts/rules",
        "monitoring.read",
        f"{API}/projects/{{p}}/alerts/rules",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/alerts/rules",
        "monitoring.write",
        f"{API}/projects/{{p}}/alerts/rules",
        json={**WATCH, "name": "new{n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/alerts/rules/{name}",
        "monitoring.read",
        f"{API}/projects/{{p}}/alerts/rules/watch",
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/alerts/rules/{name}",
        "monitoring.write",
        f"{API}/projects/{{p}}/alerts/rules/del{{n}}",
        prep=_alert_rule,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/alerts/rules/{name}/enable",
        "monitoring.write",
        f"{API}/projects/{{p}}/alerts/rules/watch/enable",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/alerts/rules/{name}/disable",
        "monitoring.write",
        f"{API}/projects/{{p}}/alerts/rules/watch/disable",
    ),
    Op(  # the rule has no channel: an allowed caller is told 422, not 403/404
        "POST",
        "/api/v1/projects/{project}/alerts/rules/{name}/test",
        "monitoring.write",
        f"{API}/projects/{{p}}/alerts/rules/watch/test",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/alerts/rules/{name}/notifications",
        "monitoring.read",
        f"{API}/projects/{{p}}/alerts/rules/watch/notifications",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/alerts/evaluate",
        "monitoring.write",
        f"{API}/projects/{{p}}/alerts/evaluate",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/alerts",
        "monitoring.read",
        f"{API}/projects/{{p}}/alerts",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/alerts/{alert_id}",
        "monitoring.read",
        f"{API}/projects/{{p}}/alerts/{{alert}}",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/alerts/{alert_id}/deliveries",
        "monitoring.read",
        f"{API}/projects/{{p}}/alerts/{{alert}}/deliveries",
    ),
    # Sources (adding, changing, running: sources.write; reading: sources.read)
    Op(
        "GET", "/api/v1/projects/{project}/sources", "sources.read", f"{API}/projects/{{p}}/sources"
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/sources",
        "sources.write",
        f"{API}/projects/{{p}}/sources",
        json={**SOURCE, "name": "new{n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/sources/{name}",
        "sources.read",
        f"{API}/projects/{{p}}/sources/src",
    ),
    Op(
        "PATCH",
        "/api/v1/projects/{project}/sources/{name}",
        "sources.write",
        f"{API}/projects/{{p}}/sources/src",
        json={"description": "d{n}"},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/sources/{name}",
        "sources.write",
        f"{API}/projects/{{p}}/sources/del{{n}}",
        prep=_source,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/sources/{name}/run",
        "sources.write",
        f"{API}/projects/{{p}}/sources/src/run",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/sources/{name}/runs",
        "sources.read",
        f"{API}/projects/{{p}}/sources/src/runs",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/sources/{name}/status",
        "sources.read",
        f"{API}/projects/{{p}}/sources/src/status",
    ),
    # Monitors (managing, running, ground truth: monitoring.write; reading: monitoring.read)
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/monitors",
        "monitoring.write",
        f"{API}/projects/{{p}}/monitors",
        json={**MONITOR, "name": "new{n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors/{name}",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors/mon",
    ),
    Op(
        "PATCH",
        "/api/v1/projects/{project}/monitors/{name}",
        "monitoring.write",
        f"{API}/projects/{{p}}/monitors/mon",
        json={"description": "d{n}"},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/monitors/{name}",
        "monitoring.write",
        f"{API}/projects/{{p}}/monitors/del{{n}}",
        prep=_monitor,
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/monitors/{name}/constraints",
        "monitoring.write",
        f"{API}/projects/{{p}}/monitors/mon/constraints",
        json={"constraints": {"features": []}},
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/monitors/{name}/baseline",
        "monitoring.write",
        f"{API}/projects/{{p}}/monitors/mon/baseline",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/monitors/{name}/run",
        "monitoring.write",
        f"{API}/projects/{{p}}/monitors/mon/run",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors/{name}/executions",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors/mon/executions",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors/{name}/executions/{execution_id}",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors/mon/executions/{{mexec}}",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors/{name}/executions/{execution_id}/html",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors/mon/executions/{{mexec}}/html",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors/{name}/executions/{execution_id}/json",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors/mon/executions/{{mexec}}/json",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/monitors/{name}/html",
        "monitoring.read",
        f"{API}/projects/{{p}}/monitors/mon/html",
    ),
    # Batch prediction jobs (creating: datasets.write; reading: datasets.read)
    Op(
        "POST",
        "/api/v1/projects/{project}/batch-jobs",
        "datasets.write",
        f"{API}/projects/{{p}}/batch-jobs",
        json={**BATCH, "output_dataset": "scored{n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/batch-jobs",
        "datasets.read",
        f"{API}/projects/{{p}}/batch-jobs",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/batch-jobs/{job_id}",
        "datasets.read",
        f"{API}/projects/{{p}}/batch-jobs/{{bjob}}",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{endpoint}/ground-truth",
        "monitoring.write",
        f"{API}/projects/{{p}}/endpoints/ep/ground-truth",
        json={"records": [{"inference_id": "x{n}", "label": 1}]},
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{endpoint}/ground-truth/file",
        "monitoring.write",
        f"{API}/projects/{{p}}/endpoints/ep/ground-truth/file",
        content=b"inference_id,label\nabc,1\n",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{endpoint}/ground-truth",
        "monitoring.read",
        f"{API}/projects/{{p}}/endpoints/ep/ground-truth",
    ),
    # Costs and budgets (reading: projects.read; a budget: members.write, the admin's)
    Op("GET", "/api/v1/costs", "", f"{API}/costs"),  # lists only the projects one may read
    Op("GET", "/api/v1/projects/{project}/costs", "projects.read", f"{API}/projects/{{p}}/costs"),
    Op(
        "GET",
        "/api/v1/projects/{project}/costs.html",
        "projects.read",
        f"{API}/projects/{{p}}/costs.html",
    ),
    Op("GET", "/api/v1/projects/{project}/budget", "projects.read", f"{API}/projects/{{p}}/budget"),
    Op(
        "PUT",
        "/api/v1/projects/{project}/budget",
        "members.write",
        f"{API}/projects/{{p}}/budget",
        json={"amount": 1_000_000},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/budget",
        "members.write",
        f"{API}/projects/{{p}}/budget",
        prep=_budget,
    ),
    Op(
        "POST",
        "/api/v1/runs/{run_id}/usage",
        "experiments.write",
        f"{RUN}/usage",
        json={"wall_s": 1.5, "cpu_s": 0.5},
    ),
    # Endpoints
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints",
        json={"name": "ep{n}", "model": MODEL, "version": 1, "capture": False},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/ep",
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/endpoints/{name}",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/ep",
        json={"capture_percent": 100},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/endpoints/{name}",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/del{{n}}",
        prep=_endpoint,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/invocations",
        "endpoints.invoke",
        f"{API}/projects/{{p}}/endpoints/ep/invocations",
        json={"records": _records()},
    ),
    Op(
        "POST",
        "/endpoints/{name}/invocations",
        "endpoints.invoke",
        "/endpoints/ep/invocations",
        json={"records": _records()},
        params={"project": P},
    ),
    # Multi-model endpoint mm (MODEL v1) of p
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/models",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/mm/models",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/models",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/mm/models",
        json={"model": MODEL, "version": 1},  # allowed: 409, it serves it already
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/endpoints/{name}/models/{model}",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/mm/models/{MODEL}",  # allowed: 409, its last model
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/models/{model}/invocations",
        "endpoints.invoke",
        f"{API}/projects/{{p}}/endpoints/mm/models/{MODEL}/invocations",
        json={"records": _records()},
    ),
    Op(
        "POST",
        "/endpoints/{name}/models/{model}/invocations",
        "endpoints.invoke",
        f"/endpoints/mm/models/{MODEL}/invocations",
        json={"records": _records()},
        params={"project": P},
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/capture/dataset",
        "datasets.write",
        f"{API}/projects/{{p}}/endpoints/ep/capture/dataset",
        json={},
    ),
    # Endpoint variants, shadow, rollouts and shadow reports
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/variants",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/ep/variants",
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/endpoints/{name}/variants/{variant}",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/del{{n}}/variants/green",
        json={"version": 1},
        prep=_endpoint,
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/endpoints/{name}/variants/{variant}",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/del{{n}}/variants/x",
        prep=_variant,
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/endpoints/{name}/traffic",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/del{{n}}/traffic",
        json={"weights": {"v1": 2}},
        prep=_endpoint,
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/endpoints/{name}/shadow",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/ep/shadow",
        json={"version": 1, "percent": 10},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/endpoints/{name}/shadow",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/ep/shadow",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/rollout",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/ro{{n}}/rollout",
        prep=_rolling,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/rollouts",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/ep/rollouts",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/rollout/tick",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/ro{{n}}/rollout/tick",
        prep=_rolling,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/rollout/cancel",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/ro{{n}}/rollout/cancel",
        json={"reason": "test"},
        prep=_rolling,
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/endpoints/{name}/shadow/reports",
        "endpoints.write",
        f"{API}/projects/{{p}}/endpoints/ep/shadow/reports",
        json={},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/shadow/reports",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/ep/shadow/reports",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/shadow/reports/{report_id}",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/sh{{n}}/shadow/reports/{{sr}}",
        prep=_shadow_report,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/shadow/reports/{report_id}/html",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/sh{{n}}/shadow/reports/{{sr}}/html",
        prep=_shadow_report,
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/endpoints/{name}/shadow/reports/{report_id}/json",
        "endpoints.read",
        f"{API}/projects/{{p}}/endpoints/sh{{n}}/shadow/reports/{{sr}}/json",
        prep=_shadow_report,
    ),
    # Catalog (search: no permission of its own, each kind filtered by its read permission)
    Op("GET", "/api/v1/catalog/search", "", f"{API}/catalog/search", params={"q": "app"}),
    Op(
        "GET",
        "/api/v1/projects/{project}/catalog/{kind}/{name}",
        "datasets.read",
        f"{API}/projects/{{p}}/catalog/datasets/{DATASET}",
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/catalog/{kind}/{name}",
        "datasets.write",
        f"{API}/projects/{{p}}/catalog/datasets/{DATASET}",
        json={"description": "described {n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/catalog/{kind}/{name}/lineage",
        "lineage.read",
        f"{API}/projects/{{p}}/catalog/datasets/{DATASET}/lineage",
    ),
    # Privacy: retention, legal holds, erasures
    Op(
        "GET",
        "/api/v1/projects/{project}/privacy/retention",
        "datasets.read",
        f"{API}/projects/{{p}}/privacy/retention",
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/privacy/retention/{kind}/{name}",
        "privacy.retention",
        f"{API}/projects/{{p}}/privacy/retention/dataset/{DATASET}",
        json={"days": 3650},
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/privacy/retention/enforce",
        "privacy.retention",
        f"{API}/projects/{{p}}/privacy/retention/enforce",
    ),
    Op(
        "PUT",
        "/api/v1/projects/{project}/privacy/holds/{kind}/{name}",
        "privacy.retention",
        f"{API}/projects/{{p}}/privacy/holds/endpoint/ep",
        json={"reason": "case {n}"},
    ),
    Op(
        "DELETE",
        "/api/v1/projects/{project}/privacy/holds/{kind}/{name}",
        "privacy.retention",
        f"{API}/projects/{{p}}/privacy/holds/endpoint/ep",
    ),
    Op(
        "POST",
        "/api/v1/projects/{project}/privacy/erasures",
        "privacy.erase",
        f"{API}/projects/{{p}}/privacy/erasures",
        json={"key_column": "no_such_column", "value": "x{n}"},
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/privacy/erasures",
        "privacy.erase",
        f"{API}/projects/{{p}}/privacy/erasures",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/privacy/erasures/{erasure_id}",
        "privacy.erase",
        f"{API}/projects/{{p}}/privacy/erasures/{{erasure}}",
    ),
    Op(
        "GET",
        "/api/v1/projects/{project}/privacy/erasures/{erasure_id}/certificate",
        "privacy.erase",
        f"{API}/projects/{{p}}/privacy/erasures/{{erasure}}/certificate",
    ),
    # Lineage, audit, tokens
    Op("GET", "/api/v1/lineage/{kind}/{ref}", "lineage.read", f"{API}/lineage/run/{{run}}"),
    Op("GET", "/api/v1/audit/events", "audit.read", f"{API}/audit/events", params={"project": P}),
    Op("GET", "/api/v1/audit/verify", "audit.verify", f"{API}/audit/verify"),
    Op("GET", "/api/v1/audit/export", "audit.verify", f"{API}/audit/export"),
    Op(
        "POST",
        "/api/v1/tokens",
        "tokens.admin",
        f"{API}/tokens",
        json={"name": "svc{n}", "kind": "service", "owner": "ci-bot"},
    ),
    # Encryption keys
    Op("GET", "/api/v1/keys", "keys.admin", f"{API}/keys"),
    Op("POST", "/api/v1/keys/rotate", "keys.admin", f"{API}/keys/rotate"),
    Op("DELETE", "/api/v1/keys/{key_id}", "keys.admin", f"{API}/keys/{{key}}", prep=_old_key),
    Op("POST", "/api/v1/keys/encrypt-existing", "keys.admin", f"{API}/keys/encrypt-existing"),
    # Prometheus metrics (server_metrics = "token", the default)
    Op("GET", "/metrics", "metrics.read", "/metrics"),
]


def _build(world: World, ml: Any, project: str) -> None:
    """A dataset, a model v1 with an approval policy, a finished run (v1's) and a running run
    with a metric and an artifact, a drift report and a bias evaluation in ``project``."""
    dv, mv = publish(ml, project)
    ids: dict[str, str] = {"dv": dv.id, "run": mv.run_id, "artifact_path": mv.artifact_path}
    world.ids[project] = ids
    base = f"{API}/projects/{project}"
    live = world.call("POST", f"{base}/runs", json={"experiment": "e"}).json()["id"]
    ids["live"] = live
    world.call("POST", f"{API}/runs/{live}/metrics", json={"metrics": [{"key": "m", "value": 0.5}]})
    world.call(
        "PUT",
        f"{API}/runs/{live}/artifacts/a.txt",
        content=b"a",
        headers={**world.admin, "content-type": "application/octet-stream"},
    )
    ids["report"] = world.call(
        "POST", f"{base}/reports/drift", json={"current": SELECT, "baseline": SELECT}
    ).json()["id"]
    bias = {"dataset": SELECT, "label": LABEL, "positive_label": 1, "facets": "sex"}
    ids["evaluation"] = world.call("POST", f"{base}/evaluations/bias", json=bias).json()["id"]
    erasure = {"key_column": "no_such_column", "value": "x"}
    ids["erasure"] = world.call("POST", f"{base}/privacy/erasures", json=erasure).json()["id"]
    # by the second admin: whoever registered a version may not set the model's policy
    policy = world.http.put(
        f"{base}/models/{MODEL}/policy", json={"policy": POLICY}, headers=world.second
    )
    assert policy.status_code == 200, policy.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, dict[str, str]]]:
    settings: Settings = isolated_settings(
        tmp_path_factory.mktemp("authz"),
        auth="token",
        auth_max_failures=1_000_000,
        pipeline_modules=["tests.pipelines.scheduled"],
    )
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        root = mint(settings, TokenCreate(name="root")).secret
        second = mint(
            settings,
            TokenCreate(name="root-2"),
            principal=Principal(user="root-2", roles=frozenset({ADMIN_ROLE})),
        ).secret
        world = World(http, bearer(root), bearer(second))
        ml = connect(url, token=root)
        for project in (P, Q):
            _build(world, ml, project)
            schedule = {"name": "sched", "pipeline": SCHEDULED, "cron": "0 0 1 1 *"}
            world.call("POST", f"{API}/projects/{project}/schedules", json=schedule)
            world.call("POST", f"{API}/projects/{project}/alerts/rules", json=WATCH)
            world.call("POST", f"{API}/projects/{project}/sources", json=SOURCE)
            evaluated = world.call("POST", f"{API}/projects/{project}/alerts/evaluate").json()
            world.ids[project]["alert"] = evaluated["outcomes"][0]["alert_id"]
        ctx = open_context(settings, Principal(user="root", roles=frozenset({ADMIN_ROLE})))
        try:  # a pipeline runs where its code is: embedded, on the server's home
            for project in (P, Q):
                done = PipelineService(ctx).run(_authz_pipe, project=project)
                world.ids[project]["execution"] = done.id
        finally:
            ctx.db.close()
        # v1 of p: approved by the second admin (the registrar may not), aliased, deployed
        # with capture on and invoked, so its captured requests can become a dataset.
        approve = http.post(
            f"{API}/projects/p/models/{MODEL}/versions/1/approve",
            json={"note": "validated"},
            headers=world.second,
        )
        assert approve.status_code == 200, approve.text
        world.call("PUT", f"{API}/projects/p/models/{MODEL}/aliases/champion", json={"version": 1})
        world.call(
            "POST",
            f"{API}/projects/p/endpoints",
            json={"name": "ep", "model": MODEL, "version": 1, "capture_percent": 100},
        )
        world.call(
            "POST", f"{API}/projects/p/endpoints/ep/invocations", json={"records": _records()}
        )
        multi = {"name": "mm", "model": MODEL, "version": 1, "mode": "multi-model"}
        world.call("POST", f"{API}/projects/p/endpoints", json=multi)
        for _ in range(100):  # the capture writer is asynchronous
            made = http.post(
                f"{API}/projects/p/endpoints/ep/capture/dataset", json={}, headers=world.admin
            )
            if made.status_code == 201:
                break
            time.sleep(0.1)
        assert made.status_code == 201, made.text
        world.call("POST", f"{API}/projects/p/monitors", json=MONITOR)
        ran = world.call("POST", f"{API}/projects/p/monitors/mon/run").json()
        world.ids[P]["mexec"], world.ids[Q]["mexec"] = ran["id"], "0" * 32
        job = world.call("POST", f"{API}/projects/p/batch-jobs", json=BATCH).json()
        world.ids[P]["bjob"], world.ids[Q]["bjob"] = job["id"], "0" * 32
        tokens: dict[str, str] = {}
        for role in BUILTIN_ROLES:
            if role == ADMIN_ROLE:
                principal = Principal(user="u-admin", roles=frozenset({ADMIN_ROLE}))
            else:
                principal = Principal(user=f"u-{role}", roles=frozenset())
                world.call(
                    "POST", f"{API}/projects/p/members", json={"user": f"u-{role}", "role": role}
                )
            tokens[role] = mint(settings, TokenCreate(name="t"), principal=principal).secret
        yield world, tokens


def _outcome(op: Op, response: httpx.Response) -> str:
    status = response.status_code
    if op.route == "/api/v1/metrics/batches" and status == 200:
        first = response.json()[0]  # one batch: its own outcome
        status = 200 if first["ok"] else int(first["error"]["status"])
    if status == 401:
        return "unauthenticated"
    if status == 403:
        return "denied"
    if status == 404:
        return "hidden"
    if status >= 500:
        return "error"
    return "allowed"


def _expected(role: str, need: str) -> str:
    if not need or role == ADMIN_ROLE:
        return "allowed"
    held = BUILTIN_ROLES[role]
    if need in PLATFORM_PERMISSIONS:  # never from a per-project grant
        return "denied"
    if not held & set(PROJECT_PERMISSIONS):
        return "hidden"
    return "allowed" if need in held else "denied"


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", body))[:200] if isinstance(body, dict) else str(body)[:200]


def test_every_role_through_every_operation(world: tuple[World, dict[str, str]]) -> None:
    state, tokens = world
    spec = state.http.get("/openapi.json").json()
    routes = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    covered = {op.key() for op in OPS}
    assert len(covered) == len(OPS), "an operation is listed twice"
    assert routes - EXCLUDED - covered == set(), "routes without an entry in OPS"
    assert covered - routes == set(), "entries in OPS for routes that do not exist"

    mismatches: list[str] = []
    for role, secret in tokens.items():
        for op in OPS:
            for project in (P, Q):
                if project == Q and (op.method != "GET" or role == ADMIN_ROLE):
                    continue
                if (
                    project == Q
                    and "{p}" not in op.path
                    and "{live}" not in op.path
                    and "{report}" not in op.path
                    and "{evaluation}" not in op.path
                    and "{execution}" not in op.path
                    and "{run}" not in op.path
                    and op.params != {"project": P}
                ):
                    continue
                request = op.request(state, project)
                if project == Q and request.get("params") == {"project": P}:
                    request["params"] = {"project": Q}
                headers = {**request.pop("headers", {}), **bearer(secret)}
                response = state.http.request(**request, headers=headers)
                got = _outcome(op, response)
                want = "hidden" if project == Q else _expected(role, op.need)
                if got != want:
                    mismatches.append(
                        f"{role:15} {op.method:6} {request['url']} [{project}] needs "
                        f"{op.need or '-'}: expected {want}, got {response.status_code} "
                        f"{got}: {_message(response)}"
                    )
    assert not mismatches, "\n" + "\n".join(mismatches)
