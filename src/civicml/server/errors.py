"""One error body for every failure, and the handlers that produce it.

Store faults are mapped here, in one place: the stores raise
:class:`~civicml.core.errors.ServiceUnavailableError` (503: a database lock held past the busy
timeout, an unreachable database) and :class:`~civicml.core.errors.InsufficientStorageError`
(507: a full or read-only volume), and the same conditions surfacing as a raw ``OSError`` or
SQLAlchemy error are classified by :func:`civicml.store.faults.classify`. Both answers carry
``Retry-After``. Anything else is a bug: a generic 500, logged by error type and stack, never with
an SQL statement, its parameters or the database's detail lines.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from civicml.core.errors import CivicMLError, RetryLaterError
from civicml.store.faults import classify

__all__ = [
    "SECURITY_HEADERS",
    "error_body",
    "error_headers",
    "install_error_handlers",
    "last_resort",
    "log_bug",
    "validation_body",
]

log = logging.getLogger("civicml.server")

#: Sent with every answer (the guard adds them; the last-resort 500 handler, which runs outside
#: the guard, adds them itself).
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]

_HTTP_NAMES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    413: "PayloadTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "InvalidInputError",
    500: "InternalError",
    503: "ServiceUnavailableError",
}


def error_body(
    status: int,
    message: str,
    *,
    hint: str | None = None,
    error: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{"ok": false, "status", "error", "message", "hint", "details"}``."""
    return {
        "ok": False,
        "status": status,
        "error": error or _HTTP_NAMES.get(status, "Error"),
        "message": message,
        "hint": hint,
        "details": details or [],
    }


def validation_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The 422 body for a request that failed validation (pydantic's ``errors()``, each
    ``loc`` starting where the value came from, e.g. ``body``)."""
    details = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in errors
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid input"}
    where = ".".join(first["loc"]) or "request"
    return error_body(
        422,
        f"Invalid input at {where}: {first['msg']}.",
        details=details,
        hint="Check the request against /openapi.json.",
    )


def error_response(status: int, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **kwargs), status_code=status)


def error_headers(err: CivicMLError) -> dict[str, str]:
    """Headers that go with an error's body: ``Retry-After`` for 503 and 507."""
    if isinstance(err, RetryLaterError):
        return {"Retry-After": str(max(1, int(err.retry_after)))}
    return {}


def civicml_response(err: CivicMLError) -> JSONResponse:
    if err.status >= 500:
        log.error("%s: %s", type(err).__name__, err.message)
    return JSONResponse(err.to_body(), status_code=err.status, headers=error_headers(err))


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling (as tracebacks show)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return seen


def log_bug(err: BaseException, what: str = "unhandled error") -> None:
    """Log a bug with its stack, but without SQL: SQLAlchemy errors lose their statement (and
    parameters), and the database driver's message is cut to its first line (PostgreSQL's
    DETAIL lines quote the values)."""
    chain = _chain(err)
    drivers = {id(e.orig) for e in chain if isinstance(e, StatementError) and e.orig is not None}
    if not drivers and not any(isinstance(e, SQLAlchemyError) for e in chain):
        log.error(what, exc_info=err)
        return
    parts: list[str] = []
    for item in reversed(chain):
        if isinstance(item, StatementError):
            item.statement = None  # uvicorn logs the exception again
            item.params = None
        if isinstance(item, SQLAlchemyError) or id(item) in drivers:
            orig = getattr(item, "orig", None)
            text = str(orig if orig is not None else item).strip().splitlines()
            message = text[0] if text else ""
        else:
            message = str(item)
        name = f"{type(item).__module__}.{type(item).__qualname__}"
        parts.append(
            "Traceback (most recent call last):\n"
            + "".join(traceback.format_tb(item.__traceback__))
            + f"{name}: {message}"
        )
    log.error("%s: %s\n%s", what, type(err).__name__, "\n\n".join(parts))


def _outside_guard(response: JSONResponse) -> JSONResponse:
    """Add the security headers to an answer given outside the guard (the last resort)."""
    for name, value in SECURITY_HEADERS:
        response.headers[name.decode()] = value.decode()
    return response


def _bug_response() -> JSONResponse:
    return error_response(
        500,
        "Internal server error; the server log has the details.",
        hint="This is a bug in civicml; please report it with the log.",
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CivicMLError)
    async def _civicml(_request: Request, err: CivicMLError) -> JSONResponse:
        return civicml_response(err)

    # A full disk, a read-only volume or a locked database that surfaced untranslated: the
    # typed answer when it is one of those, else a bug (answered here, so that it is logged
    # once and without SQL).
    @app.exception_handler(OSError)
    @app.exception_handler(SQLAlchemyError)
    async def _store_fault(_request: Request, err: Exception) -> JSONResponse:
        fault = classify(err)
        if fault is not None:
            log.warning("%s: %s", type(fault).__name__, fault.message)
            return civicml_response(fault)
        log_bug(err)
        return _bug_response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(err.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        hint = "See /openapi.json for the API's routes." if err.status_code in (404, 405) else None
        message = err.detail if isinstance(err.detail, str) else "HTTP error"
        return error_response(err.status_code, message, hint=hint)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, err: Exception) -> JSONResponse:
        return _outside_guard(_last_resort_response(err))


def _last_resort_response(err: Exception) -> JSONResponse:
    fault = err if isinstance(err, CivicMLError) else classify(err)
    if fault is not None:
        return civicml_response(fault)
    log_bug(err)
    return _bug_response()


def last_resort(err: Exception) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of the app's last-resort answer to ``err``: the typed answer
    when it is a store fault (a full disk, a locked database), else a 500 with the one error
    body, logged as a bug (without SQL). The security headers are not among ``headers``."""
    response = _last_resort_response(err)
    named = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return response.status_code, bytes(response.body), named
