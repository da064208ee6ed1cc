"""Non-finite numbers and the caller through a real server (uvicorn in a thread): a bare NaN in
a record is a 422, a model answering NaN is a 502 (counted, captured, never invalid JSON), and
captured records name who called."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.core import InvalidInputError, Settings
from civicml.sdk.client import connect
from civicml.sdk.endpoints import EndpointsHandle
from civicml.server import create_app
from civicml.serving import CaptureService
from civicml.store import Context
from tests.server.helpers import API, assert_error, serve
from tests.serving.helpers import MODEL, PROJECT, records, register, train_nan

BASE = f"{API}/projects/{PROJECT}/endpoints"
JSON = {"content-type": "application/json"}


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    """The real app (the one ``civicml server`` runs) on the tests' home."""
    application = create_app(settings)
    yield application
    host = getattr(application.state, "serving", None)
    if host is not None:
        host.close()


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    with serve(app) as url:
        yield url


def _flush(app: Any) -> None:
    """Write out what the server's capture writer holds, as it does every minute."""
    assert app.state.serving.capture.flush()


@pytest.mark.parametrize("fast", [True, False])
def test_a_model_answering_nan_is_a_502_over_http(
    ctx: Context,
    project: str,
    tmp_path: Path,
    live_server: str,
    app: Any,
    monkeypatch: pytest.MonkeyPatch,
    fast: bool,
) -> None:
    train_nan(tmp_path / "nan-model")
    register(ctx, tmp_path / "nan-model")
    if fast:  # the compiled path computes the same NaN; the lane answers on the event loop
        monkeypatch.setattr("civicml.serving.fastpath._agrees", lambda fast, model: True)
    else:
        monkeypatch.setattr("civicml.serving.runtime.compile_fast_path", lambda model: None)
    with httpx.Client(base_url=live_server, timeout=30) as api:
        deployed = api.post(BASE, json={"name": "broken", "model": MODEL, "version": 1})
        assert deployed.status_code == 201, deployed.text
        for path in (f"{BASE}/broken/invocations", "/endpoints/broken/invocations"):
            response = api.post(path, params={"project": PROJECT}, json=records(2))
            body = assert_error(response, 502, "ModelOutputError", "returned a non-finite value")
            json.loads(response.text)  # strict JSON: no bare NaN anywhere in the answer
            assert "record 0 of 2" in body["message"] and "civicml endpoints update" in body["hint"]
            assert body["details"] == [{"record": 0, "problem": "non_finite_output"}]
        stats = api.get(f"{BASE}/broken").json()["stats"]
        assert stats["output_errors"] == 2 and stats["invocations"] == 0
    _flush(app)
    captured = list(CaptureService(ctx).records(project, "broken"))
    assert {c["captureData"]["endpointOutput"]["data"] for c in captured} == {
        '{"error":"non_finite_output"}'
    }


def test_bare_nan_in_a_record_is_a_422_over_http(
    ctx: Context, project: str, tmp_path: Path, live_server: str
) -> None:
    register(ctx, _saved(tmp_path))
    with httpx.Client(base_url=live_server, timeout=30) as api:
        assert api.post(BASE, json={"name": "web", "model": MODEL, "version": 1}).is_success
        good = json.dumps(records(2))
        for constant in ("NaN", "Infinity", "-Infinity"):
            body = good.replace(json.dumps(records(2)[1]["income"]), constant)
            for path in (f"{BASE}/web/invocations", "/endpoints/web/invocations"):
                refused = api.post(path, params={"project": PROJECT}, content=body, headers=JSON)
                found = assert_error(
                    refused,
                    422,
                    "InvalidInputError",
                    f"Column 'income' has a non-finite value ({constant}) in record 1",
                )
                assert "null" in found["hint"]
                assert found["details"][0] == {
                    "column": "income",
                    "problem": "not_finite",
                    "record": 1,
                    "got": constant,
                }
        stats = api.get(f"{BASE}/web").json()["stats"]
        assert stats["output_errors"] == 0
    with connect(live_server) as remote:  # the SDK refuses before sending: JSON has no NaN
        endpoint = EndpointsHandle(remote.backend, PROJECT).get("web")
        rows = records(2)
        rows[1]["income"] = math.nan
        with pytest.raises(InvalidInputError, match=r"Column 'income' .*\(NaN\) in record 1"):
            endpoint.predict(rows)


