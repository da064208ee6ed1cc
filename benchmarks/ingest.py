"""Ingestion benchmark, sources part: incremental extraction from PostgreSQL against a plain
``COPY … TO STDOUT``, and stream ingest from NATS JetStream in messages per second; CSV part
(``--csv``, :mod:`_ingest_csv`): ``DatasetService.ingest`` of a generated CSV against pandas and
DuckDB, time and peak RSS.

Run from the repository root with the civicml virtualenv, PostgreSQL on 127.0.0.1:5432 (trust
auth, database ``test``) and NATS with JetStream on 127.0.0.1:4222::

    .venv/bin/python benchmarks/ingest.py                  # 1M changed rows, 100,000 messages
    .venv/bin/python benchmarks/ingest.py --quick          # 100,000 rows, 20,000 messages
    .venv/bin/python benchmarks/ingest.py --rows 500000 --messages 50000 --write-docs

**Database.** A table of ``--rows`` rows (id, text, double, timestamp, boolean) is extracted
once by a civicml database source with watermark ``updated_at``; then every row is updated
(``updated_at = now()``), so the next run has ``--rows`` changed rows to take. That run is timed
end to end (server-side cursor, Arrow batches, canonical Parquet with its profile, SHA-256,
the artifact store, the version and the watermark committed together) against ``COPY (SELECT *
FROM t WHERE updated_at > $watermark) TO STDOUT`` read to the end by psycopg — the floor: the
bytes leaving the server, nothing stored. Goal (issue 12): within 2x the ``COPY``.

**Stream.** ``--messages`` JSON messages are published to a JetStream stream, then one run of a
NATS source (batches of ``--batch`` messages) ingests them; messages per second over the run,
which ends after ``idle_s`` (0.2 s) without a message.

**CSV** (``--csv``): CSVs of 1M and 5M rows (``--csv-rows``) are generated once under
``benchmarks/.work/`` and ingested by each arm in a fresh process (time without imports, peak
RSS), the arms interleaved for ``--rounds`` rounds; ``--before SRC`` adds the same ingest with
another civicml ``src`` directory (the code before a change)::

    .venv/bin/python benchmarks/ingest.py --csv                       # 1M and 5M rows, 3 rounds
    .venv/bin/python benchmarks/ingest.py --csv --csv-rows 1000000 --rounds 1 --before /tmp/src

Nothing here asserts; a full run (not ``--quick``) or ``--write-docs`` rewrites the sources
section of docs/benchmarks.md and docs/benchmarks/ingest-sources.json; a CSV run its
``ingest-csv`` section and docs/benchmarks/ingest-csv.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _report import civicml_source, write_section  # noqa: E402

DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_JSON = ROOT / "docs" / "benchmarks" / "ingest-sources.json"
BEGIN = "<!-- ingest-sources:begin -->"
END = "<!-- ingest-sources:end -->"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"
CSV_BEGIN = "<!-- ingest-csv:begin -->"
CSV_END = "<!-- ingest-csv:end -->"
CSV_ROWS = "1000000,5000000"


def _context(home: Path) -> Any:
    from civicml.core import Principal, Settings
    from civicml.governance.projects import ProjectService
    from civicml.store import Context, MetadataStore
    from civicml.store.artifacts import artifact_store_for

    settings = Settings.load(home=home)
    ctx = Context(
        db=MetadataStore(settings.database_url),
        artifacts=artifact_store_for(settings),
        principal=Principal(user="bench", roles=frozenset({"admin"})),
        settings=settings,
    )
    ProjectService(ctx).create("bench")
    return ctx


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def database(rows: int, home: Path) -> dict[str, Any]:
    import psycopg

    from civicml.sources import SourceCreate, SourceService

    table = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, who text, amount float8, "
            "updated_at timestamptz NOT NULL, flag boolean)"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT g, 'resident-' || g, g * 1.5, "
            "now() - interval '1 day', g %% 2 = 0 FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(f"CREATE INDEX ON {table} (updated_at)")
        conn.execute(f"ANALYZE {table}")
    ctx = _context(home)
    svc = SourceService(ctx)
    try:
        svc.create(
            "bench",
            SourceCreate(
                name="pg",
                kind="database",
                url=PG_URL,
                database={"table": table, "watermark": "updated_at", "chunk_rows": 100_000},
            ),
        )
        svc.run("bench", "pg")  # the initial extraction: sets the watermark
        watermark = svc.get("bench", "pg").position["watermark"]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET updated_at = now(), amount = amount + 1")
            conn.execute(f"VACUUM ANALYZE {table}")
        extract_s = _extract_only(table, watermark, svc.get("bench", "pg").position)
        started = time.perf_counter()
        run = svc.run("bench", "pg")
        civic_s = time.perf_counter() - started
        if run.status.value != "succeeded" or run.rows != rows:
            raise SystemExit(f"the incremental run did not take {rows} rows: {run}")
        copy_s, copy_bytes = _copy(table, watermark)
        return {
            "rows": rows,
            "civicml_s": round(civic_s, 3),
            "copy_s": round(copy_s, 3),
            "copy_mib": round(copy_bytes / 2**20, 1),
            "ratio": round(civic_s / copy_s, 2),
            "extract_s": round(extract_s, 3),
            "extract_ratio": round(extract_s / copy_s, 2),
            "civicml_rows_per_s": round(rows / civic_s),
            "peak_rss_mib": round(_rss_mib()),
        }
    finally:
        ctx.db.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def _extract_only(table: str, watermark: str, position: dict[str, Any]) -> float:
    """The read half alone: the source's extraction drained into Arrow batches, not stored."""
    from civicml.sources.connections import Target
    from civicml.sources.database import extract
    from civicml.sources.schemas import DatabaseConfig

    config = DatabaseConfig(table=table, watermark="updated_at", chunk_rows=100_000)
    started = time.perf_counter()
    found = extract(Target(url=PG_URL, shown=PG_URL), config, position)
    for _ in found.batches:
        pass
    return time.perf_counter() - started


