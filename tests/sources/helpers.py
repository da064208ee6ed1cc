"""Real servers for the source tests (skipped with a reason when absent, unless
CIVICML_REQUIRE_SERVICES=1): tables on PostgreSQL and MariaDB, and publishers for NATS
JetStream, Redis Streams, MQTT and RabbitMQ. Each test uses names of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import service_available, skip_or_fail

PROJECT = "intake"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
URLS = {
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
    "mqtt": "mqtt://127.0.0.1:1883",
    "rabbitmq": RABBIT,
}
PORTS = {
    "postgres": 5432,
    "mariadb": 3306,
    "nats": 4222,
    "redis": 6379,
    "mqtt": 1883,
    "rabbitmq": 5672,
}


def need(what: str) -> None:
    port = PORTS[what]
    if not service_available("127.0.0.1", port):
        skip_or_fail(f"{what} is not reachable on 127.0.0.1:{port}")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# Databases --------------------------------------------------------------------------------------
def pg(sql: str, *params: Any) -> list[Any]:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return list(cur.fetchall()) if cur.description else []


def maria(sql: str, *params: Any) -> list[Any]:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database="test")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


# Brokers ----------------------------------------------------------------------------------------
def bodies(start: int, count: int) -> list[bytes]:
    return [
        json.dumps({"id": i, "who": f"resident-{i}", "amount": i * 1.5}).encode()
        for i in range(start, start + count)
    ]


def nats_stream(subject: str) -> None:
    async def make() -> None:
        import nats

        nc = await nats.connect(URLS["nats"])
        try:
            js = nc.jetstream()
            await js.add_stream(name=subject.replace(".", "_"), subjects=[subject])
        finally:
            await nc.close()

    asyncio.run(make())


def publish(kind: str, where: str, messages: list[bytes]) -> None:
    """Publish ``messages`` to ``where`` (subject, stream key, topic or queue), durably."""
    if kind == "nats":

        async def send() -> None:
            import nats

            nc = await nats.connect(URLS["nats"])
            try:
                js = nc.jetstream()
                for body in messages:
                    await js.publish(where, body)
            finally:
                await nc.close()

        asyncio.run(send())
    elif kind == "redis":
        import redis

        client = redis.Redis.from_url(URLS["redis"])
        for body in messages:
            client.xadd(where, {"data": body})
        client.close()
    elif kind == "mqtt":
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        for body in messages:
            client.publish(where, body, qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
    else:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(RABBIT))
        channel = conn.channel()
        channel.queue_declare(where, durable=True)
        for body in messages:
            channel.basic_publish("", where, body, pika.BasicProperties(delivery_mode=2))
        conn.close()


def prepare(kind: str, where: str) -> None:
    if kind == "nats":
        nats_stream(where)
    elif kind == "rabbitmq":
        publish(kind, where, [])


# Crashes ----------------------------------------------------------------------------------------
CHILD = Path(__file__).with_name("crash_child.py")


def crash_run(
    home: Path, project: str, source: str, at: str, clock: str, env: dict[str, str]
) -> int:
    """Run the source in a child process that kills itself (SIGKILL) at ``at``:
    ``commit`` (inside the version's transaction, before it commits) or ``ack`` (after the
    commit, before the broker is told). Returns the child's exit code."""
    done = subprocess.run(
        [sys.executable, str(CHILD), str(home), project, source, at, clock],
        env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != -signal.SIGKILL:
        raise AssertionError(done.stderr.decode()[-3000:])
    return done.returncode