def test_captured_records_name_the_caller_over_http(
    ctx: Context, project: str, tmp_path: Path, live_server: str, app: Any
) -> None:
    register(ctx, _saved(tmp_path))
    with httpx.Client(base_url=live_server, timeout=30) as api:
        assert api.post(BASE, json={"name": "web", "model": MODEL, "version": 1}).is_success
        for user, path in (
            ("rosa", f"{BASE}/web/invocations"),
            ("omar", "/endpoints/web/invocations"),
        ):
            answer = api.post(
                path, params={"project": PROJECT}, json=records(2), headers={"x-civicml-user": user}
            )
            assert answer.status_code == 200, answer.text
        explained = api.post(
            f"{BASE}/web/invocations",
            params={"explain": "true"},
            json=records(1),
            headers={"x-civicml-user": "lena"},
        )
        assert explained.status_code == 200, explained.text
        made = api.post(f"{BASE}/web/capture/dataset", json={"metadata": True})
        assert made.status_code == 201, made.text
        assert "caller" in [c["name"] for c in made.json()["columns"]]
        plain = api.post(f"{BASE}/web/capture/dataset", json={"dataset": "inputs-only"})
        assert "caller" not in [c["name"] for c in plain.json()["columns"]]
    _flush(app)
    callers = [r["eventMetadata"]["caller"] for r in CaptureService(ctx).records(project, "web")]
    assert sorted(callers) == ["lena", "omar", "omar", "rosa", "rosa"]


def _saved(tmp_path: Path) -> Path:
    from tests.serving.helpers import train

    train(tmp_path / "model")
    return tmp_path / "model"


