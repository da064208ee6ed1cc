"""One error body for every failure, and the handlers that produce it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from civicml.core.errors import CivicMLError

__all__ = ["SECURITY_HEADERS", "error_body", "install_error_handlers"]

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
    409: "ConflictError",
    413: "PayloadTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "InvalidInputError",
    500: "InternalError",
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


def error_response(status: int, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **kwargs), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CivicMLError)
    async def _civicml(_request: Request, err: CivicMLError) -> JSONResponse:
        if err.status >= 500:
            log.error("%s: %s", type(err).__name__, err.message)
        return JSONResponse(err.to_body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, err: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in err.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid input"}
        where = ".".join(first["loc"]) or "request"
        return error_response(
            422,
            f"Invalid input at {where}: {first['msg']}.",
            details=details,
            hint="Check the request against /openapi.json.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        hint = "See /openapi.json for the API's routes." if err.status_code in (404, 405) else None
        message = err.detail if isinstance(err.detail, str) else "HTTP error"
        return error_response(err.status_code, message, hint=hint)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=err)
        response = error_response(
            500,
            "Internal server error; the server log has the details.",
            hint="This is a bug in civicml; please report it with the log.",
        )
        for name, value in SECURITY_HEADERS:
            response.headers[name.decode()] = value.decode()
        return response
