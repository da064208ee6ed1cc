"""Load generator for ``benchmarks/serving.py``: keep-alive HTTP/1.1 over raw asyncio sockets.

Started by ``serving.py`` in its own process (the same client for every target)::

    python benchmarks/_serving_load.py --port 8080 --path /invocations --bodies bodies.json \
        --concurrency 16 --requests 2000 --warmup 200 --out result.json

``--bodies`` is a JSON list of request bodies (objects); request ``i`` sends body
``i % len(bodies)``. ``--concurrency`` connections are opened once and kept alive; each sends
its next request as soon as the previous response has been read in full, until ``--requests``
requests were sent (after ``--warmup`` unmeasured ones). Latency is taken per request from the
first byte written to the last byte of the response read; throughput is requests over the wall
time of the measured phase. Any status other than 200 is counted as an error (the first error
body is kept). Only the standard library (plus uvloop when installed) is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


class HttpError(RuntimeError):
    pass


class Connection:
    def __init__(self, host: str, port: int, path: str, headers: tuple[str, ...] = ()) -> None:
        self.host, self.port, self.path = host, port, path
        self.extra = "".join(f"{h}\r\n" for h in headers)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def request_bytes(self, body: bytes) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            f"{self.extra}Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("ascii") + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            raise HttpError(f"response without length: {head!r}")
        if headers.get("connection", "").lower() == "close":
            raise HttpError("server closed the kept-alive connection")
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in json.loads(args.bodies_text)]
    headers = tuple(args.header or ())
    connections = [
        Connection(args.host, args.port, args.path, headers) for _ in range(args.concurrency)
    ]
    for conn in connections:
        await conn.open()
    requests = [connections[0].request_bytes(b) for b in bodies]
    errors: list[str] = []

    async def phase(total: int, latencies: list[float] | None) -> float:
        counter = iter(range(total))
        perf = time.perf_counter

        async def client(conn: Connection) -> None:
            for i in counter:
                start = perf()
                status, body = await conn.send(requests[i % len(requests)])
                if latencies is not None:
                    latencies.append(perf() - start)
                if status != 200:
                    errors.append(f"{status}: {body[:300]!r}")

        started = perf()
        await asyncio.gather(*(client(c) for c in connections))
        return perf() - started

    await phase(args.warmup, None)
    latencies: list[float] = []
    wall = await phase(args.requests, latencies)
    for conn in connections:
        conn.close()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "warmup": args.warmup,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 4),
        "req_per_s": round(len(latencies) / wall, 1),
        "latency_ms": {
            "p50": round(pct(50), 3),
            "p90": round(pct(90), 3),
            "p99": round(pct(99), 3),
            "mean": round(statistics.fmean(latencies) * 1000, 3),
            "max": round(ordered[-1] * 1000, 3),
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--bodies", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--header",
        action="append",
        help="extra request header 'Name: value' (repeat), e.g. an Authorization header",
    )
    args = p.parse_args()
    args.bodies_text = args.bodies.read_text(encoding="utf-8")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(args))
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