def _copy(table: str, watermark: str) -> tuple[float, int]:
    import psycopg

    with psycopg.connect(PG_DSN) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        size = 0
        query = f"COPY (SELECT * FROM {table} WHERE updated_at > '{watermark}') TO STDOUT"
        with cur.copy(query) as copy:
            for block in copy:
                size += len(block)
        return time.perf_counter() - started, size


def stream(messages: int, batch: int, home: Path) -> dict[str, Any]:
    import nats

    from civicml.sources import SourceCreate, SourceService

    subject = f"bench.{uuid.uuid4().hex[:8]}"

    async def publish() -> float:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        await js.add_stream(name=subject.replace(".", "_"), subjects=[subject])
        started = time.perf_counter()
        pending = []
        for i in range(messages):
            body = json.dumps({"id": i, "sensor": f"s{i % 50}", "value": i * 0.5}).encode()
            pending.append(js.publish(subject, body))
            if len(pending) == 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        took = time.perf_counter() - started
        await nc.close()
        return took

    publish_s = asyncio.run(publish())
    ctx = _context(home)
    try:
        svc = SourceService(ctx)
        config = {"subject": subject, "batch_rows": batch, "window_s": 60, "idle_s": 0.2}
        svc.create("bench", SourceCreate(name="nats", kind="nats", url=NATS_URL, stream=config))
        started = time.perf_counter()
        run = svc.run("bench", "nats")
        took = time.perf_counter() - started
        if run.rows != messages:
            raise SystemExit(f"the stream run took {run.rows} of {messages} messages: {run}")
        return {
            "messages": messages,
            "batch_rows": batch,
            "versions": len(run.versions),
            "seconds": round(took, 3),
            "messages_per_s": round(messages / took),
            "publish_messages_per_s": round(messages / publish_s),
            "peak_rss_mib": round(_rss_mib()),
        }
    finally:
        ctx.db.close()

        async def drop() -> None:
            nc = await nats.connect(NATS_URL)
            await nc.jetstream().delete_stream(subject.replace(".", "_"))
            await nc.close()

        asyncio.run(drop())


