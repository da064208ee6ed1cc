"""Faults of the stores, as the errors a caller can act on.

A full or read-only file system and a database that is locked, out of space or unreachable are
conditions, not bugs: they clear by themselves or when an operator acts, and the request may be
retried. The stores raise :class:`~civicml.core.errors.InsufficientStorageError` (507) and
:class:`~civicml.core.errors.ServiceUnavailableError` (503) for them, both with a ``retry_after``,
and the server's last-resort handlers use :func:`classify` for the same errors when they surface
elsewhere. Messages name no server path and no SQL.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from civicml.core.errors import (
    CivicMLError,
    InsufficientStorageError,
    ServiceUnavailableError,
)

__all__ = [
    "FULL_RETRY_AFTER_S",
    "LOCKED_RETRY_AFTER_S",
    "classify",
    "database_fault",
    "driver_error",
    "lock_timeout",
    "storage_fault",
    "translate_storage_errors",
]

#: Seconds a client is asked to wait after a lock timeout (another writer is at work).
LOCKED_RETRY_AFTER_S = 2
#: Seconds a client is asked to wait after "no space" or "read-only" (someone has to act).
FULL_RETRY_AFTER_S = 60

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}  # on a write: the store refuses it

# SQLite reports these in the DBAPI error's message.
_SQLITE_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
_SQLITE_FULL = ("database or disk is full",)
_SQLITE_READ_ONLY = ("attempt to write a readonly database", "readonly database")
# PostgreSQL SQLSTATEs: lock and serialization failures, connection trouble, too many clients,
# shutting down (503); disk full, out of memory (507).
_PG_BUSY_STATES = {"40001", "40P01", "55P03", "55006", "53300", "57P01", "57P02", "57P03"}
_PG_FULL_STATES = {"53100", "53200"}


def storage_fault(
    err: OSError, store: str = "artifact store", *, writing: bool = False
) -> InsufficientStorageError | None:
    """The 507 for an I/O error because ``store`` is full or read-only, else None.

    With ``writing``, "permission denied" counts as read-only too (the store refused a write).
    """
    if err.errno in _NO_SPACE:
        return InsufficientStorageError(
            f"The {store} is out of space; nothing was stored.",
            hint="Free space on the volume that holds it (or raise its quota), then retry; "
            "everything stored before is intact.",
            retry_after=FULL_RETRY_AFTER_S,
        )
    if err.errno in (_NOT_WRITABLE if writing else _READ_ONLY):
        return InsufficientStorageError(
            f"The {store} is read-only; nothing was stored.",
            hint="Make its volume writable for the server (remount it read-write, fix its "
            "permissions), then retry; reading what is stored still works.",
            retry_after=FULL_RETRY_AFTER_S,
        )
    return None


@contextlib.contextmanager
def translate_storage_errors(store: str = "artifact store") -> Iterator[None]:
    """Turn "no space" and "read-only" :class:`OSError` of the writes inside the block into a
    507 (the block only writes: "permission denied" means the store is not writable)."""
    try:
        yield
    except OSError as err:
        fault = storage_fault(err, store, writing=True)
        if fault is None:
            raise
        raise fault from err


def _first_line(value: object) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else ""


def database_fault(err: BaseException) -> CivicMLError | None:
    """The 503 or 507 for a database error that is a condition rather than a bug, else None.

    Recognised: SQLite "database is locked" (a lock held past the busy timeout), "database or
    disk is full", "readonly database"; PostgreSQL lock, deadlock and serialization failures,
    lost or refused connections, too many clients, shutdown (by SQLSTATE), disk full; a
    connection pool that stayed exhausted.
    """
    if isinstance(err, PoolTimeoutError):
        return _busy("All connections to the metadata database are in use.")
    orig = driver_error(err)
    if orig is None:
        return None
    message = _first_line(orig).lower()
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    if any(m in message for m in _SQLITE_FULL) or state in _PG_FULL_STATES:
        return InsufficientStorageError(
            "The metadata database is out of space; nothing was changed.",
            hint="Free space on the database's volume (or raise its quota), then retry.",
            retry_after=FULL_RETRY_AFTER_S,
        )
    if any(m in message for m in _SQLITE_READ_ONLY):
        return InsufficientStorageError(
            "The metadata database is read-only; nothing was changed.",
            hint="Make the database file and its directory writable for the server, then retry.",
            retry_after=FULL_RETRY_AFTER_S,
        )
    if any(m in message for m in _SQLITE_LOCKED) or state in _PG_BUSY_STATES:
        return _busy("The metadata database is locked by another writer.")
    invalidated = isinstance(err, DBAPIError) and err.connection_invalidated
    if invalidated or state.startswith("08"):
        return _busy("The metadata database cannot be reached.")
    return None


def driver_error(err: BaseException) -> BaseException | None:
    """The database driver's own exception behind ``err``: SQLAlchemy's wrapped one, or ``err``
    itself when a hot path raised it from a DB-API cursor (sqlite3, psycopg); else None."""
    if isinstance(err, DBAPIError):
        return err.orig
    if isinstance(err, sqlite3.Error) or type(err).__module__.split(".")[0] == "psycopg":
        return err
    return None


def lock_timeout() -> ServiceUnavailableError:
    """The 503 for a write that waited its busy timeout for another writer in this process."""
    return _busy("The metadata database is busy with other writes.")


def _busy(message: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        message + " Nothing was changed.",
        hint=f"Retry in {LOCKED_RETRY_AFTER_S} seconds. If it persists, look for a long-running "
        "process holding the database (CIVICML_DB_BUSY_TIMEOUT_S is how long a write waits).",
        retry_after=LOCKED_RETRY_AFTER_S,
    )


def classify(err: BaseException) -> CivicMLError | None:
    """The typed error for a store fault that surfaced untranslated, else None (a bug)."""
    if isinstance(err, OSError):
        return storage_fault(err, "server's storage")
    return database_fault(err)
