"""Tests of the dataset service (``civicml.data.service``): ingest, identity, schema, errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from civicml.core import ArtifactIntegrityError, InvalidInputError, NotFoundError
from civicml.data import DatasetService, SourceFormat
from civicml.governance import AuditTrail, LineageService, ProjectService
from civicml.store import Context
from civicml.store.artifact_index import ArtifactIndex
from tests.data.helpers import PROJECT, frame, write_csv, write_jsonl, write_parquet


@pytest.fixture
def svc(ctx: Context) -> DatasetService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx)


def _actions(ctx: Context) -> list[str]:
    return [e.action for e in AuditTrail(ctx).list(project=PROJECT)]


# The core flow on SQLite and PostgreSQL ----------------------------------------------------------
def test_ingest_records_version_lineage_audit_and_artifact(
    any_ctx: Context, tmp_path: Path
) -> None:
    ProjectService(any_ctx).ensure(PROJECT, "projects.read")
    svc = DatasetService(any_ctx)
    v = svc.ingest(PROJECT, "applications", write_csv(tmp_path / "apps.csv"), description="q1")

    assert (v.project, v.name, v.version, v.row_count) == (PROJECT, "applications", 1, 5)
    assert v.source_format is SourceFormat.CSV and v.source_name == "apps.csv"
    assert [(c.name, c.type, c.nullable) for c in v.columns] == [
        ("age", "int64", False),
        ("income", "double", True),
        ("region", "string", True),
        ("eligible", "bool", False),
    ]
    assert v.schema_changes is None and v.description == "q1"
    assert any_ctx.artifacts.exists(v.digest)
    assert len(v.source_fingerprint or "") == 64
    assert _actions(any_ctx)[-3:] == [
        "dataset.created",
        "dataset_version.created",
        "dataset_version.pii_scanned",  # every new version is scanned (docs/datasets.md)
    ]
    node = LineageService(any_ctx).get_node("dataset_version", v.id)
    assert node.name == "applications v1"
    with any_ctx.db.read() as conn:
        info = ArtifactIndex.get(conn, "dataset_version", v.id, "data.parquet")
    assert info.digest == v.digest and info.size == v.size
    assert svc.get_version(PROJECT, "applications", "latest") == v
    assert svc.get_version(PROJECT, "applications", 1) == v
    assert svc.list_versions(PROJECT, "applications") == [v]
    assert svc.get_dataset(PROJECT, "applications").latest_version == 1
    assert [d.name for d in svc.list_datasets(PROJECT)] == ["applications"]
    pd.testing.assert_frame_equal(svc.to_pandas(v), frame(), check_dtype=False)


def test_identical_content_returns_the_existing_version(any_ctx: Context, tmp_path: Path) -> None:
    ProjectService(any_ctx).ensure(PROJECT, "projects.read")
    svc = DatasetService(any_ctx)
    path = write_csv(tmp_path / "apps.csv")
    first = svc.ingest(PROJECT, "apps", path)
    events = len(_actions(any_ctx))
    again = svc.ingest(PROJECT, "apps", path, chunk_bytes=1024)  # other chunking, same bytes
    assert again == first
    assert len(_actions(any_ctx)) == events  # nothing written
    assert len(svc.list_versions(PROJECT, "apps")) == 1


def test_schema_changes_are_reported_on_the_new_version(any_ctx: Context, tmp_path: Path) -> None:
    ProjectService(any_ctx).ensure(PROJECT, "projects.read")
    svc = DatasetService(any_ctx)
    svc.ingest(PROJECT, "apps", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    v2 = svc.ingest(PROJECT, "apps", pd.DataFrame({"a": [1.5, None], "c": ["z", "w"]}))
    changes = v2.schema_changes
    assert v2.version == 2 and changes is not None and changes.previous_version == 1
    assert [c.name for c in changes.added] == ["c"]
    assert [c.name for c in changes.removed] == ["b"]
    assert [(t.name, t.before, t.after) for t in changes.retyped] == [("a", "int64", "double")]
    assert changes.nullability_changed == ["a"]
    v3 = svc.ingest(PROJECT, "apps", pd.DataFrame({"a": [3.5, None], "c": ["q", "r"]}))
    assert v3.schema_changes is not None and not v3.schema_changes.changed


# Formats and identity ----------------------------------------------------------------------------
def test_every_format_gives_the_same_canonical_content(svc: DatasetService, tmp_path: Path) -> None:
    csv = svc.ingest(PROJECT, "apps", write_csv(tmp_path / "a.csv"))
    for source in (
        write_parquet(tmp_path / "a.parquet"),
        write_jsonl(tmp_path / "a.jsonl"),
        frame(),
        pa.Table.from_pandas(frame(), preserve_index=False),
    ):
        assert svc.ingest(PROJECT, "apps", source) == csv, source
    assert len(svc.list_versions(PROJECT, "apps")) == 1


def test_format_option_overrides_the_suffix(svc: DatasetService, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "a.txt")
    v = svc.ingest(PROJECT, "apps", data, format="jsonl")
    assert v.source_format is SourceFormat.JSONL and v.row_count == 5


def test_binary_stream_with_format(svc: DatasetService, tmp_path: Path) -> None:
    with open(write_csv(tmp_path / "a.csv"), "rb") as handle:
        v = svc.ingest(PROJECT, "apps", handle, format="csv")
        assert not handle.closed
    assert v.row_count == 5 and v.source_name is None


def test_csv_column_widened_when_a_late_value_does_not_fit(
    svc: DatasetService, tmp_path: Path
) -> None:
    rows = [f"{i},{i},," for i in range(3000)] + ["1.5,abc,7,"]
    path = tmp_path / "late.csv"
    path.write_text("n,code,late,empty\n" + "\n".join(rows) + "\n")
    v = svc.ingest(PROJECT, "late", path, chunk_bytes=1024)
    assert {c.name: c.type for c in v.columns} == {
        "n": "double",
        "code": "string",
        "late": "int64",
        "empty": "null",
    }
    assert v.row_count == 3001
    table = svc.read(v)
    assert table.column("code")[-1].as_py() == "abc"
    assert table.column("late").null_count == 3000


def test_jsonl_chunks_with_new_and_widened_columns(svc: DatasetService, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = ['{"a": 1}'] * 500 + ['{"a": 2.5, "b": "late"}', ""]
    path.write_text("\n".join(lines) + "\n")
    v = svc.ingest(PROJECT, "j", path, chunk_bytes=1024)
    assert [(c.name, c.type) for c in v.columns] == [("a", "double"), ("b", "string")]
    assert v.row_count == 501


def test_read_verifies_the_digest(svc: DatasetService, ctx: Context, tmp_path: Path) -> None:
    v = svc.ingest(PROJECT, "apps", write_csv(tmp_path / "a.csv"))
    stored = ctx.artifacts.root / "objects" / v.digest[:2] / v.digest[2:4] / v.digest
    os.chmod(stored, 0o644)
    stored.write_bytes(stored.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        svc.read(v)


# Lookups -----------------------------------------------------------------------------------------
def test_lookup_errors_name_the_thing(svc: DatasetService, tmp_path: Path) -> None:
    svc.ingest(PROJECT, "applications", write_csv(tmp_path / "a.csv"))
    with pytest.raises(NotFoundError, match="Dataset 'aplications' does not exist") as err:
        svc.get_dataset(PROJECT, "aplications")
    assert "applications" in (err.value.hint or "")
    with pytest.raises(NotFoundError, match="has no version 7"):
        svc.get_version(PROJECT, "applications", 7)
    with pytest.raises(InvalidInputError, match="Dataset version 'newest' is not valid"):
        svc.get_version(PROJECT, "applications", "newest")
    with pytest.raises(NotFoundError, match="Project 'nope' does not exist"):
        svc.ingest("nope", "x", frame())
    with pytest.raises(InvalidInputError, match="Dataset name 'a/b' is not valid"):
        svc.ingest(PROJECT, "a/b", frame())


# Bad input ---------------------------------------------------------------------------------------
def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "format", "message"),
    [
        ("a.txt", "a\n1\n", None, "Cannot tell the format of .* from its suffix '.txt'"),
        ("a.csv", "a\n1\n", "xlsx", "with format 'xlsx'"),
        ("a.csv", "", None, "is empty \\(0 bytes\\)"),
        ("a.csv", "a,b\n", None, "has no rows"),
        (
            "a.csv",
            "a,b\n1,2\n3\n",
            None,
            "is not readable CSV at line 3: Expected 2 columns, got 1",
        ),
        ("a.csv", "a,a\n1,2\n", None, "has the column name 'a' more than once"),
        ("a.jsonl", '{"a": 1}\n{"a": "x"}\n', None, "line 2: column 'a' holds text here but"),
        ("a.jsonl", '{"a": 1}\n{"a": \n', None, "line 2: not valid JSON"),
        ("a.jsonl", '{"a": 1}\n[1, 2]\n', None, "line 2: a JSON list, not an object"),
        ("a.parquet", "not parquet at all", None, "is not a readable Parquet file"),
    ],
)
def test_bad_files_are_refused_clearly(
    svc: DatasetService, tmp_path: Path, name: str, text: str, format: str | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as err:
        svc.ingest(PROJECT, "bad", _file(tmp_path, name, text), format=format)
    assert err.value.hint
    assert svc.list_datasets(PROJECT) == []


def test_mixed_jsonl_types_across_chunks_name_the_line(svc: DatasetService, tmp_path: Path) -> None:
    path = _file(tmp_path, "a.jsonl", '{"a": "text"}\n' * 400 + '{"a": 5}\n')
    with pytest.raises(
        InvalidInputError, match=re.escape("line 401: column 'a' holds integers here but text")
    ):
        svc.ingest(PROJECT, "bad", path, chunk_bytes=1024)


def test_paths_that_are_not_regular_files(svc: DatasetService, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        svc.ingest(PROJECT, "x", tmp_path / "missing.csv")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(InvalidInputError, match="is a directory"):
        svc.ingest(PROJECT, "x", tmp_path / "folder.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(write_csv(tmp_path / "real.csv"))
    with pytest.raises(InvalidInputError, match="is a symbolic link"):
        svc.ingest(PROJECT, "x", link)
    with pytest.raises(InvalidInputError, match="Cannot ingest a int"):
        svc.ingest(PROJECT, "x", 42)
    with (
        open(write_csv(tmp_path / "b.csv"), "rb") as handle,
        pytest.raises(InvalidInputError, match="Cannot ingest a stream with no format"),
    ):
        svc.ingest(PROJECT, "x", handle)


def test_bad_data_frames(svc: DatasetService) -> None:
    with pytest.raises(InvalidInputError, match="has no rows"):
        svc.ingest(PROJECT, "x", pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    mixed = pd.DataFrame({"a": pd.Series([1, "x"], dtype=object)})
    with pytest.raises(InvalidInputError, match="The data frame cannot be stored"):
        svc.ingest(PROJECT, "x", mixed)


def test_named_index_is_kept_as_a_column(svc: DatasetService) -> None:
    df = frame().set_index("region")
    v = svc.ingest(PROJECT, "x", df)
    assert v.columns[0].name == "region"


def test_bad_chunk_size(svc: DatasetService) -> None:
    with pytest.raises(InvalidInputError, match="chunk_bytes 10 is too small"):
        svc.ingest(PROJECT, "x", frame(), chunk_bytes=10)


def test_reservoir_is_seeded(svc: DatasetService) -> None:
    values = np.random.default_rng(1).normal(size=50_000)
    a = svc.ingest(PROJECT, "x", pd.DataFrame({"v": values}))
    b = DatasetService(svc._ctx).ingest(PROJECT, "y", pd.DataFrame({"v": values}))
    assert a.profile == b.profile


def test_quoted_fields_spanning_lines_and_chunk_boundaries(
    svc: DatasetService, tmp_path: Path
) -> None:
    note = '"line one\nline two, with a comma"'
    path = _file(tmp_path, "q.csv", "id,note\n" + "".join(f"{i},{note}\n" for i in range(400)))
    v = svc.ingest(PROJECT, "q", path, chunk_bytes=1024, progress=True)
    assert v.row_count == 400
    assert svc.read(v).column("note")[399].as_py() == "line one\nline two, with a comma"
    whole = svc.ingest(PROJECT, "q", path)  # one chunk: the same canonical content
    assert whole == v
