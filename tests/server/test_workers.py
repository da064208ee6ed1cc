"""Several serving processes: ``civicml server --workers N`` (civicml/server/workers.py) and the
transport under it (TCP_NODELAY on every accepted connection, the listeners it binds).

The unit tests look at accepted sockets with getsockopt; the end-to-end test runs a real
two-worker server in a subprocess on a loopback port, and checks that both workers answer,
that ``/metrics`` and the database's per-process counters add up to what was sent, that data
capture from both processes (one of them killed mid-way) is whole and never doubled, that a
killed worker is started again, and that SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.core.settings import Settings
from civicml.governance.projects import ProjectService
from civicml.sdk.embedded import open_context
from civicml.server.transport import bind_sockets, reuse_port_balances, server_config
from civicml.serving.capture import CaptureService, claim_spool
from civicml.serving.runtime import ModelHost
from civicml.serving.service import EndpointService
from civicml.store.crypto import is_sealed, read_sealed
from tests.conftest import free_port
from tests.server.helpers import API, isolated_settings
from tests.server.test_metrics import samples, total
from tests.serving.helpers import MODEL, PROJECT, records, register, train

INVOKE = f"{API}/projects/{PROJECT}/endpoints/web/invocations"


# The transport -----------------------------------------------------------------------------------
def test_bound_listeners_are_tcp_and_one_per_worker_on_linux() -> None:
    copies = bind_sockets("127.0.0.1", 0, copies=3)
    try:
        listeners = [s for group in copies for s in group]
        assert all(s.proto == socket.IPPROTO_TCP for s in listeners)
        assert len({s.getsockname() for s in listeners}) == 1  # one port
        if reuse_port_balances():
            assert len({id(s) for s in listeners}) == 3  # a listener of its own each
            assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in listeners)
        else:
            assert len({id(s) for s in listeners}) == 1  # one shared accept queue
    finally:
        for sock in {id(s): s for group in copies for s in group}.values():
            sock.close()


def test_binding_a_port_in_use_fails_and_leaves_nothing_open() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            bind_sockets("127.0.0.1", taken.getsockname()[1], copies=2)


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("proto", [0, socket.IPPROTO_TCP], ids=["proto0", "tcp"])
def test_every_accepted_connection_has_tcp_nodelay(tmp_path: Path, loop: str, proto: int) -> None:
    """A listener made with ``proto`` 0 (uvicorn's ``bind_socket``, uvicorn#3149) left
    asyncio's accepted sockets with Nagle on; the protocol now sets TCP_NODELAY itself."""
    import uvicorn

    settings = isolated_settings(tmp_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = server_config(_ok, settings, host="127.0.0.1", port=port, log_level="critical")
    config.loop = loop
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        _until(lambda: server.started)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):  # kept alive
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"ok"
        accepted = [p.transport.get_extra_info("socket") for p in server.server_state.connections]
        assert len(accepted) == 1
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        conn.close()
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def test_a_dead_processs_spool_is_claimed_once(tmp_path: Path) -> None:
    spool = tmp_path / "999999999-p1-e1-2026010112-abc.jsonl"
    spool.write_bytes(b'{"a": 1}\n')
    claimed = claim_spool(spool)
    assert claimed is not None and not spool.exists()
    assert claimed.name.startswith(f"{os.getpid()}-p1-e1-2026010112-")
    assert claimed.read_bytes() == b'{"a": 1}\n'
    assert claim_spool(spool) is None  # the second claimer finds it gone


# Two worker processes, end to end ----------------------------------------------------------------
def _until(ready: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``ready`` until it returns something truthy (no timing is asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _metrics(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def _workers(url: str) -> dict[str, int]:
    """Live worker index -> pid, from /metrics."""
    return {
        dict(labels)["worker"]: int(dict(labels)["pid"])
        for (name, labels), _ in samples(_metrics(url)).items()
        if name == "civicml_worker_info"
    }


def _answered_by(url: str) -> dict[int, float]:
    """Live worker pid -> invocations it answered, from /metrics."""
    return {
        int(dict(labels)["pid"]): value
        for (name, labels), value in samples(_metrics(url)).items()
        if name == "civicml_worker_invocations"
    }


def _invoke(port: int, connections: int, per_connection: int) -> int:
    """Kept-alive invocations, each connection in a thread of its own; how many were sent."""
    body = json.dumps({"records": records(1)})
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(per_connection):
                conn.request("POST", INVOKE, body, {"content-type": "application/json"})
                response = conn.getresponse()
                text = response.read()
                if response.status != 200:
                    errors.append(f"{response.status} {text[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    return connections * per_connection


def _flushed(home: Path) -> dict[str, int]:
    """The database's per-process counters of the endpoint's variants: source -> invocations."""
    with contextlib.closing(sqlite3.connect(home / "civicml.db")) as db:
        rows = db.execute("SELECT source, invocations FROM endpoint_variant_stats").fetchall()
    return {str(source): int(calls) for source, calls in rows}


def _spooled_lines(home: Path, keys: Any) -> dict[int, int]:
    """Captured records not yet stored, per writer pid (the spool file name's first part)."""
    found: dict[int, int] = {}
    for path in (home / "serving" / "capture-spool").glob("*.jsonl"):
        pid = int(path.name.split("-")[0])
        with contextlib.suppress(FileNotFoundError):  # stored meanwhile
            data = read_sealed(path, keys) if is_sealed(path) else path.read_bytes()
            found[pid] = found.get(pid, 0) + data.count(b"\n")
    return found


def _stored(ctx: Any) -> int:
    """Captured records already stored in the artifact store."""
    return sum(1 for _ in CaptureService(ctx).records(PROJECT, "web"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with endpoint ``web`` of project ``benefits``, capture on (100 %)."""
    settings = isolated_settings(tmp_path)
    ctx = open_context(settings)
    host = ModelHost(ctx)
    try:
        ProjectService(ctx).create(PROJECT)
        train(tmp_path / "model")
        register(ctx, tmp_path / "model")
        EndpointService(ctx, host).deploy(PROJECT, "web", MODEL, 1, capture_percent=100)
    finally:
        host.close()
        ctx.db.close()
    return settings.home


@contextlib.contextmanager
def _server(home: Path, log: Path, workers: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICML_")}
    env.update(CIVICML_HOME=str(home), CIVICML_SERVING_STATS_FLUSH_S="0.2")
    command = [sys.executable, "-m", "civicml.cli.main", "server", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.e2e
def test_two_workers_share_the_port_count_capture_and_restart_together(
    home: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    ctx = open_context(Settings.load(home=home))  # beside the server, as the CLI would be
    keys = ctx.artifacts.keys
    try:
        _run_two_workers(home, log, ctx, keys)
    finally:
        ctx.db.close()


def _run_two_workers(home: Path, log: Path, ctx: Any, keys: Any) -> None:
    with _server(home, log, workers=2) as (proc, port):
        url = f"http://127.0.0.1:{port}"
        pids = _until(lambda: len(w := _try(_workers, url)) == 2 and w, what="two workers")
        assert set(pids) == {"0", "1"}

        # Kept-alive requests on many connections: the kernel spreads them over both workers.
        sent = 0
        while sent < 400 and not all(_answered_by(url).get(pid) for pid in pids.values()):
            sent += _invoke(port, connections=8, per_connection=5)
        answered = _answered_by(url)
        assert all(answered[pid] > 0 for pid in pids.values()), answered
        bad = httpx.post(f"{url}{INVOKE}", json={"records": [{"age": 3}]}, timeout=30)
        assert bad.status_code == 422

        # One scrape sees both workers' counts; so does the database, one row per process.
        v1 = {"project": PROJECT, "endpoint": "web", "variant": "v1"}

        def scraped(name: str, **labels: str) -> float:
            return total(_metrics(url), name, **v1, **labels)

        _until(lambda: scraped("civicml_endpoint_invocations_total") == sent, what="totals")
        assert scraped("civicml_endpoint_latency_seconds_count") == sent
        # each worker's counts reach the scrape within a second, the refused request's worker's
        # possibly one copy after the others': wait for it as for the totals
        _until(lambda: scraped("civicml_endpoint_errors_total", status="4xx") == 1, what="4xx")
        flushed = _until(lambda: sum((f := _flushed(home)).values()) == sent and f, what="flush")
        writers = {int(source.split(":")[1]) for source in flushed}
        assert writers == set(pids.values())  # a key of its own per process

        # Captured records: spool files named by each writer's pid (stored after a minute).
        _until(lambda: sum(_spooled_lines(home, keys).values()) + _stored(ctx) == sent)
        spooled = _spooled_lines(home, keys)
        assert set(spooled) <= set(pids.values()), spooled

        # A killed worker is started again; the dead one's counts stay in the totals.
        os.kill(pids["1"], signal.SIGKILL)
        restarted = _until(lambda: _replaced(_try(_workers, url), pids), what="worker 1 again")
        assert restarted["0"] == pids["0"]
        assert scraped("civicml_endpoint_invocations_total") == sent
        more = 0
        while more < 400 and not _answered_by(url).get(restarted["1"]):
            more += _invoke(port, connections=8, per_connection=2)
        assert _answered_by(url).get(restarted["1"]), "the new worker 1 never answered"
        _until(lambda: scraped("civicml_endpoint_invocations_total") == sent + more)

        # SIGTERM stops every worker, gracefully: the supervisor exits 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log.read_text()
    for pid in restarted.values():
        assert not _alive(pid)
    text = log.read_text()
    assert "worker 1" in text and "signal 9" in text  # the restart was logged

    # Every captured record is stored once, the killed worker's spool by the new worker.
    captured = list(CaptureService(ctx).records(PROJECT, "web"))
    ids = [r["eventMetadata"]["inferenceId"] for r in captured]
    assert len(ids) == sent + more and len(set(ids)) == len(ids)
    assert _spooled_lines(home, keys) == {}


def _replaced(workers: dict[str, int], before: dict[str, int]) -> dict[str, int] | None:
    """``workers`` once worker 1 runs in a new process beside the same worker 0."""
    if len(workers) == 2 and workers["1"] != before["1"]:
        return workers
    return None


def _try(read: Callable[[str], Any], url: str) -> Any:
    """``read(url)``, or an empty dict while the server does not answer yet."""
    try:
        return read(url)
    except (httpx.TransportError, AssertionError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
