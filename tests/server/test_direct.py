"""The direct lane (``server/direct.py``) through a real server: a small invocation it answers
is answered exactly as the app answers it; whatever it does not answer reaches the app."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import TokenCreate
from civicml.server import create_app
from civicml.server.direct import DirectLane, direct_lane
from civicml.server.transport import _direct_lane_of
from civicml.serving.capture import CaptureService
from civicml.store import Context
from tests.server.helpers import isolated_settings, serve
from tests.server.test_auth import mint
from tests.serving.helpers import MODEL, PROJECT, records, register, train

PATH = f"/endpoints/live/invocations?project={PROJECT}"
WAIT_S = 30.0


class Counted:
    """Wraps a lane's ``answer``: what it answered (True) or handed to the app (False)."""

    def __init__(self, lane: DirectLane) -> None:
        self.answer = lane.answer
        self.seen: list[bool] = []

    def __call__(self, scope: Any, body: bytes) -> Any:
        answered = self.answer(scope, body)
        self.seen.append(answered is not None)
        return answered


def _deploy(ctx: Context, tmp_path: Path) -> None:
    from civicml.serving.service import EndpointService

    ProjectService(ctx).create(PROJECT)
    train(tmp_path / "model")
    mv = register(ctx, tmp_path / "model")
    EndpointService(ctx).deploy(PROJECT, "live", MODEL, mv.version, capture_percent=100.0)


def deployed_app(settings: Settings, tmp_path: Path) -> Any:
    """The server's app on ``settings``' home, with the endpoint deployed (by an admin, on
    the home itself, before the server starts)."""
    from civicml.sdk.embedded import open_context

    ctx = open_context(settings, Principal(user="root-admin", roles=frozenset({"admin"})))
    try:
        _deploy(ctx, tmp_path)
    finally:
        ctx.db.close()
    return create_app(settings)


@pytest.fixture
def app(settings: Settings, ctx: Context, tmp_path: Path) -> Iterator[Any]:
    _deploy(ctx, tmp_path)
    application = create_app(settings)
    yield application
    host = getattr(application.state, "serving", None)
    if host is not None:
        host.close()


def counted_lane(app: Any, monkeypatch: pytest.MonkeyPatch) -> Counted:
    """The app's direct lane, counting what it answers."""
    found = direct_lane(app)
    assert found is not None
    counted = Counted(found)
    monkeypatch.setattr(found, "answer", counted)
    return counted


@pytest.fixture
def lane(app: Any, monkeypatch: pytest.MonkeyPatch) -> Counted:
    counted = counted_lane(app, monkeypatch)
    # a body 0.2 s behind its head (``_exchange``'s pause) goes to the app
    monkeypatch.setattr("civicml.server.transport.DIRECT_BODY_WAIT_S", 0.05)
    return counted


@pytest.fixture
def url(app: Any, lane: Counted) -> Iterator[str]:
    with serve(app) as base:
        _warm(base, lane)
        yield base


def _warm(base: str, lane: Counted) -> None:
    """The first invocation loads the endpoint's route, in the app; the lane answers later."""
    import httpx

    assert httpx.post(base + PATH, json={"records": records(1)}, timeout=WAIT_S).is_success
    lane.seen.clear()