def test_a_transient_failure_in_the_invocations_lane_carries_retry_after(
    ctx: Context,
    project: str,
    tmp_path: Path,
    live_server: str,
    app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 503/507 answered by the invocations lane (outside FastAPI) has Retry-After, as every
    other route's does."""
    from civicml.core.errors import InsufficientStorageError, ServiceUnavailableError

    train_nan(tmp_path / "nan-model")
    register(ctx, tmp_path / "nan-model")
    with httpx.Client(base_url=live_server, timeout=30) as api:
        deployed = api.post(BASE, json={"name": "busy", "model": MODEL, "version": 1})
        assert deployed.status_code == 201, deployed.text
        for err, status in (
            (ServiceUnavailableError("The database is locked.", retry_after=3), 503),
            (InsufficientStorageError("The artifact store is full.", retry_after=7), 507),
        ):

            def refuse(*_args: Any, _err: Exception = err, **_kwargs: Any) -> Any:
                raise _err

            monkeypatch.setattr(app.state.serving, "invoke_nowait", refuse)
            monkeypatch.setattr(app.state.serving, "invoke", refuse)
            response = api.post(f"{BASE}/busy/invocations", json=records(1))
            assert response.status_code == status, response.text
            assert response.headers["retry-after"] == str(err.retry_after)
            assert response.json()["error"] == type(err).__name__


def test_an_unexpected_error_in_the_invocations_lane_is_the_one_500(
    tmp_path: Path,
    ctx: Context,
    project: str,
    live_server: str,
    app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invocations skip FastAPI's own layers, not its last-resort handler: a bug is a 500 with
    the one error body and the security headers, and the server keeps answering."""
    train_nan(tmp_path / "nan-model")
    register(ctx, tmp_path / "nan-model")
    with httpx.Client(base_url=live_server, timeout=30) as api:
        deployed = api.post(BASE, json={"name": "buggy", "model": MODEL, "version": 1})
        assert deployed.status_code == 201, deployed.text

        def bug(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("secret-detail-17")

        monkeypatch.setattr(app.state.serving, "invoke_nowait", bug)
        monkeypatch.setattr(app.state.serving, "invoke", bug)
        response = api.post(f"{BASE}/buggy/invocations", json=records(1))
        assert_error(response, 500, "InternalError")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "secret-detail-17" not in response.text
        monkeypatch.undo()
        again = api.post(f"{BASE}/buggy/invocations", json=records(1))
        assert again.status_code in (200, 502), again.text  # the NaN model may answer 502


def test_a_one_record_body_is_captured_as_it_was_sent_over_http(
    ctx: Context, project: str, tmp_path: Path, live_server: str, app: Any
) -> None:
    """The fast lane captures each record's own text (whitespace, exponents and escapes as
    sent), of one record or several; a record over several lines is encoded again. Either way
    the data decodes to the record."""
    register(ctx, _saved(tmp_path))
    sent = b'{"records":[ {"age": 41, "income": 1.5205e3,\t"region": "\\u006eorth"} ]}\n'
    lines = b'{"records":[{\n  "age": 41,\n  "income": 1520.5,\n  "region": "north"\n}]}'
    two = records(2)
    with httpx.Client(base_url=live_server, timeout=30) as api:
        assert api.post(BASE, json={"name": "web", "model": MODEL, "version": 1}).is_success
        one = api.post(f"{BASE}/web/invocations", content=sent, headers=JSON)
        assert one.status_code == 200, one.text
        texts = [json.dumps(r, separators=(", ", ": ")) for r in two]
        body = ('{"records":[' + " ,\t".join(texts) + "]}").encode()
        pair = api.post(f"{BASE}/web/invocations", content=body, headers=JSON)
        assert pair.status_code == 200, pair.text
        pretty = api.post(f"{BASE}/web/invocations", content=lines, headers=JSON)
        assert pretty.status_code == 200, pretty.text
    _flush(app)
    data = {
        r["eventMetadata"]["inferenceId"]: r["captureData"]["endpointInput"]["data"]
        for r in CaptureService(ctx).records(project, "web")
    }
    (first,) = one.json()["inference_ids"]
    assert data[first] == '{"age": 41, "income": 1.5205e3,\t"region": "\\u006eorth"}'
    assert json.loads(data[first]) == {"age": 41, "income": 1520.5, "region": "north"}
    (third,) = pretty.json()["inference_ids"]  # over several lines: encoded again
    assert data[third] == '{"age":41,"income":1520.5,"region":"north"}'
    for inference_id, text in zip(pair.json()["inference_ids"], texts, strict=True):
        assert data[inference_id] == text  # each record of several as sent too


def test_hostile_one_record_bodies_are_refused_or_captured_as_one_valid_line(
    ctx: Context, project: str, tmp_path: Path, live_server: str, app: Any
) -> None:
    """Bodies that look like ``{"records":[{…}]}`` but are not JSON are a 400 and captured
    nowhere; odd but valid ones are answered, and each captured record is one line whose data
    decodes to the record."""
    register(ctx, _saved(tmp_path))
    record = b'{"age":41,"income":1520.5,"region":"north'
    refused = [
        b'{"records":[' + record + b'"}]} trailing',
        b'{"records":[' + record + b'"},]}',
        b'{"records":[' + record + b'\xff"}]}',  # not UTF-8
        b'{"records":[' + record + b'","age":42}]}',  # a key twice
        b'{"records":[' + record + b'"}]',  # unclosed
    ]
    answered = [
        b'{"records":[' + record + b'"}]}  \t ',
        b'{"records":[' + record + '\u2028\U0001f600"}]}'.encode(),  # raw non-ASCII
        b'{"records":[' + record + b'\\"]}\\\\"}]}',  # quotes, brackets, backslashes
        b'{"records":[' + record + b'"} , ' + record + b'},{\\"}"}]}',  # two, one looking like more
    ]
    with httpx.Client(base_url=live_server, timeout=30) as api:
        assert api.post(BASE, json={"name": "web", "model": MODEL, "version": 1}).is_success
        for body in refused:
            answer = api.post(f"{BASE}/web/invocations", content=body, headers=JSON)
            assert answer.status_code == 400, (body, answer.text)
        ids = []
        for body in answered:
            answer = api.post(f"{BASE}/web/invocations", content=body, headers=JSON)
            assert answer.status_code == 200, (body, answer.text)
            ids += answer.json()["inference_ids"]
    _flush(app)
    captured = list(CaptureService(ctx).records(project, "web"))
    assert sorted(r["eventMetadata"]["inferenceId"] for r in captured) == sorted(ids)
    regions = sorted(
        json.loads(r["captureData"]["endpointInput"]["data"])["region"] for r in captured
    )
    assert regions == sorted(
        ["north", "north\u2028\U0001f600", 'north"]}\\', "north", 'north},{"}']
    )
    for info in CaptureService(ctx).files(project, "web"):
        for line in ctx.artifacts.read_bytes(info.digest).splitlines():
            assert line.isascii()
            json.loads(line)
