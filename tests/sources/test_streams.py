"""Stream sources against the real NATS JetStream, Redis, Mosquitto and RabbitMQ servers:
micro-batches become dataset versions, and a consumer killed (SIGKILL) between receive and
commit, or between commit and acknowledgement, loses nothing and repeats nothing."""

from __future__ import annotations

import json

import pytest

from civicml.core import FrozenClock
from civicml.data.service import DatasetService
from civicml.governance.lineage import LineageService
from civicml.sources import SourceCreate, SourceService
from civicml.sources.schemas import RunStatus
from civicml.store import Context
from tests.sources.helpers import PROJECT, URLS, bodies, crash_run, need, prepare, publish, unique

KINDS = ["nats", "redis", "mqtt", "rabbitmq"]
#: Fast batching for tests: a version closes 0.5 s after its first message or when idle.
STREAM = {"batch_rows": 25, "window_s": 2.0, "idle_s": 0.5, "max_run_s": 60}


def _where(kind: str) -> str:
    return unique("civicml.test").replace("_", "-") if kind == "nats" else unique("civicml_test")


def _add(ctx: Context, kind: str, where: str, name: str = "feed") -> None:
    target = {"connection": "rabbit"} if kind == "rabbitmq" else {"url": URLS[kind]}
    subject = where if kind != "mqtt" else f"{where}/#"
    SourceService(ctx).create(
        PROJECT,
        SourceCreate(
            name=name,
            kind=kind,
            stream={**STREAM, "subject": subject, "group": unique("g").replace("_", "-")},
            **target,
        ),
    )
    prepare(kind, where)
    if kind == "mqtt":  # the persistent session starts at the first run
        assert SourceService(ctx).run(PROJECT, name).status is RunStatus.EMPTY


def _topic(kind: str, where: str) -> str:
    return f"{where}/events" if kind == "mqtt" else where


def _ids(ctx: Context, dataset: str = "feed") -> list[int]:
    svc = DatasetService(ctx)
    out: list[int] = []
    if not any(d.name == dataset for d in svc.list_datasets(PROJECT)):
        return out
    for version in svc.list_versions(PROJECT, dataset):
        out += svc.read(version, columns=["id"]).column("id").to_pylist()
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_messages_become_versions(sctx: Context, kind: str) -> None:
    need("mqtt" if kind == "mqtt" else kind)
    where = _where(kind)
    _add(sctx, kind, where)
    publish(kind, _topic(kind, where), [*bodies(0, 30), b"not json", b"[1, 2]"])
    svc = SourceService(sctx)
    run = svc.run(PROJECT, "feed")
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.rows == 30 and run.skipped == 2 and len(run.versions) >= 2
    assert sorted(_ids(sctx)) == list(range(30))
    publish(kind, _topic(kind, where), bodies(30, 5))
    if kind in ("nats", "redis", "rabbitmq"):
        assert svc.status(PROJECT, "feed").lag == 5
    again = svc.run(PROJECT, "feed")
    assert again.rows == 5, again.error
    assert sorted(_ids(sctx)) == list(range(35))
    version = DatasetService(sctx).get_version(PROJECT, "feed")
    graph = LineageService(sctx).query("dataset_version", version.id, direction="upstream")
    source = next(n for n in graph.nodes if n.kind == "source")
    assert source.properties["kind"] == kind
    assert "guest" not in json.dumps(source.properties)
    if kind in ("nats", "redis", "rabbitmq"):
        assert svc.status(PROJECT, "feed").lag == 0


@pytest.mark.parametrize("at", ["commit", "ack"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_consumer_loses_and_repeats_nothing(
    sctx: Context, clock: FrozenClock, kind: str, at: str
) -> None:
    need("mqtt" if kind == "mqtt" else kind)
    where = _where(kind)
    _add(sctx, kind, where)
    publish(kind, _topic(kind, where), bodies(0, 12))
    env = {"CIVICML_SOURCE_CONNECTIONS": json.dumps({"rabbit": URLS["rabbitmq"]})}
    crash_run(sctx.settings.home, PROJECT, "feed", at, clock.now().isoformat(), env)
    committed = _ids(sctx)
    assert sorted(committed) == ([] if at == "commit" else list(range(12)))
    publish(kind, _topic(kind, where), bodies(12, 3))
    clock.advance(seconds=sctx.settings.sources_lease_s + 1)
    svc = SourceService(sctx)
    run = svc.run(PROJECT, "feed")
    assert run.status is RunStatus.SUCCEEDED, run.error
    ids = _ids(sctx)
    assert sorted(ids) == list(range(15)), ids  # everything once: nothing lost, nothing twice
    if at == "ack":  # NATS resumes after the committed sequence; the others skip redeliveries
        assert run.rows == 3 and run.skipped == (0 if kind == "nats" else 12)
    assert svc.run(PROJECT, "feed").status is RunStatus.EMPTY


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreachable_broker_fails_the_run_with_the_reason(sctx: Context, kind: str) -> None:
    scheme = {"nats": "nats", "redis": "redis", "mqtt": "mqtt", "rabbitmq": "amqp"}[kind]
    url = f"{scheme}://127.0.0.1:1/"
    svc = SourceService(sctx)
    svc.create(PROJECT, SourceCreate(name="down", kind=kind, url=url, stream={"subject": "s"}))
    run = svc.run(PROJECT, "down")
    assert run.status is RunStatus.FAILED and run.error and run.rows == 0
    status = svc.status(PROJECT, "down")
    assert status.lag is None and not status.running
