"""Liveness and readiness (``/api/v1/health/live``, ``/api/v1/health/ready``), for a load
balancer or an orchestrator's probes; no authentication, and nothing internal in the answers
(no paths, URLs or error texts: the server log has those).

- *live*: the process's event loop answers (it does not touch the database or a thread pool, so a
  busy server is not restarted for being busy).
- *ready*: the process can serve: its metadata database answers a query and its artifact store
  is reachable; otherwise 503 with the one error body naming each check that failed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from civicml.server.errors import error_body
from civicml.store.context import Context

__all__ = ["readiness", "router"]

log = logging.getLogger("civicml.server")

router = APIRouter(prefix="/api/v1/health", tags=["health"])
#: A digest no object has: asking the store for it proves the store answers.
_PROBE = "0" * 64


def readiness(ctx: Context) -> dict[str, str]:
    """Each check (``database``, ``artifacts``) and whether it passed (``ok`` / ``failing``);
    the cause of a failure is logged (its kind only), never answered."""
    checks: dict[str, str] = {}
    try:
        with ctx.db.read() as conn:
            conn.execute(text("SELECT 1")).scalar()
        checks["database"] = "ok"
    except Exception as err:
        log.warning("readiness: the database does not answer (%s)", type(err).__name__)
        checks["database"] = "failing"
    try:
        store = ctx.artifacts
        if not store.root.is_dir():
            raise FileNotFoundError("artifact store root")
        store.exists(_PROBE)
        checks["artifacts"] = "ok"
    except Exception as err:
        log.warning("readiness: the artifact store is not reachable (%s)", type(err).__name__)
        checks["artifacts"] = "failing"
    return checks


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers (no authentication)."""
    return {"status": "alive"}


@router.get("/ready", response_model=None)
def ready(request: Request) -> dict[str, Any] | JSONResponse:
    """The process can serve: its database answers and its artifact store is reachable (no
    authentication; 503 naming what is not ready)."""
    checks = readiness(request.app.state.civicml.ctx)
    failing = [name for name, state in checks.items() if state != "ok"]
    if not failing:
        return {"status": "ready", "checks": checks}
    body = error_body(
        503,
        f"Not ready: {' and '.join(_WHAT[name] for name in failing)}.",
        hint="The server keeps trying; its log names the cause. Check the database "
        "(db_url) and the artifact store (artifacts).",
        error="ServiceUnavailableError",
        details=[{"check": name, "status": state} for name, state in checks.items()],
    )
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


_WHAT = {
    "database": "the metadata database does not answer",
    "artifacts": "the artifact store is not reachable",
}