def _request(
    body: bytes, *, path: str = PATH, host: str = "127.0.0.1", extra: str = ""
) -> tuple[bytes, bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode()
    return head, body


def _exchange(
    url: str, pieces: list[bytes], answers: int = 1
) -> list[tuple[int, list[Any], bytes]]:
    """Send ``pieces`` on one connection (a pause between them: separate reads on the
    server), read ``answers`` responses: (status, header pairs without the date, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.2)
            sock.sendall(piece)
        data, out = b"", []
        while len(out) < answers:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            pairs = [tuple(line.split(": ", 1)) for line in lines[1:]]
            length = int(dict(pairs)["content-length"])
            while len(data) < length:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                data += chunk
            body, data = data[:length], data[length:]
            out.append((int(lines[0].split()[1]), [p for p in pairs if p[0] != "date"], body))
    return out


def _chunked(body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    return head + (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"


def _without_ids(body: bytes) -> Any:
    value = json.loads(body)
    if isinstance(value, dict):
        value.pop("inference_ids", None)
    return value


BODIES = [  # (body, whether the lane answers it: else the model host wants its worker thread)
    (json.dumps({"records": records(1)}).encode(), True),
    (json.dumps({"records": records(3)}).encode(), True),
    (json.dumps(records(1)[0]).encode(), True),  # one bare record
    (b'{"records": [{"age": 41, "income": NaN, "region": "north"}]}', False),  # 422
    (b'{"records": [{"age": 41}]}', False),  # 422: columns are missing
    (b'{"records": [{"age": 41, "age": 42}]}', True),  # 400: a duplicate key
    (b"not json", True),  # 400
    (b"", True),  # 400
]


@pytest.mark.parametrize(("body", "answered"), BODIES)
def test_the_lane_answers_exactly_what_the_app_answers(
    url: str, lane: Counted, body: bytes, answered: bool
) -> None:
    head, payload = _request(body)
    ((status, headers, direct),) = _exchange(url, [head + payload])
    assert lane.seen == [answered]
    # the body 0.2 s after its head (an empty one chunked): the lane hands it to the app
    pieces = [head, payload] if body else [_chunked(body)]
    ((app_status, app_headers, routed),) = _exchange(url, pieces)
    assert lane.seen == [answered]  # the lane was not asked again: the app answered
    assert (status, headers) == (app_status, app_headers)
    assert _without_ids(direct) == _without_ids(routed)
    if status == 200:
        assert headers[-6:] == [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-resource-policy", "same-origin"),
            ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
            ("cache-control", "no-store"),
        ]
        assert ("civicml-variant", "v1") in headers
    else:
        assert json.loads(direct)["status"] == status


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/endpoints/nowhere/invocations?project={PROJECT}", 404),
        (f"/endpoints/live/invocations?project={PROJECT}&explain=maybe", 422),
        (f"/endpoints/live/invocations?project={PROJECT}&variant=nope", 404),
        (f"/api/v1/projects/{PROJECT}/endpoints/live/invocations", 200),
    ],
)
def test_refusals_and_the_long_path_are_the_apps_answers(
    url: str, lane: Counted, path: str, status: int
) -> None:
    head, payload = _request(json.dumps({"records": records(1)}).encode(), path=path)
    ((got, headers, direct),) = _exchange(url, [head + payload])
    ((app_got, app_headers, routed),) = _exchange(url, [head, payload])
    assert got == app_got == status
    assert headers == app_headers and _without_ids(direct) == _without_ids(routed)


def test_a_body_written_apart_from_its_head_is_answered_by_the_lane(
    url: str, lane: Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    monkeypatch.setattr("civicml.server.transport.DIRECT_BODY_WAIT_S", 5.0)
    head, payload = _request(json.dumps({"records": records(2)}).encode())
    ((status, _, answer),) = _exchange(url, [head, payload])  # 0.2 s apart
    assert status == 200 and len(json.loads(answer)["predictions"]) == 2
    with httpx.Client(base_url=url, timeout=WAIT_S) as client:  # writes head and body apart
        for _ in range(3):
            assert client.post(PATH, json={"records": records(1)}).status_code == 200
    assert lane.seen == [True, True, True, True]


def test_a_stalled_body_goes_to_the_app_and_gets_its_408(
    app: Any, lane: Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civicml.server.guard import BodyLimits, GuardMiddleware

    found = direct_lane(app)
    assert found is not None
    monkeypatch.setattr(found.guard, "limits", BodyLimits(body_timeout_s=0.3))
    assert isinstance(found.guard, GuardMiddleware)
    with serve(app) as base:
        head, payload = _request(json.dumps({"records": records(1)}).encode())
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
            sock.sendall(head + payload[:10])  # and nothing more
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk
                data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")
    assert lane.seen == []  # never offered: handed to the app with its first 10 bytes


def test_what_the_guard_refuses_reaches_the_guard(url: str, lane: Counted) -> None:
    body = json.dumps({"records": records(1)}).encode()
    head, payload = _request(body, host="evil.example")
    ((status, _, answer),) = _exchange(url, [head + payload])
    assert status == 400 and "not allowed" in json.loads(answer)["message"]
    head, payload = _request(body, extra="Origin: https://evil.example\r\n")
    ((status, _, answer),) = _exchange(url, [head + payload])
    assert status == 403 and "Cross-site" in json.loads(answer)["message"]
    assert lane.seen == [False, False]  # asked, handed on: the guard answered


def test_requests_the_lane_does_not_take_still_work(url: str, lane: Counted) -> None:
    body = json.dumps({"records": records(1)}).encode()
    chunked = (
        (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n"
        ).encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    old = (
        f"POST {PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    explained = _request(body, path=PATH + "&explain=true")
    for pieces in ([chunked], [old], [b"".join(explained)]):
        ((status, _, answer),) = _exchange(url, pieces)
        assert status == 200, answer
        assert json.loads(answer)["predictions"]
    assert lane.seen == [False]  # only the explained request was offered, and handed on


def test_pipelined_requests_are_answered_in_order(url: str, lane: Counted) -> None:
    bodies = [json.dumps({"records": records(n)}).encode() for n in (1, 2, 3)]
    pieces = b"".join(b"".join(_request(b)) for b in bodies)
    answers = _exchange(url, [pieces], answers=3)
    assert [len(json.loads(a[2])["predictions"]) for a in answers] == [1, 2, 3]
    assert lane.seen == [True, True, True]


def test_captured_records_name_the_variant_and_the_caller(
    url: str, lane: Counted, app: Any, ctx: Context
) -> None:
    answers = []
    for extra in ("", "X-CivicML-User: bob\r\n"):
        head, payload = _request(json.dumps({"records": records(2)}).encode(), extra=extra)
        ((status, _, answer),) = _exchange(url, [head + payload])
        assert status == 200
        answers.append(json.loads(answer)["inference_ids"])
    assert lane.seen == [True, True]
    assert app.state.serving.capture.flush()
    meta = {
        c["eventMetadata"]["inferenceId"]: c["eventMetadata"]
        for c in CaptureService(ctx).records(PROJECT, "live")
    }
    server = app.state.civicml.ctx.principal.user
    for ids, caller in zip(answers, (server, "bob"), strict=True):
        assert [meta[i]["caller"] for i in ids] == [caller, caller]
        assert [meta[i]["variant"] for i in ids] == ["v1", "v1"]


def test_an_app_with_other_middleware_gets_no_lane(settings: Settings) -> None:
    app = create_app(settings)

    class Other:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    assert direct_lane(app) is not None
    # Middleware of the app outside its guard: invocations enter at the guard, in the app as in
    # the lane (InvocationsFirstApp). A layer around the app that uvicorn serves: no lane.
    outside = create_app(settings)
    outside.add_middleware(Other)
    assert direct_lane(outside) is not None and _direct_lane_of(Other(outside)) is None
    inside = create_app(settings)
    inside.user_middleware.insert(1, inside.user_middleware[0].__class__(Other))
    assert direct_lane(inside) is None  # between the guard and the lane: no lane at all


def test_with_tokens_only_a_cached_caller_with_the_permission_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(tmp_path, auth="token")
    app = deployed_app(settings, tmp_path)
    counted = counted_lane(app, monkeypatch)
    assert app.state.direct_lane.auth is not None
    invoker = mint(settings, TokenCreate(name="invoker")).secret
    viewer = mint(
        settings,
        TokenCreate(name="viewer", kind="service", owner="dash", roles=["viewer"]),
    ).secret
    body = json.dumps({"records": records(1)}).encode()
    try:
        with serve(app) as url:
            results = []
            for extra in (
                "",  # no token: 401 from the authentication layer
                f"Authorization: Bearer {invoker}\r\n",  # first use: verified by the app
                f"Authorization: Bearer {invoker}\r\n",  # cached: the lane answers
                f"Authorization: Bearer {viewer}\r\n",
                f"Authorization: Bearer {viewer}\r\n",  # cached, without endpoints.invoke
            ):
                head, payload = _request(body, extra=extra)
                ((status, _, answer),) = _exchange(url, [head + payload])
                results.append(status)
    finally:
        app.state.serving.close()
    assert results == [401, 200, 200, 403, 403]
    assert counted.seen == [False, False, True, False, True]
    assert "endpoints.invoke" in json.loads(answer)["message"]


def test_a_header_value_uvicorn_would_refuse_is_a_500_not_a_split_answer(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variant name with a line break would split the answer's head (names are checked
    when a variant is made; this is the lane's own guard, as uvicorn has one)."""
    from civicml.server.routers import serving

    found = direct_lane(app)
    assert found is not None
    monkeypatch.setattr(
        serving, "answer_now", lambda *a, **k: (b'{"predictions":[]}', "v1\r\nx-evil: 1", None)
    )
    monkeypatch.setattr(serving, "model_host_of", lambda app: None)  # the app is not started
    monkeypatch.setattr(serving, "lane_caller", lambda scope: None)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/endpoints/live/invocations",
        "query_string": f"project={PROJECT}".encode(),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
    }
    answered = found.answer(scope, b"{}")
    assert answered is not None
    status, headers, body = answered
    assert status == 500 and json.loads(body)["error"] == "InternalError"
    assert all(b"\r" not in value and b"\n" not in value for _, value in headers)
