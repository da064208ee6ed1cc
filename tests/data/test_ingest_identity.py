"""A dataset version's identity is its logical content, not its Parquet bytes.

Since migration 0025 a version is identified by its content hash (column names, Arrow types and
values; :mod:`civicml.data.content`), so the Parquet writer is free to choose encodings for speed,
and the same table is the same version whatever the source format (CSV, Parquet, data frame) or the
read chunk size. The file's SHA-256 (``digest``) stays the storage address.

Golden values, and why they changed:

- ``CONTENT_HASH``: the content hash of :func:`write_mixed_csv`'s file. It does not depend on the
  chunk size (one value for both) nor on the Parquet writer, so it is checked on every pyarrow.
- ``OLD_DIGESTS``: the Parquet SHA-256 the ingest wrote *before* migration 0025 (civicml at
  9963f73: dictionary encoding on every column, zstd level 3), which was then the identity; one
  per chunk size, because the old bytes depended on where the parsed batches ended. They are no
  longer what an ingest writes: the tests reproduce them with the old writer options to make an
  old-style version, and check that an ingest after the upgrade recognises it. The Parquet writer
  records its version in the file, so another pyarrow skips that comparison.
- ``PROFILES``: the SHA-256 of the profile as JSON per chunk size (the mean and standard
  deviation differ in their last bits with the batches), unchanged by the move (the profile never
  depended on the bytes written); changed once since, when the numeric reservoir moved from
  Algorithm R to Algorithm L (2026-12-07): another uniform sample, so other quantile estimates
  for the columns longer than the reservoir.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, update

from civicml.data import DatasetService, DatasetVersion
from civicml.data import ingest as ingest_module
from civicml.data._tables import dataset_versions
from civicml.data.content import ContentHasher, content_hash_of_parquet
from civicml.data.ingest import DEFAULT_CHUNK_BYTES
from civicml.governance import ProjectService
from civicml.store import Context
from civicml.store.db import _MIGRATIONS
from tests.data.helpers import PROJECT

ROWS = 70_000  # more than one Parquet row group (65,536 rows)
CONTENT_HASH = "0cec89b50c5b76a3ff8674046fbdff70293a763b673d5b0f4beea7a99d4fbf53"
#: chunk_bytes -> SHA-256 of the profile as JSON (the high-cardinality text column's tracked
#: values follow the batches read: which are dropped depends on where the batches end).
PROFILES = {
    DEFAULT_CHUNK_BYTES: "a5cf3a889c17f0310b4f3cd97e44e53cdda89a6d344344fd6a060843435025f6",
    64 << 10: "e7b475be6c817acf5da01b6c8fe90d700cbff4018781f89b8a77701a86e00f1c",
}
#: (pyarrow version, chunk_bytes) -> SHA-256 of the Parquet written before migration 0025.
OLD_DIGESTS: dict[tuple[str, int], str] = {
    ("26.0.1", DEFAULT_CHUNK_BYTES): (
        "3f03b0ae8cda9438b597020905449ec2a19cf2d55cdaca1f2e0165e4dc682a78"
    ),
    ("26.0.1", 64 << 10): "8cc36bf94adc28e25369253efb2207e9cd6ff6e104fc3c3013e04212539ac909",
}
#: The writer options of the ingest before migration 0025.
OLD_WRITER: dict[str, Any] = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "store_schema": True,
}


def write_mixed_csv(path: Path, rows: int = ROWS, seed: int = 12) -> Path:
    """Integers, floats with gaps, low- and high-cardinality text (some non-ASCII, some quoted
    with the delimiter or a line break inside), dates, timestamps and booleans; one column holds
    integers until late in the file, then a decimal (the read restarts with it widened)."""
    rnd = random.Random(seed)
    regions = ["north", "south", "east", "west", "Île-de-France", "Zürich", 'say "hi"', "a, b"]
    start = date(2020, 1, 1)
    lines = ["id,age,income,region,name,applied,seen_at,eligible,late,note"]
    for i in range(rows):
        income = "" if rnd.random() < 0.1 else f"{rnd.lognormvariate(7, 0.6):.2f}"
        region = rnd.choice(regions)
        region = (
            f'"{region.replace(chr(34), chr(34) * 2)}"'
            if '"' in region or "," in region
            else region
        )
        if rnd.random() < 0.05:
            region = ""
        applied = (start + timedelta(days=rnd.randrange(1500))).isoformat()
        seen = datetime(2024, 1, 1) + timedelta(seconds=rnd.randrange(10**8))
        late = f"{i}.5" if i == rows - 100 else str(rnd.randrange(1000))
        note = (
            '"two\nlines"'
            if i % 9973 == 0
            else ("" if rnd.random() < 0.3 else f"n{rnd.randrange(50)}")
        )
        lines.append(
            f"{i},{rnd.randrange(18, 95)},{income},{region},person-{rnd.randrange(10**6)},"
            f"{applied},{seen.isoformat(sep=' ')},{str(rnd.random() < 0.3).lower()},{late},{note}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _profile_digest(version: DatasetVersion) -> str:
    """The profile, less the estimated distinct counts (their hash function may change)."""
    profile = [p.model_dump(mode="json") for p in version.profile or []]
    for p in profile:
        if p.get("distinct_exact") is False:
            p.pop("distinct")
    return hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()


class _OldSink:
    """The Parquet writer as the ingest used it before migration 0025."""

    def __init__(
        self, dest: Path | None, schema: Any, hasher: ContentHasher, store: Any = None
    ) -> None:
        # The old ingest stored the file after writing it; an ingest that keeps no local copy
        # now (dest None) gets the same bytes stored from a file of the sink's own.
        self._dest = dest if dest is not None else Path(tempfile.mkstemp(suffix=".parquet")[1])
        self._store = store if dest is None else None
        self.stored = None
        self._writer = pq.ParquetWriter(str(self._dest), schema, **OLD_WRITER)
        self._hasher = hasher

    def __enter__(self) -> _OldSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()
        if self._store is not None:
            with open(self._dest, "rb") as handle:
                self.stored = self._store(handle)
            self._dest.unlink()

    def write(self, table: Any) -> None:
        self._hasher.update(table)
        self._writer.write_table(table, ingest_module.ROW_GROUP_ROWS)


@pytest.fixture
def svc(ctx: Context) -> DatasetService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx)


@pytest.mark.parametrize("chunk_bytes", [DEFAULT_CHUNK_BYTES, 64 << 10])
def test_the_same_csv_is_one_version_with_a_fixed_content_hash(
    svc: DatasetService, tmp_path: Path, chunk_bytes: int
) -> None:
    path = write_mixed_csv(tmp_path / "mixed.csv")
    v = svc.ingest(PROJECT, "mixed", path, chunk_bytes=chunk_bytes)
    again = svc.ingest(PROJECT, "mixed", path, chunk_bytes=chunk_bytes)
    assert again.version == v.version == 1 and again.digest == v.digest
    assert v.row_count == ROWS
    types = {c.name: c.type for c in v.columns}
    assert types["late"] == "double" and types["applied"] == "date32[day]"
    assert (v.content_hash, _profile_digest(v)) == (CONTENT_HASH, PROFILES[chunk_bytes])
    with svc.open(v) as handle:  # what is stored has the content the ingest hashed
        assert content_hash_of_parquet(handle) == CONTENT_HASH


def test_chunk_sizes_and_source_formats_give_one_version(
    svc: DatasetService, tmp_path: Path
) -> None:
    path = write_mixed_csv(tmp_path / "mixed.csv")
    first = svc.ingest(PROJECT, "mixed", path)
    table = svc.read(first)
    parquet = tmp_path / "mixed.parquet"  # other encodings and row groups, same rows
    pq.write_table(table, parquet, row_group_size=10_000, use_dictionary=False)
    frame = table.to_pandas()
    large = table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type)
                for f in table.schema
            ]
        )
    )
    same = [
        svc.ingest(PROJECT, "mixed", path, chunk_bytes=64 << 10),
        svc.ingest(PROJECT, "mixed", path, chunk_bytes=1 << 20),
        svc.ingest(PROJECT, "mixed", parquet),
        svc.ingest(PROJECT, "mixed", parquet, chunk_bytes=4096),
        svc.ingest(PROJECT, "mixed", frame),
        svc.ingest(PROJECT, "mixed", large),
        svc.ingest(PROJECT, "mixed", pa.Table.from_batches(table.to_batches(max_chunksize=777))),
    ]
    assert {v.version for v in same} == {1}
    assert {v.content_hash for v in same} == {first.content_hash}
    changed = table.set_column(0, "id", pa.compute.add(table["id"], 1))
    other = svc.ingest(PROJECT, "mixed", changed)
    assert other.version == 2 and other.content_hash != first.content_hash


def test_the_writer_encodes_numbers_plainly_and_repeated_text_as_a_dictionary(
    svc: DatasetService, tmp_path: Path
) -> None:
    v = svc.ingest(PROJECT, "mixed", write_mixed_csv(tmp_path / "mixed.csv"))
    with svc.open(v) as handle:
        meta = pq.ParquetFile(handle).metadata
        encodings = {
            meta.schema.column(i).name: meta.row_group(0).column(i).encodings
            for i in range(meta.num_columns)
        }
    assert (
        "PLAIN_DICTIONARY" not in encodings["income"]
        and "RLE_DICTIONARY" not in encodings["income"]
    )
    assert "RLE_DICTIONARY" in encodings["region"]  # 8 values
    assert "RLE_DICTIONARY" not in encodings["name"]  # mostly unique


def _set_revision(ctx: Context, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with ctx.db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        if revision == "head":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)
        conn.commit()


@pytest.mark.parametrize("chunk_bytes", [DEFAULT_CHUNK_BYTES, 64 << 10])
def test_a_version_made_before_the_upgrade_is_recognised_after_it(
    svc: DatasetService,
    ctx: Context,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk_bytes: int,
) -> None:
    path = write_mixed_csv(tmp_path / "mixed.csv")
    with monkeypatch.context() as old:  # the ingest as it was: old bytes
        old.setattr(ingest_module, "_ParquetSink", _OldSink)
        old.setattr(ingest_module, "_CSV_BLOCK_BYTES", 1 << 20)  # Arrow's default blocks
        before = svc.ingest(PROJECT, "mixed", path, chunk_bytes=chunk_bytes)
    golden = OLD_DIGESTS.get((pa.__version__, chunk_bytes))
    if golden is not None:
        assert before.digest == golden  # byte for byte what the old ingest wrote
    _set_revision(ctx, "0024")  # the schema before: no content hash
    _set_revision(ctx, "head")  # the upgrade: NULL for the old row
    with ctx.db.read() as conn:
        assert conn.execute(select(dataset_versions.c.content_hash)).scalars().all() == [None]

    after = svc.ingest(PROJECT, "mixed", path, chunk_bytes=chunk_bytes)

    assert after.version == before.version == 1 and after.digest == before.digest
    assert after.content_hash == CONTENT_HASH  # back-filled from the stored Parquet
    with ctx.db.read() as conn:
        stored = conn.execute(select(dataset_versions.c.content_hash)).scalars().all()
    assert stored == [CONTENT_HASH]
    assert len(svc.list_versions(PROJECT, "mixed")) == 1


def test_old_versions_unlike_the_new_rows_are_not_read_and_lost_bytes_are_skipped(
    svc: DatasetService, ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = svc.ingest(PROJECT, "mixed", write_mixed_csv(tmp_path / "small.csv", rows=500))
    lost = svc.ingest(PROJECT, "mixed", write_mixed_csv(tmp_path / "lost.csv", seed=3))
    with ctx.db.write() as uow:  # both as before the upgrade
        uow.conn.execute(update(dataset_versions).values(content_hash=None))
    opened: list[str] = []
    real_open = ctx.artifacts.open

    def open_(digest: str) -> Any:
        opened.append(digest)
        if digest == lost.digest:
            raise FileNotFoundError(digest)  # purged: its bytes are gone
        return real_open(digest)

    monkeypatch.setattr(ctx.artifacts, "open", open_)
    new = svc.ingest(PROJECT, "mixed", write_mixed_csv(tmp_path / "mixed.csv"))

    assert new.version == 3
    assert opened == [lost.digest]  # same shape only; 500 rows cannot be 70,000
    with ctx.db.read() as conn:
        hashes = dict(
            conn.execute(select(dataset_versions.c.version, dataset_versions.c.content_hash)).all()
        )
    assert (small.version, lost.version) == (1, 2)
    assert hashes == {1: None, 2: None, 3: new.content_hash}


def test_content_hash_ignores_batches_offsets_and_null_slots() -> None:
    table = pa.table(
        {
            "i": pa.array([1, None, 3, 4, 5, None, 7]),
            "f": pa.array([1.5, float("nan"), None, 2.0, -0.0, 3.0, 4.0]),
            "s": pa.array(["a", None, "", "ccc", "é", None, "zz"]),
            "b": pa.array([True, False, None, True, True, False, None]),
            "ts": pa.array(
                [datetime(2020, 1, 1), None, datetime(2021, 1, 1)] * 2 + [None], pa.timestamp("s")
            ),
            "cat": pa.array(["x", "y", None, "x", "y", "x", "z"]).dictionary_encode(),
            "l": pa.array([[1, 2], None, [], [3], [None], [4, 5, 6], None]),
            "st": pa.array(
                [{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}, {"a": 2, "b": None}, None,
                 {"a": 3, "b": "z"}, {"a": 4, "b": "w"}]
            ),
        }
    )  # fmt: skip

    def hashed(t: Any, size: int) -> str:
        h = ContentHasher(t.schema)
        for batch in t.to_batches(max_chunksize=size):
            h.update(batch)
        return h.hexdigest()

    ref = hashed(table, 100)
    assert {hashed(table, n) for n in (1, 2, 3, 5)} == {ref}
    assert hashed(pa.concat_tables([table.slice(0, 3), table.slice(3)]), 2) == ref  # offsets
    large = table.set_column(2, "s", table["s"].cast(pa.large_string()))
    assert hashed(large, 3) == ref
    # Garbage under a null slot is not content.
    dirty = pa.Array.from_buffers(
        pa.int64(),
        7,
        [
            table["i"].chunk(0).buffers()[0],
            pa.py_buffer(np.array([1, 99, 3, 4, 5, -7, 7], dtype=np.int64).tobytes()),
        ],
    )
    assert hashed(table.set_column(0, "i", dirty), 4) == ref
    buf = pa.BufferOutputStream()  # Parquet stores seconds as milliseconds
    pq.write_table(table, buf, row_group_size=2, use_dictionary=False)
    assert content_hash_of_parquet(pa.BufferReader(buf.getvalue()), batch_size=3) == ref
    differ = {
        "a value": table.set_column(0, "i", pa.array([1, None, 3, 4, 5, 6, 7])),
        "null or empty": table.set_column(2, "s", pa.array(["a", None, "", "ccc", "é", "", "zz"])),
        "a boundary": table.set_column(2, "s", pa.array(["a", None, "", "cc", "cé", None, "zz"])),
        "a type": table.set_column(0, "i", table["i"].cast(pa.int32())),
        "a name": table.rename_columns(["j", *table.column_names[1:]]),
        "the order": table.select(["f", "i", "s", "b", "ts", "cat", "l", "st"]),
        "a row less": table.slice(0, 6),
    }
    assert {what for what, t in differ.items() if hashed(t, 3) == ref} == set()
    frame = pd.DataFrame({"n": [1.0, None], "t": ["a", "b"]})  # pandas and CSV agree
    assert hashed(pa.Table.from_pandas(frame, preserve_index=False), 1) == hashed(
        pacsv.read_csv(pa.BufferReader(b"n,t\n1.0,a\n,b\n")), 2
    )


def test_content_hash_of_other_types_ignores_batches() -> None:
    table = pa.table(
        {
            "half": pa.array(np.array([1.0, np.nan, 2.0, 3.0], dtype=np.float16)),
            "dec": pa.array([Decimal("1.5"), None, Decimal("2.25"), None]),
            "d64": pa.array([date(2020, 1, 1), None, date(2021, 1, 1), None], pa.date64()),
            "map": pa.array(
                [[("a", 1)], None, [], [("b", 2), ("c", 3)]], pa.map_(pa.string(), pa.int64())
            ),
            "fixed": pa.array([b"ab", b"cd", None, b"ef"], pa.binary(2)),
            "none": pa.array([None] * 4),
            "pairs": pa.array([[1, 2], None, [3, None], [5, 6]], pa.list_(pa.int64(), 2)),
        }
    )

    def hashed(t: Any, size: int) -> str:
        h = ContentHasher(t.schema)
        for batch in t.to_batches(max_chunksize=size):
            h.update(batch)
        return h.hexdigest()

    assert len({hashed(table, n) for n in (1, 2, 3, 4)}) == 1
    other = pa.array([[("a", 1)], None, [], [("b", 2), ("c", 4)]], pa.map_(pa.string(), pa.int64()))
    assert hashed(table.set_column(3, "map", other), 2) != hashed(table, 2)
    as_days = table.set_column(2, "d64", table["d64"].cast(pa.date32()))  # as Parquet stores it
    assert hashed(as_days, 3) == hashed(table, 3)
