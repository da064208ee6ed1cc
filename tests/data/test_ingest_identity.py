"""The canonical Parquet bytes of a CSV do not depend on how ingest is scheduled.

A dataset version's identity is the SHA-256 of its canonical Parquet file, so a faster ingest (read,
profile and write overlapped on threads, vectorised hashing) must write exactly the bytes the
sequential one wrote: a CSV ingested before and after is the same version. The golden digests were
computed with the sequential ingest (civicml at c855234) for the pyarrow version named; the Parquet
writer records its version in the file, so another pyarrow skips the comparison.

The bytes do depend on the read chunk size (the Parquet writer splits data pages where the
parsed batches end), so each chunk size has its own golden digest.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from civicml.data import DatasetService, DatasetVersion
from civicml.data.ingest import DEFAULT_CHUNK_BYTES
from civicml.governance import ProjectService
from civicml.store import Context
from tests.data.helpers import PROJECT

ROWS = 70_000  # more than one Parquet row group (65,536 rows)
#: (pyarrow version, chunk_bytes) -> (SHA-256 of the canonical Parquet, of the profile as JSON).
GOLDEN: dict[tuple[str, int], tuple[str, str]] = {
    ("26.0.1", DEFAULT_CHUNK_BYTES): (
        "3f03b0ae8cda9438b597020905449ec2a19cf2d55cdaca1f2e0165e4dc682a78",
        "f2ca5d434ba822e11ad5939ce3dcfa1f494b9f884acbbcc87f00780d91e49f43",
    ),
    ("26.0.1", 64 << 10): (
        "8cc36bf94adc28e25369253efb2207e9cd6ff6e104fc3c3013e04212539ac909",
        "e74c6da3f8976b35cb71f6850009cea8c360ab95145ff8f6cd7a8aceb7f84550",
    ),
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


@pytest.fixture
def svc(ctx: Context) -> DatasetService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx)


@pytest.mark.parametrize("chunk_bytes", [DEFAULT_CHUNK_BYTES, 64 << 10])
def test_same_csv_same_bytes_as_the_sequential_ingest(
    svc: DatasetService, tmp_path: Path, chunk_bytes: int
) -> None:
    path = write_mixed_csv(tmp_path / "mixed.csv")
    v = svc.ingest(PROJECT, "mixed", path, chunk_bytes=chunk_bytes)
    again = svc.ingest(PROJECT, "mixed", path, chunk_bytes=chunk_bytes)
    assert again.version == v.version == 1 and again.digest == v.digest
    assert v.row_count == ROWS
    types = {c.name: c.type for c in v.columns}
    assert types["late"] == "double" and types["applied"] == "date32[day]"
    golden = GOLDEN.get((pa.__version__, chunk_bytes))
    if golden is None:
        pytest.skip(f"no golden digest recorded for pyarrow {pa.__version__}")
    assert (v.digest, _profile_digest(v)) == golden
