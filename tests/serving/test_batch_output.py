"""What a batch job reuses and overlaps when it writes its output: the input columns' profiles
(the same profile a from-scratch ingest gives), the artifact store storing the Parquet bytes as
they are written (nothing kept when the job fails), and an output version identical in content
to ingesting the same table otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from civicml.data import personal
from civicml.data._pipeline import BackgroundPut
from civicml.data.personal import PersonalDataService
from civicml.data.profile import RESERVOIR_SIZE, Profiler
from civicml.data.service import DatasetService
from civicml.registry import RegistryService
from civicml.serving.batch import BatchService
from civicml.serving.batch_schemas import BatchJobCreate
from civicml.store import Context
from civicml.training import TabularModel, fit_tabular
from tests.serving.helpers import PROJECT, training_frame


def _profile(table: Any, batch_rows: int, known: dict[str, Any] | None = None) -> list[Any]:
    profiler = Profiler(table.schema, known)
    for batch in table.to_batches(max_chunksize=batch_rows):
        profiler.update(batch)
    return profiler.result()


def _wide(rows: int) -> Any:
    rng = np.random.default_rng(11)
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.05] = np.nan  # NaNs are missing: they take no reservoir draws
    ints = pa.array(rng.integers(0, 9, rows), mask=rng.random(rows) < 0.1)
    return pa.table(
        {
            "x": x,
            "n": ints,
            "region": rng.choice(["north", "south"], rows),
            "p": rng.random(rows),
            "q": rng.random(rows) * 3,
        }
    )


def test_reused_profiles_leave_the_other_columns_as_a_full_profile_computes_them() -> None:
    table = _wide(3 * RESERVOIR_SIZE)  # beyond the reservoir: quantiles come from draws
    full = _profile(table, 7_000)
    known = {p.name: p for p in full if p.name in ("x", "n", "region")}
    reused = _profile(table, 7_000, known)
    assert reused == full
    # Each column samples with a generator of its own: p and q alone profile as among others.
    alone = _profile(table.select(["p", "q"]), 7_000)
    assert alone == full[3:]


def test_a_reused_profile_of_other_rows_is_refused() -> None:
    table = _wide(1_000)
    known = {p.name: p for p in _profile(table.slice(0, 900), 1_000) if p.name == "x"}
    profiler = Profiler(table.schema, known)
    profiler.update(table.to_batches()[0])
    with pytest.raises(ValueError, match="covers 900 rows, not the 1000"):
        profiler.result()


def test_a_profile_of_another_type_is_not_reused() -> None:
    table = _wide(500)
    wrong = _profile(table.select(["q"]).rename_columns(["p"]), 500)[0]
    assert wrong.type == "double"
    as_int = wrong.model_copy(update={"type": "int64"})
    assert _profile(table, 100, {"p": as_int}) == _profile(table, 100)


@pytest.fixture
def scored(ctx: Context, project: str, tmp_path: Path) -> dict[str, Any]:
    """A linear model and an input version of 2,500 rows (one has no income)."""
    frame = training_frame(2_500, seed=5)
    frame.loc[3, "income"] = None
    fit_tabular(training_frame(300), "eligible", algorithm="logistic", seed=0).save(tmp_path / "m")
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted((tmp_path / "m").iterdir())}
    model = TabularModel.load(tmp_path / "m")
    RegistryService(ctx).register(PROJECT, "linear", artifacts=digests, signature=model.signature)
    version = DatasetService(ctx).ingest(project, "applications", frame, progress=False)
    return {"frame": frame, "input": version}


@pytest.mark.parametrize("chunk_rows", [2_500, 300])
def test_the_output_is_the_version_a_from_scratch_ingest_of_the_same_table_makes(
    ctx: Context, scored: dict[str, Any], chunk_rows: int
) -> None:
    datasets = DatasetService(ctx)
    job = BatchService(ctx).run(
        PROJECT,
        BatchJobCreate(
            model="linear",
            model_version=1,
            input_dataset="applications",
            output_dataset="scored",
            chunk_rows=chunk_rows,
        ),
    )
    out = datasets.get_version(PROJECT, "scored", job.output_version or 0)
    table = datasets.read(out)
    # The same rows ingested from scratch, in the job's chunks: every column profiled here.
    stream = pa.RecordBatchReader.from_batches(
        table.schema, iter(table.to_batches(max_chunksize=chunk_rows))
    )
    fresh = datasets.ingest(PROJECT, "fresh", stream, progress=False)
    assert fresh.content_hash == out.content_hash and fresh.digest == out.digest
    inputs = {p.name for p in scored["input"].profile}
    # The input columns' profiles are the input version's ...
    assert [p for p in out.profile if p.name in inputs] == scored["input"].profile
    # ... and equal to what profiling them again gives: exactly in one chunk (the input was
    # ingested in one batch), to the last bits of mean and std across chunks.
    for mine, again in zip(out.profile, fresh.profile, strict=True):
        if mine.name not in inputs or chunk_rows >= len(table):
            assert mine == again
        else:
            loose = {"mean": None, "std": None}
            assert mine.model_copy(update=loose) == again.model_copy(update=loose)
            for field in ("mean", "std"):
                value = getattr(again, field)
                assert getattr(mine, field) == (value and pytest.approx(value, rel=1e-12))
    with datasets.open(out) as handle:  # stored as written: the bytes the digest names
        assert hashlib.sha256(handle.read()).hexdigest() == out.digest


def _drain(stream: Any) -> bytes:
    return b"".join(iter(lambda: stream.read(1000), b""))


def test_background_put_reads_every_byte_in_order() -> None:
    data = np.random.default_rng(1).bytes(100_000)
    with BackgroundPut(_drain, budget=4096) as put:
        for i in range(0, len(data), 777):
            put.write(data[i : i + 777])
        assert put.finish() == data


def test_background_put_abandoned_fails_the_reader_and_keeps_nothing() -> None:
    kept: list[bytes] = []
    failed = threading.Event()

    def store(stream: Any) -> None:
        try:
            kept.append(_drain(stream))
        except Exception:
            failed.set()
            raise

    with pytest.raises(RuntimeError, match="chunk 3"), BackgroundPut(store) as put:
        put.write(b"row group 1")
        raise RuntimeError("the model failed on chunk 3")
    assert failed.is_set() and kept == []


def test_a_store_error_is_raised_on_the_writer_thread() -> None:
    def full(stream: Any) -> None:
        stream.read(10)
        raise OSError("disk full")

    with BackgroundPut(full, budget=100) as put, pytest.raises(OSError, match="disk full"):
        for _ in range(1_000):  # never blocks: the store stopped reading
            put.write(b"x" * 50)
        put.finish()


def test_background_put_serves_readinto_and_read_all() -> None:
    def both(stream: Any) -> bytes:
        buffer = bytearray(5)
        n = stream.readinto(buffer)
        return bytes(buffer[:n]) + stream.read()

    with BackgroundPut(both) as put:
        put.write(io.BytesIO(b"hello world").getbuffer())
        assert put.finish() == b"hello world"


@pytest.mark.parametrize("sample_rows", [10_000, 700])
def test_the_input_columns_findings_are_reused_as_a_full_scan_finds_them(
    ctx: Context,
    project: str,
    tmp_path: Path,
    sample_rows: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skipped: list[tuple[str, list[str]]] = []
    sample, gathered = personal._sample, personal._gathered

    def spy(path: Path, rows: int, limit: int, skip: Any = ()) -> Any:
        skipped.append(("read", list(skip)))
        return sample(path, rows, limit, skip)

    def spy_gathered(rows: Any, skip: Any) -> Any:
        skipped.append(("gathered", list(skip)))
        return gathered(rows, skip)

    monkeypatch.setattr(personal, "_sample", spy)
    monkeypatch.setattr(personal, "_gathered", spy_gathered)
    ctx = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"datasets_pii_scan_rows": sample_rows})
    )
    frame = training_frame(2_500, seed=8)
    frame["email"] = [f"person{i}@example.org" for i in range(len(frame))]
    frame["postcode"] = [f"SW1A {i % 9}AA" for i in range(len(frame))]
    fit_tabular(training_frame(300), "eligible", algorithm="logistic", seed=0).save(tmp_path / "m")
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted((tmp_path / "m").iterdir())}
    model = TabularModel.load(tmp_path / "m")
    RegistryService(ctx).register(PROJECT, "linear", artifacts=digests, signature=model.signature)
    DatasetService(ctx).ingest(project, "people", frame, progress=False)
    job = BatchService(ctx).run(
        PROJECT,
        BatchJobCreate(
            model="linear",
            model_version=1,
            input_dataset="people",
            output_dataset="people-scored",
            chunk_rows=600,
        ),
    )
    out = DatasetService(ctx).get_version(PROJECT, "people-scored", job.output_version or 0)
    scans = PersonalDataService(ctx)
    reused = scans.report(out)
    assert reused.findings and {f.column for f in reused.findings} >= {"email"}
    again = scans.scan(out)  # every column, from the stored file
    assert again.id != reused.id
    mine = reused.model_dump(exclude={"id", "created_at", "trigger"})
    assert mine == again.model_dump(exclude={"id", "created_at", "trigger"})
    assert out.classification == again.classification
    # The input and the manual scan look at every column; the job's output only its outputs.
    # Ingest and job scan the rows they gathered as they wrote them; the manual scan reads
    # the stored file (and finds the same).
    assert skipped == [("gathered", []), ("gathered", list(frame.columns)), ("read", [])]
