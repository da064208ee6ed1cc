"""Request bodies: the one strict JSON parser of every JSON route, and uploads streamed to disk.

Every JSON body is parsed by :func:`civicml.core.jsonsafe.loads` (a duplicate key or nesting
deeper than 64 levels is a 400, a bare ``NaN``/``Infinity`` a 422 except on the metric routes,
whose values may be non-finite). The invocation routes parse theirs with the same function
(``routers/serving.py``). Body sizes are bounded before this, by the guard.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, BinaryIO, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute, APIRouter
from starlette.exceptions import HTTPException

from civicml.core import jsonsafe
from civicml.core.errors import CivicMLError
from civicml.server.deps import AppState
from civicml.store.faults import translate_storage_errors

__all__ = [
    "NAN_ROUTES",
    "UPLOAD_SPOOL_BYTES",
    "JSONRoute",
    "StrictJSONRequest",
    "strict_json",
    "upload_body",
]

#: Routes whose bodies may hold bare NaN/Infinity: metric values legitimately are non-finite.
NAN_ROUTES = frozenset({"/api/v1/runs/{run_id}/metrics", "/api/v1/metrics/batches"})


class StrictJSONRequest(Request):
    """A request whose :meth:`json` is :func:`civicml.core.jsonsafe.loads`."""

    allow_nan = False

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = jsonsafe.loads(await self.body(), allow_nan=self.allow_nan)
        return self._json


class _NaNJSONRequest(StrictJSONRequest):
    allow_nan = True


class JSONRoute(APIRoute):
    """An API route that parses its JSON body with the strict parser, and lets a
    :class:`~civicml.core.errors.CivicMLError` met while reading the body (not JSON, a duplicate
    key, too deep, too large) answer as itself instead of FastAPI's generic 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        request_class = _NaNJSONRequest if self.path in NAN_ROUTES else StrictJSONRequest

        async def strict(request: Request) -> Response:
            try:
                return await handler(request_class(request.scope, request.receive))
            except HTTPException as err:
                if isinstance(err.__cause__, CivicMLError):
                    raise err.__cause__ from None
                raise

        return strict


def strict_json(routers: Iterable[APIRouter]) -> None:
    """Make every route of ``routers`` (and every route added to them later) a
    :class:`JSONRoute`.

    The routers are module-level objects built with FastAPI's default route class. A
    :class:`JSONRoute` holds nothing an :class:`APIRoute` does not, and FastAPI builds the
    handler of an included route when the app first routes to it, so switching the class before
    ``include_router`` is enough; a route added straight to the app is built at once, so the
    app's router is switched before any is added. Idempotent (``create_app`` may run many times
    in one process).
    """
    for router in routers:
        router.route_class = JSONRoute
        for route in router.routes:
            if type(route) is APIRoute:
                route.__class__ = JSONRoute


#: Upload bytes held in memory before the rest goes to a temporary file.
UPLOAD_SPOOL_BYTES = 1 << 20


@contextlib.asynccontextmanager
async def upload_body(request: Request) -> AsyncIterator[BinaryIO]:
    """The request body, streamed into a temporary file as it arrives (at most 1 MiB of it in
    memory) and positioned at its start; the file is gone when the block ends.

    The file lives on the artifact store's volume, where the bytes are headed anyway. The guard
    has already bounded the body (setting ``server_max_upload_bytes``).

    Raises:
        InsufficientStorageError: That volume is full or read-only (507).
    """
    state: AppState = request.app.state.civicml
    spool = tempfile.SpooledTemporaryFile(
        max_size=UPLOAD_SPOOL_BYTES, dir=str(state.ctx.artifacts.scratch_dir)
    )
    with spool:
        with translate_storage_errors():
            async for chunk in request.stream():
                spool.write(chunk)
            spool.seek(0)
        yield cast(BinaryIO, spool)
