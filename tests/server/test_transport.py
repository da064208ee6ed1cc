"""The server's transport wrapper (server/transport.py, ``CoalescingTransport``): a response's head
and small body leave in one write, on both of uvicorn's HTTP implementations; nothing is lost,
reordered or held past one turn of the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from civicml.server.lanes import send_json
from civicml.server.transport import CoalescingTransport, http_protocol


class Recorder(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0


async def _turn() -> None:
    """Let the event loop run the callbacks already scheduled."""
    await asyncio.sleep(0)


def test_a_head_and_its_body_leave_in_one_write() -> None:
    async def main() -> None:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert real.writes == []  # held for what follows
        assert t.get_write_buffer_size() == 19
        t.write(b'{"ok":true}')
        assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"ok":true}']
        await _turn()
        assert len(real.writes) == 1  # the scheduled flush finds nothing left

    asyncio.run(main())


def test_a_lone_write_goes_out_on_the_next_turn_of_the_loop() -> None:
    async def main() -> None:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(bytearray(b"HTTP/1.1 100 Continue\r\n\r\n"))
        await _turn()
        assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        t.write(memoryview(b"next"))
        t.write(b"")  # nothing to send: neither flushes nor joins
        assert real.writes[1:] == []
        await _turn()
        assert real.writes[1:] == [b"next"]

    asyncio.run(main())


def test_large_writes_are_never_held_or_joined() -> None:
    async def main() -> None:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        big = b"x" * (CoalescingTransport.HOLD_BYTES + 1)
        t.write(big)
        assert real.writes == [big]
        t.write(b"head")
        t.write(big)
        assert real.writes[1:] == [b"head", big]  # in order, the big one not copied onto it

    asyncio.run(main())


def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        real = Recorder()
        t = CoalescingTransport(real, loop)
        t.write(b"bye")
        t.close()
        assert real.writes == [b"bye"] and real.closed
        await _turn()
        assert real.writes == [b"bye"]  # not sent twice

        other = Recorder()
        t = CoalescingTransport(other, loop)
        t.write(b"never")
        t.abort()
        await _turn()
        assert other.writes == [] and other.aborted

    asyncio.run(main())


def test_a_write_held_when_the_peer_went_away_is_dropped() -> None:
    async def main() -> None:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"late")
        real.closed = True  # the connection was lost meanwhile
        await _turn()
        assert real.writes == []

    asyncio.run(main())


def test_the_rest_is_the_real_transports() -> None:
    async def main() -> None:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        assert t.get_extra_info("peername") == ("127.0.0.1", 50000)
        assert t.get_extra_info("socket", "none") == "none"
        t.pause_reading()
        assert not real.reading and not t.is_reading()
        t.resume_reading()
        assert real.reading
        t.writelines([b"a", b"b"])
        await _turn()
        assert real.writes == [b"ab"]

    asyncio.run(main())


async def _json_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send_json(send, 200, b'{"answer":42}', [(b"civicml-variant", b"a")])


@pytest.mark.parametrize("implementation", ["httptools", "h11"])
def test_each_http_implementation_answers_in_one_write(implementation: str) -> None:
    """uvicorn writes the head and the body separately; through the server's protocol one
    write carries both (it took two before)."""

    async def main() -> None:
        protocol_class = http_protocol(10.0, implementation)
        config = Config(app=_json_app, lifespan="off", access_log=False, log_level="warning")
        config.load()
        protocol = protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={}
        )
        real = Recorder()
        protocol.connection_made(real)
        for _ in range(2):  # two requests on one kept-alive connection
            before = len(real.writes)
            protocol.data_received(  # type: ignore[attr-defined]
                b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            )
            for _ in range(5):
                await _turn()
            answer = real.writes[before:]
            assert len(answer) == 1, answer
            assert answer[0].startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer[0].endswith(b'\r\n\r\n{"answer":42}')
            assert b"civicml-variant: a\r\n" in answer[0]
        protocol.connection_lost(None)

    asyncio.run(main())
