"""The direct lane: a small invocation answered inside the HTTP protocol, without ASGI.

A one-row prediction of a linear model costs a few microseconds; around it, an ASGI server
spends most of a request's time on machinery this one request does not need — a task, a
request/response cycle with its events, five middleware layers each awaiting the next, header
checks of its own answer. For the invocations the event loop answers anyway (``answer_now``: a
small body, a model with an inline fast path), the HTTP protocol (``server/transport.py``)
hands the parsed head and the whole body to :meth:`DirectLane.answer`, which asks the very
checks the ASGI layers ask — the guard's :meth:`~civicml.server.guard.GuardMiddleware.refusal`,
the authentication layer's :meth:`~civicml.server.auth.AuthMiddleware.admit_cached` — calls the
same :func:`~civicml.server.routers.serving.answer_now`, and gives back the whole answer, which
the protocol writes in one piece. The answer is the ASGI path's, byte for byte (body, status and
headers; the tests compare them).

Whatever the lane does not answer goes through the ASGI app as before, which then decides
it with its failure limits, audit and error handling: a refusal by the guard, a token not in
this process's cache, a model that needs a worker thread, explanations, big or chunked bodies,
pipelined requests behind one in progress, HTTP/1.0, ``Expect: 100-continue``, a server under a
root path. Nothing the lane hands on has been predicted, counted or captured; the records it
parsed travel with the request (``PARSED_KEY``), so the ASGI path does not parse them again.

The lane exists only when the app's layers between the guard and the invocations lane are the
ones it knows (:func:`direct_lane`), and the protocol uses it only when nothing but uvicorn's
proxy-headers layer and the server's HSTS layer wrap the app (``transport.py``); any other
middleware gets every request.
"""

from __future__ import annotations

import functools
import logging
import re
from http import HTTPStatus
from typing import Any

from starlette.types import Scope

from civicml.core.errors import CivicMLError
from civicml.server.auth import AuthMiddleware
from civicml.server.errors import SECURITY_HEADERS, last_resort
from civicml.server.guard import GuardMiddleware
from civicml.server.metrics import MetricsLane
from civicml.server.routers import serving
from civicml.server.routers.tracking import BatchesLane

__all__ = ["DirectLane", "direct_lane", "status_line"]

log = logging.getLogger("civicml.server")

Headers = list[tuple[bytes, bytes]]

#: A header value uvicorn would refuse to send (its ``HEADER_VALUE_RE``).
_UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0A-\x1F\x7F]")

#: Layers between the guard and the invocations lane that do nothing to an invocation the
#: direct lane answers: the metrics lane answers ``GET /metrics`` only, the batches lane the
#: metric batches' path only; authentication is asked through ``admit_cached``.
_PASSING = (MetricsLane, BatchesLane, AuthMiddleware)


class DirectLane:
    """Answers small invocations for the HTTP protocol, as the app's ASGI layers would.

    Args:
        app: The server's app (its state holds the model host and settings).
        guard: The app's request guard.
        auth: The app's authentication layer, or None when the app has none.
    """

    def __init__(
        self,
        app: serving.InvocationsFirstApp,
        guard: GuardMiddleware,
        auth: AuthMiddleware | None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.auth = auth
        #: The largest body the lane takes (bigger ones are parsed in a worker thread).
        self.max_body = serving.INLINE_BODY_BYTES

    def answer(self, scope: Scope, body: bytes) -> tuple[int, Headers, bytes] | None:
        """The answer to the invocation request ``scope`` with ``body``: (status, headers
        besides the server's date, body), or None when the ASGI app must answer it (then
        nothing was predicted, counted or captured; parsed records are in ``scope``)."""
        target = serving.invocation_target_of(scope)
        if target is None:
            return None
        if self.guard.refusal(scope, dict(scope["headers"])) is not None:
            return None  # the guard answers it, with its own body
        if self.auth is not None and not self.auth.admit_cached(scope):
            return None  # authentication decides it (failure limit, audit, 401 body)
        scope["app"] = self.app
        project, name, query, model = target
        try:
            explain, pinned, model_target = serving.invocation_options(scope, query, model)
            now = serving.answer_now(
                serving.model_host_of(self.app),
                project,
                name,
                body,
                explain=explain,
                caller=serving.lane_caller(scope),
                variant=pinned,
                target=model_target,
            )
            if now is None or isinstance(now, serving.Parsed):
                if now is not None:
                    scope[serving.PARSED_KEY] = now
                return None
            status, payload, extra = 200, now[0], serving.answer_headers(now)
        except CivicMLError as err:
            status, payload, extra = serving.error_answer(err)
        except Exception as err:  # as the app's last-resort handler answers it
            status, payload, named = last_resort(err)
            extra = [(k.lower().encode(), v.encode()) for k, v in named.items()]
        if any(_UNSAFE_VALUE.search(value) for _, value in extra):  # as uvicorn refuses it
            status, payload, named = last_resort(RuntimeError("Invalid HTTP header value."))
            extra = [(k.lower().encode(), v.encode()) for k, v in named.items()]
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *extra,
            *SECURITY_HEADERS,
        ]
        return status, headers, payload


def direct_lane(app: Any) -> DirectLane | None:
    """The direct lane of the server's app ``app``, built once; None when ``app`` is not
    civicml's or has layers the lane does not know between its guard and its invocations
    lane."""
    if not isinstance(app, serving.InvocationsFirstApp):
        return None
    found: DirectLane | bool | None = getattr(app.state, "direct_lane", False)
    if found is False:
        found = _build(app)
        app.state.direct_lane = found
    return found if isinstance(found, DirectLane) else None


def _build(app: serving.InvocationsFirstApp) -> DirectLane | None:
    guard = app.guard()
    if not isinstance(guard, GuardMiddleware):
        return None
    auth = None
    layer: Any
    layer = guard.app
    while not isinstance(layer, serving.InvocationsLane):
        if not isinstance(layer, _PASSING):
            return None
        if isinstance(layer, AuthMiddleware):
            auth = layer
        layer = layer.app
    return DirectLane(app, guard, auth)


@functools.cache
def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}".rstrip().encode() + b"\r\n"
