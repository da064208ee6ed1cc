"""Data capture: SageMaker's record format, sampling, rotation, failures, and to_dataset."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from civicml.core import FrozenClock, InvalidInputError
from civicml.core.identity import Principal
from civicml.data import DatasetService
from civicml.governance.lineage import LineageService
from civicml.serving import CaptureService, CaptureWriter, EndpointService, ModelHost
from civicml.store import Context
from tests.serving.helpers import CAPTURE_EVENT, MODEL, records, register

PATH = re.compile(r"^capture/\d{4}/\d{2}/\d{2}/\d{2}/[0-9a-f-]{36}\.jsonl$")


def _deploy(ctx: Context, host: ModelHost, model_dir: Path, percent: float) -> str:
    register(ctx, model_dir)
    EndpointService(ctx, host).deploy("benefits", "web", MODEL, 1, capture_percent=percent)
    return "benefits"


def test_captured_records_have_sagemakers_format(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost, clock: FrozenClock
) -> None:
    _deploy(ctx, host, model_dirs[0], 100)
    clock.advance(days=326, hours=10, minutes=15)  # 2026-11-23 10:15 UTC
    rows = records(4)
    result = host.invoke(project, "web", rows, caller=Principal(user="rosa"))
    files = CaptureService(ctx, host.capture).files(project, "web")
    assert len(files) == 1
    assert PATH.match(files[0].path) and files[0].path.startswith("capture/2026/11/23/10/")
    assert files[0].owner_kind == "endpoint" and files[0].media_type == "application/x-ndjson"
    lines = ctx.artifacts.read_bytes(files[0].digest).decode().splitlines()
    captured = [json.loads(line) for line in lines]
    assert len(captured) == 4
    first = captured[0]
    assert set(first) == {"captureData", "eventMetadata", "eventVersion"}
    assert first["eventVersion"] == "0"
    inp, out = first["captureData"]["endpointInput"], first["captureData"]["endpointOutput"]
    assert {k: inp[k] for k in ("observedContentType", "mode", "encoding")} == {
        "observedContentType": "application/json",
        "mode": "INPUT",
        "encoding": "JSON",
    }
    assert out["mode"] == "OUTPUT"
    assert json.loads(inp["data"]) == rows[0]
    assert json.loads(out["data"]) == {
        "prediction": result["predictions"][0],
        "probabilities": result["probabilities"][0],
        "classes": [False, True],
    }
    meta = first["eventMetadata"]
    assert [c["eventMetadata"]["eventId"] for c in captured] == result["inference_ids"]
    assert meta["inferenceId"] == meta["eventId"]
    assert meta["inferenceTime"] == "2026-11-23T10:15:00.000Z"
    assert (meta["endpointName"], meta["modelName"], meta["modelVersion"]) == ("web", MODEL, 1)
    assert {c["eventMetadata"]["caller"] for c in captured} == {"rosa"}  # who asked


def test_the_caller_defaults_to_the_hosts_principal(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _deploy(ctx, host, model_dirs[0], 100)
    host.invoke(project, "web", records(1))
    [captured] = CaptureService(ctx, host.capture).records(project, "web")
    assert captured["eventMetadata"]["caller"] == ctx.principal.user == "alice"


@pytest.mark.parametrize(("percent", "expected"), [(0, 0), (100, 10)])
def test_sampling_honours_the_percentage(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    host: ModelHost,
    percent: float,
    expected: int,
) -> None:
    _deploy(ctx, host, model_dirs[0], percent)
    for _ in range(10):
        host.invoke(project, "web", records(1))
    assert len(list(CaptureService(ctx, host.capture).records(project, "web"))) == expected


def test_sampling_draws_per_request() -> None:
    draws = iter([0.1, 0.3, 0.29, 0.99])
    writer = CaptureWriter.__new__(CaptureWriter)
    writer._random = lambda: next(draws)
    assert [writer.sampled(30) for _ in range(4)] == [True, False, True, False]


def test_files_rotate_by_size_and_hour(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], clock: FrozenClock
) -> None:
    host = ModelHost(ctx, capture=CaptureWriter(ctx, max_bytes=1, max_age_s=3600))
    try:
        _deploy(ctx, host, model_dirs[0], 100)
        host.invoke(project, "web", records(2))
        host.invoke(project, "web", records(2))
        clock.advance(hours=1)
        host.invoke(project, "web", records(2))
        files = CaptureService(ctx, host.capture).files(project, "web")
    finally:
        host.close()
    assert len(files) == 3
    assert [f.path[:21] for f in files] == ["capture/2026/01/01/00"] * 2 + ["capture/2026/01/01/01"]
    since = datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert len(list(CaptureService(ctx).records(project, "web", since))) == 2


def test_a_capture_failure_does_not_fail_the_request(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    host: ModelHost,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _deploy(ctx, host, model_dirs[0], 100)

    def broken(*_args: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(ctx.artifacts, "put_file", broken)
        patch.setattr(ctx.artifacts, "put_bytes", broken)  # sealed spools are stored as bytes
        with caplog.at_level(logging.ERROR, logger="civicml.serving.capture"):
            result = host.invoke(project, "web", records(3))
            assert host.capture.flush()
    assert len(result["predictions"]) == 3
    assert "data capture failed" in caplog.text and "disk full" in caplog.text
    assert host.capture.failed >= 1
    host.invoke(project, "web", records(2))  # capture works again afterwards
    assert len(list(CaptureService(ctx, host.capture).records(project, "web"))) == 2

    with monkeypatch.context() as patch:  # even a failing submit leaves the request alone
        patch.setattr(host.capture, "submit", broken)
        assert len(host.invoke(project, "web", records(1))["predictions"]) == 1


def test_to_dataset_holds_the_captured_columns(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _deploy(ctx, host, model_dirs[0], 100)
    with pytest.raises(InvalidInputError, match="Endpoint 'web' has no captured records"):
        CaptureService(ctx, host.capture).to_dataset(project, "web")
    sent = records(5) + records(3, seed=2)
    answered = host.invoke(project, "web", sent[:5])["predictions"]
    answered += host.invoke(project, "web", sent[5:], caller=Principal(user="rosa"))["predictions"]
    version = CaptureService(ctx, host.capture).to_dataset(project, "web", metadata=True)
    assert version.name == "web-capture" and version.row_count == 8
    assert [c.name for c in version.columns] == [
        "age",
        "income",
        "region",
        "prediction",
        "inference_id",
        "inference_time",
        "model_version",
        "caller",
        "variant",
    ]
    frame = DatasetService(ctx).to_pandas(version)
    assert frame[["age", "income", "region"]].to_dict("records") == sent
    assert frame["caller"].tolist() == ["alice"] * 5 + ["rosa"] * 3
    assert frame["variant"].tolist() == ["v1"] * 8  # the one variant deploy made
    plain = CaptureService(ctx, host.capture).to_frame(project, "web")
    assert "caller" not in plain.columns  # metadata, never a model input column
    assert frame["prediction"].tolist() == answered
    graph = LineageService(ctx).query("dataset_version", version.id, direction="upstream")
    assert "endpoint" in {n.kind for n in graph.nodes}


def test_the_writers_lines_are_the_capture_records_byte_for_byte() -> None:
    """The writer formats lines without building each record (capture_lines); what it writes is
    exactly the compact JSON of capture_records, for every kind of event."""
    import pandas as pd

    from civicml.serving.capture import CaptureEvent, capture_lines, capture_records

    base: dict[str, Any] = dict(CAPTURE_EVENT)
    frame = pd.DataFrame([{"a": 1, "b": float("nan"), "c": "x"}, {"a": 2, "b": 1.0, "c": None}])
    events = [
        CaptureEvent(**base),
        CaptureEvent(**{**base, "probabilities": None, "predictions": [1.5], "latency_ms": 2.0}),
        CaptureEvent(
            **{
                **base,
                "error": "non_finite_output",
                "latency_ms": None,
                "caller": None,
                "variant": None,
            }
        ),
        CaptureEvent(
            **{
                **base,
                "records": frame,
                "predictions": ["a", "b"],
                "classes": ["a", "b"],
                "probabilities": [[0.1, 0.9], [0.5, 0.5]],
                "inference_ids": ["x", "y"],
                "shadow": True,
            }
        ),
    ]
    for event in events:
        want = b"".join(
            json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in capture_records(event)
        )
        assert capture_lines(event) == want


def test_the_lines_match_the_records_for_odd_outputs_times_and_cached_parts() -> None:
    """Parts capture_lines keeps (the classes' encoded end, the second of the time) or escapes
    on their own (a prediction that needs escaping) give the bytes of capture_records: quoted
    and non-ASCII labels, the same classes list with other probabilities, a time in another
    zone, the last microsecond of a second, and the next second."""
    from datetime import timedelta, timezone

    from civicml.serving.capture import CaptureEvent, capture_lines, capture_records

    classes = ['a"b\\', "né", "c"]
    base: dict[str, Any] = {
        "project_id": "p",
        "endpoint_id": "e",
        "endpoint": "web",
        "model_name": "m",
        "model_version": 1,
        "model_version_id": "mv",
        "time": datetime(2026, 11, 23, 10, 59, 59, 999999, tzinfo=UTC),
        "request_id": "r",
        "records": [{"x": 1.5}, {"x": -0.0}],
        "predictions": ['a"b\\', "né"],
        "probabilities": [[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]],
        "classes": classes,
        "inference_ids": ["i1", "i2"],
        "latency_ms": 1e-05,
    }
    plus_two = timezone(timedelta(hours=2))
    events = [
        CaptureEvent(**base),
        CaptureEvent(**{**base, "probabilities": [[1.0, 0.0, 0.0], [0.1, 0.2, 0.7]]}),
        CaptureEvent(**{**base, "time": datetime(2026, 11, 23, 13, 0, 0, 500, tzinfo=plus_two)}),
        CaptureEvent(**{**base, "time": datetime(2026, 11, 23, 11, 0, 0, tzinfo=UTC)}),
        CaptureEvent(**{**base, "classes": list(classes), "predictions": [0, 2]}),
        CaptureEvent(**{**base, "probabilities": None, "predictions": [None, {"k": "v"}]}),
    ]
    lines = [capture_lines(event) for event in events]
    for event, got in zip(events, lines, strict=True):
        want = b"".join(
            json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in capture_records(event)
        )
        assert got == want
    assert b'"inferenceTime":"2026-11-23T10:59:59.999Z"' in lines[0]
    assert b'"inferenceTime":"2026-11-23T11:00:00.000Z"' in lines[2]
    assert b'"inferenceTime":"2026-11-23T11:00:00.000Z"' in lines[3]


def test_plain_records_skip_the_check_and_give_the_same_bytes() -> None:
    """An event marked plain (the fast path took its records) is formatted without checking each
    value, to the same bytes; one that is not marked still goes the safe way (NumPy values as
    Python, NaN as null, timestamps as ISO 8601); a wrongly marked record holding NaN fails that
    event rather than writing a line that is not JSON."""
    import numpy as np
    import pandas as pd

    from civicml.serving.capture import CaptureEvent, capture_lines, capture_records

    base: dict[str, Any] = {
        **CAPTURE_EVENT,
        "records": [{"age": 41, "income": 1520.5, "region": "north", "member": None}],
    }
    plain = CaptureEvent(**base, plain=True)
    assert capture_lines(plain) == capture_lines(CaptureEvent(**base))
    odd = [
        {
            "age": np.int64(41),
            "income": float("nan"),
            "when": pd.Timestamp("2026-01-02", tz="UTC"),
            "region": None,
        }
    ]
    safe = CaptureEvent(**{**base, "records": odd})
    [record] = capture_records(safe)
    data = json.loads(record["captureData"]["endpointInput"]["data"])
    assert data == {"age": 41, "income": None, "when": "2026-01-02T00:00:00+00:00", "region": None}
    assert json.loads(capture_lines(safe)) == record
    with pytest.raises(ValueError, match="not JSON compliant"):
        capture_lines(CaptureEvent(**{**base, "records": [{"income": math.nan}]}, plain=True))


def test_only_records_the_fast_path_took_are_captured_as_plain(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    """The event of a request answered on the fast path says its records are plain; a
    DataFrame's does not; both are captured alike."""
    import pandas as pd

    from civicml.serving.capture import CaptureEvent

    _deploy(ctx, host, model_dirs[0], 100)
    host.invoke(project, "web", records(1))  # loads the model and the route
    events: list[CaptureEvent] = []
    submit = host.capture.submit

    def keep(event: Any) -> None:
        events.append(event)
        submit(event)

    host.capture.submit = keep  # type: ignore[method-assign]
    rows = records(2, seed=5)
    assert host.invoke_nowait(project, "web", rows) is not None
    host.invoke(project, "web", pd.DataFrame(rows))
    assert [e.plain for e in events] == [True, False]
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    inputs = [json.loads(c["captureData"]["endpointInput"]["data"]) for c in captured[-4:]]
    assert inputs == rows + rows


def test_the_writer_hands_the_interpreter_lock_over_within_a_batch(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Formatting a batch, the writer yields the interpreter lock after every YIELD_EVERY
    events (a request waiting for it waits for a few events' formatting, not the batch's),
    and still writes every event."""
    from civicml.serving import capture as capture_module
    from civicml.serving.capture import CaptureEvent, CaptureWriter

    yields: list[float] = []
    monkeypatch.setattr(capture_module.time, "sleep", yields.append)
    writer = CaptureWriter(ctx, max_age_s=3600)
    event = {
        "project_id": "p",
        "endpoint_id": "e",
        "endpoint": "web",
        "model_name": "m",
        "model_version": 1,
        "model_version_id": "mv",
        "time": datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC),
        "records": [{"age": 41}],
        "predictions": [1],
        "probabilities": None,
        "classes": None,
        "caller": "alice",
        "variant": "v1",
        "latency_ms": 0.1,
    }
    count = 3 * capture_module.YIELD_EVERY + 1
    events = [
        CaptureEvent(**event, request_id=f"r{i}", inference_ids=[f"i{i}"]) for i in range(count)
    ]
    try:
        writer._append_all(events)
        assert yields == [0, 0, 0]
        written = writer._spools["e"].size
        assert written == sum(len(capture_module.capture_lines(e)) for e in events)
    finally:
        for spool in writer._spools.values():  # the writer's thread never ran: nothing rotates
            spool.handle.close()
        writer.close()


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"records":[{"x":1.5}]}', b'{"x":1.5}'),
        (b'{"records":[ {"x": 1.5e0, "y":"\\u00e9"}\t]}\t ', b' {"x": 1.5e0, "y":"\\u00e9"}\t'),
        (b'{"records":[{"x":1},{"x":2}]}', b'{"x":1},{"x":2}'),
        (b'{"x":1.5}', None),  # a bare record
        (b'[{"x":1.5}]', None),
        (b'{ "records":[{"x":1.5}]}', b'{"x":1.5}'),  # spaces in the head
        (b'{"records": [{"x": 1.5}, {"x": 2}]}', b'{"x": 1.5}, {"x": 2}'),  # json.dumps's
        (b'{"records": [{"x": 1.5}] } \r\n', b'{"x": 1.5}'),
        (b'{\t"records"\t:\t[{"x":1.5}]\t}', b'{"x":1.5}'),
        (b'{\n"records": [{"x":1.5}]}', None),  # over several lines
        (b'{"records": [{"x":1.5}]\n}', None),
        (b'{"\\u0072ecords":[{"x":1.5}]}', None),  # another spelling of the key
        (b'\xef\xbb\xbf{"records":[{"x":1.5}]}', None),  # a byte-order mark
        (b'{"records":[{"x": 1.5,\n"y": 2}]}', None),  # a record over several lines
        (b'{"records":[{"x": 1.5,\r"y": 2}]}', None),
        (b'{"records":[]}', None),
    ],
)
def test_the_sent_text_of_a_records_body(body: bytes, text: bytes | None) -> None:
    from civicml.server.routers.serving import parse_records
    from civicml.serving.capture import sent_text

    records = parse_records(body) if not body.startswith(b"\xef") else [{"x": 1.5}]
    assert sent_text(body, records) == text


@pytest.mark.parametrize(
    ("text", "count", "parts"),
    [
        (b' {"x": 1.5e0}\t', 1, [b'{"x": 1.5e0}']),
        (b'{"x":1} , {"x":2},{"x":3}', 3, [b'{"x":1}', b'{"x":2}', b'{"x":3}']),
        (  # braces, brackets, commas, quotes and escapes inside strings
            b'{"a":"}{,\\"","b":[1,2]},{"a":"\\\\"}',
            2,
            [b'{"a":"}{,\\"","b":[1,2]}', b'{"a":"\\\\"}'],
        ),
        (b'{"x":1},{"x":2}', 3, None),  # not the records it should be
        (b'{"x":1},{"x":{"y":2}}', 2, None),  # a record holding an object
        (b'{"x":{"y":2}},{"x":1}', 2, None),
        (b'{"x":1}{"x":2}', 2, None),  # no comma between them
        (b'{"x":1},,{"x":2}', 2, None),
    ],
)
def test_records_are_cut_from_their_text_only_when_it_is_exactly_them(
    text: bytes, count: int, parts: list[bytes] | None
) -> None:
    from civicml.serving._capture_format import _sent_records

    assert _sent_records(text, count) == parts
    if parts is not None:
        assert [json.loads(p) for p in parts] == json.loads(b"[" + text + b"]")


def test_a_record_captured_as_sent_is_the_same_record() -> None:
    """With the record's text known (CaptureEvent.text), the line carries that text as its
    input data, escaped into one line; it decodes to the record, and the lines are still the
    capture records byte for byte."""
    from civicml.serving.capture import CaptureEvent, capture_lines, capture_records

    text = b'{ "age" : 41,"income":1.5205e3,\n"region":"n\xc3\xb6rth\\n","member":true }'
    record = json.loads(text)
    event = CaptureEvent(
        project_id="p",
        endpoint_id="e",
        endpoint="web",
        model_name="m",
        model_version=1,
        model_version_id="mv",
        time=datetime(2026, 11, 23, 10, 15, 2, tzinfo=UTC),
        request_id="r",
        records=[record],
        predictions=[True],
        probabilities=[[0.25, 0.75]],
        classes=[False, True],
        inference_ids=["i1"],
        plain=True,
        text=text,
    )
    lines = capture_lines(event)
    assert lines.count(b"\n") == 1 and lines.isascii()
    assert lines == b"".join(
        json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in capture_records(event)
    )
    data = json.loads(lines)["captureData"]["endpointInput"]["data"]
    assert data == text.decode()
    assert (
        json.loads(data)
        == record
        == {
            "age": 41,
            "income": 1520.5,
            "region": "nörth\n",
            "member": True,
        }
    )