def _section(db: dict[str, Any], st: dict[str, Any], meta: dict[str, Any]) -> str:
    x = "\N{MULTIPLICATION SIGN}"
    return (
        "## Ingestion from sources (`benchmarks/ingest.py`)\n\n"
        f"{meta['when']}, {meta['machine']}, civicml {meta['civicml']}.\n\n"
        "| workload | civicml | floor | ratio |\n|---|---|---|---|\n"
        f"| incremental extraction of {db['rows']:,} changed rows from PostgreSQL "
        f"(watermark `updated_at`) into a dataset version | {db['civicml_s']} s "
        f"({db['civicml_rows_per_s']:,} rows/s) | `COPY … TO STDOUT` {db['copy_s']} s "
        f"({db['copy_mib']} MiB) | {db['ratio']}{x} (goal ≤ 2{x}) |\n"
        f"| … its read half alone: `COPY` parsed into Arrow batches with the query's types | "
        f"{db['extract_s']} s | `COPY … TO STDOUT` {db['copy_s']} s | {db['extract_ratio']}{x} |\n"
        f"| stream ingest of {st['messages']:,} JSON messages from NATS JetStream "
        f"({st['versions']} versions of ≤ {st['batch_rows']:,}) | {st['seconds']} s "
        f"({st['messages_per_s']:,} msg/s) | publishing them: "
        f"{st['publish_messages_per_s']:,} msg/s | |\n\n"
        f"Peak RSS of the benchmark process: {max(db['peak_rss_mib'], st['peak_rss_mib'])} "
        "MiB. civicml's time covers the whole run: `COPY` streamed into Arrow batches, "
        "canonical Parquet with its column profile, the checks every ingest runs, SHA-256, the "
        "artifact store, and the version, lineage, audit event and watermark in one "
        "transaction; `COPY` alone only moves the bytes to the client, through psycopg's `Copy` "
        "iterator (one Python round per row). civicml drains the rows with "
        "`PGconn.get_copy_data` into one buffer instead (a few hundred ns a row, "
        "`sources/pgcopy.py`), so its read half can be faster than that floor; the rest is the "
        f"dataset ingest itself (Parquet, profile, checks). 1-minute load average "
        f"{meta['load']} before the run (on a shared 2-core machine, above 2 means fewer than "
        "two free cores).\n"
    )


def _meta() -> dict[str, Any]:
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "civicml": civicml_source(ROOT),
    }


def csv_main(args: argparse.Namespace) -> None:
    """The CSV part: generate, run the arms interleaved, write the docs section."""
    import _ingest_csv

    if args.csv_arm:  # one arm, in this fresh process
        result = _ingest_csv.run_arm(args.csv_arm, Path(args.csv_file), Path(args.csv_work))
        print(json.dumps(result), flush=True)
        return
    sizes = [int(n) for n in args.csv_rows.split(",")]
    data_dir = BENCH / ".work"
    data_dir.mkdir(exist_ok=True)
    meta = _meta() | {"rounds": args.rounds, "load": round(os.getloadavg()[0], 2)}
    before = Path(args.before).resolve() if args.before else None
    results = _ingest_csv.run(sizes, args.rounds, before, data_dir)
    print(json.dumps(results, indent=2), flush=True)
    if args.write_docs or args.csv_rows == CSV_ROWS:
        path = DOCS_JSON.with_name("ingest-csv.json")
        path.write_text(json.dumps({"results": results, **meta}, indent=2) + "\n")
        write_section(DOCS_MD, CSV_BEGIN, CSV_END, _ingest_csv.section(results, meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 20,000 messages")
    parser.add_argument("--rows", type=int, default=None, help="changed rows (default 1M)")
    parser.add_argument("--messages", type=int, default=None, help="messages (default 100k)")
    parser.add_argument("--batch", type=int, default=10_000, help="messages per version")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs even if quick")
    parser.add_argument("--csv", action="store_true", help="the CSV part instead of sources")
    parser.add_argument("--csv-rows", default=CSV_ROWS, help="CSV sizes in rows, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="CSV rounds (arms interleaved)")
    parser.add_argument("--before", default=None, help="a civicml src/ to compare against")
    parser.add_argument("--csv-arm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--csv-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--csv-work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.csv or args.csv_arm:
        csv_main(args)
        return
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    messages = args.messages or (20_000 if args.quick else 100_000)
    load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="civicml-ingest-") as tmp:
        db = database(rows, Path(tmp) / "db")
        print(json.dumps({"database": db}), flush=True)
        st = stream(messages, args.batch, Path(tmp) / "stream")
        print(json.dumps({"stream": st}), flush=True)
    meta = _meta() | {"load": load}
    if args.write_docs or not (args.quick or args.rows or args.messages):
        DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
        DOCS_JSON.write_text(json.dumps({"database": db, "stream": st, **meta}, indent=2) + "\n")
        write_section(DOCS_MD, BEGIN, END, _section(db, st, meta))


if __name__ == "__main__":
    main()
