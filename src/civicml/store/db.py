"""The metadata database: one SQLAlchemy engine, units of work, automatic migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` and a busy timeout, and
every write transaction starts with ``BEGIN IMMEDIATE``: a writer waits its turn instead of failing
with "database is locked" when another process committed first. PostgreSQL runs the same code.

A lock held past the busy timeout, a full or read-only database and a lost connection are raised
as :class:`~civicml.core.errors.ServiceUnavailableError` (503) or
:class:`~civicml.core.errors.InsufficientStorageError` (507) (see :mod:`civicml.store.faults`);
the transaction is rolled back, so nothing half-written stays. Engines never render bound
parameters into error messages (``hide_parameters``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from civicml.core.errors import ConfigurationError, MissingExtraError
from civicml.store.faults import database_fault, lock_timeout

__all__ = ["MetadataStore", "UnitOfWork", "head_revision"]


@functools.cache
def head_revision() -> str:
    """The newest migration script's revision (read once per process)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise ConfigurationError("civicml's database migrations are missing from the package.")
    return head


_MIGRATIONS = Path(__file__).parent / "migrations"
_BUSY_TIMEOUT_S = 60.0


@dataclass(slots=True)
class UnitOfWork:
    """One write transaction: the state change, its lineage and its audit event commit together.

    Callbacks registered with :meth:`after_commit` run once the transaction has committed — and
    is durable, unless it was opened with ``durable=False`` (:attr:`durable`; signing the new
    audit-chain head waits for a durable one); they never run when the transaction rolls back. Those
    registered with :meth:`before_commit` run inside the transaction, last (for example writing
    the audit-chain head once for every event of the transaction). ``memo`` holds what a service
    keeps for the rest of the transaction (the audit head it read).
    """

    conn: Connection
    #: Whether the commit is durable when it returns (see :meth:`MetadataStore.write`).
    durable: bool = True
    _callbacks: dict[str, Callable[[], None]] = field(default_factory=dict)
    _finishers: dict[str, Callable[[], None]] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)

    def after_commit(self, key: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` after commit; a second registration under ``key`` replaces the first."""
        self._callbacks[key] = callback

    def driver_cursor(self) -> tuple[Any, str]:
        """A DB-API cursor in this transaction and the driver's parameter mark (``?`` on
        SQLite, ``%s`` on PostgreSQL), for hot statements whose SQLAlchemy overhead costs more
        than the database's work. One cursor per transaction, reused."""
        found = self.memo.get("driver-cursor")
        if found is None:
            raw = self.conn.connection.driver_connection
            mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
            found = self.memo["driver-cursor"] = (raw.cursor(), mark)  # type: ignore[union-attr]
        return found

    def before_commit(self, key: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the transaction just before it commits (not when it rolls back);
        a second registration under ``key`` replaces the first."""
        self._finishers[key] = callback


class MetadataStore:
    """The metadata database behind every service.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        migrate: Apply pending Alembic migrations now (on by default).
        busy_timeout_s: How long a write waits for a lock held by another writer before it
            fails with :class:`~civicml.core.errors.ServiceUnavailableError`.
    """

    def __init__(
        self, url: str, *, migrate: bool = True, busy_timeout_s: float = _BUSY_TIMEOUT_S
    ) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.engine = _create_engine(url, busy_timeout_s)
        self.dialect = self.engine.dialect.name
        self._write_engine = self.engine.execution_options(civicml_write=True)
        self._lazy_engine = self.engine.execution_options(civicml_write=True, civicml_lazy=True)
        self._sqlite_write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._before_close: dict[str, Callable[[], None]] = {}
        self.closed = False
        if migrate:
            try:
                self.migrate()
            except OperationalError as err:
                self.engine.dispose()
                raise ConfigurationError(
                    f"Cannot open the metadata database {make_url(url).render_as_string()}: "
                    f"{str(err.orig).strip().splitlines()[0]}.",
                    hint="Check CIVICML_DB_URL and that the database server is running.",
                ) from err

    # Transactions ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot transaction.

        Raises:
            ServiceUnavailableError: The database is locked or unreachable (503).
        """
        with _translate_faults(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[UnitOfWork]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success.

        ``durable=False`` commits without waiting for the disk (SQLite ``synchronous=NORMAL``
        for this transaction, PostgreSQL ``synchronous_commit = off``): the commit is visible
        at once and survives the process being killed, but a power cut or an operating-system
        crash may undo it — never half of it, and never without undoing every later such
        commit too, since the database log keeps commits in order; the next durable commit
        makes it durable as well. For bookkeeping that can be redone, such as a pipeline step's
        start (a lost start only makes ``retry`` run the step again).

        Raises:
            ServiceUnavailableError: Another writer held the lock longer than the busy timeout,
                or the database is unreachable (503); nothing was written.
            InsufficientStorageError: The database is full or read-only (507); nothing was
                written.
        """
        lock = self._sqlite_write_lock
        # Writers in one process queue here rather than spin on SQLITE_BUSY, as long as the
        # database itself would let them wait.
        if lock is not None and not lock.acquire(timeout=self.busy_timeout_s):
            raise lock_timeout()
        engine = self._write_engine if durable else self._lazy_engine
        try:
            with _translate_faults(), engine.connect() as conn:
                uow = UnitOfWork(conn, durable)
                try:
                    with conn.begin():
                        if not durable and self.dialect == "postgresql":
                            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                        yield uow
                        for finish in uow._finishers.values():
                            finish()
                finally:
                    if not durable and self.dialect == "sqlite":
                        _restore_full(conn)
        finally:
            if lock is not None:
                lock.release()
        for callback in uow._callbacks.values():
            callback()

    def before_close(self, key: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` when :meth:`close` is called, before the connections go (work
        deferred past a commit, such as signing the audit head); one callback per ``key``."""
        self._before_close[key] = callback

    def close(self) -> None:
        for callback in list(self._before_close.values()):
            callback()
        self.closed = True
        self.engine.dispose()

    # Migrations ------------------------------------------------------------------------------
    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            except OperationalError:
                conn.rollback()
                return None
            except Exception as err:  # PostgreSQL: UndefinedTable surfaces as ProgrammingError
                if "alembic_version" not in str(err):
                    raise
                conn.rollback()
                return None
        return None if row is None else str(row[0])

    def migrate(self) -> None:
        """Bring the schema to the newest revision (no-op when already there)."""
        if self.current_revision() == head_revision():
            return
        from alembic import command
        from alembic.config import Config

        with self._migration_lock(), self.engine.connect() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(_MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """One process migrates at a time (file lock on SQLite, advisory lock on PostgreSQL)."""
        if self.dialect == "sqlite":
            database = make_url(self.url).database
            if not database or database == ":memory:":
                yield
                return
            lock_path = Path(database).with_suffix(".migrate.lock")
            with open(lock_path, "a+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        elif self.dialect == "postgresql":
            key = zlib.crc32(b"civicml-migrations")
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        else:
            yield


def _restore_full(conn: Connection) -> None:
    """Put ``synchronous=FULL`` back on a pooled SQLite connection after a lazy write, so the
    next transaction on it is durable; a connection where that fails is discarded from the
    pool instead (the write's own error, if any, is the one that counts)."""
    try:
        conn.connection.driver_connection.execute("PRAGMA synchronous=FULL")  # type: ignore[union-attr]
    except Exception:
        with contextlib.suppress(Exception):
            conn.invalidate()


@contextlib.contextmanager
def _translate_faults() -> Iterator[None]:
    """Database conditions (locked, full, read-only, unreachable) as their typed errors."""
    try:
        yield
    except Exception as err:  # SQLAlchemy's errors, and a driver's from a DB-API cursor
        fault = database_fault(err)
        if fault is None:
            raise
        raise fault from err


def _create_engine(url: str, busy_timeout_s: float = _BUSY_TIMEOUT_S) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigurationError(
            f"CIVICML_DB_URL {url!r} is not a database URL.",
            hint="Use 'sqlite:////absolute/path/civicml.db' or "
            "'postgresql+psycopg://user@host:5432/dbname'.",
        ) from err
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
            pool_size=8,
            max_overflow=16,
            # The connection used last is used next: its page cache holds what it wrote. In
            # FIFO order one thread's transactions took turns on two connections as soon as
            # another thread had needed one, and each had to read back what the other wrote.
            pool_use_lifo=True,
            hide_parameters=True,
        )
        _configure_sqlite(engine, busy_timeout_s)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ConfigurationError(
                f"PostgreSQL URL {url!r} uses driver {parsed.get_driver_name()!r}.",
                hint="Use the psycopg 3 driver: 'postgresql+psycopg://user@host:5432/dbname'.",
            )
        try:
            return create_engine(
                url, pool_size=8, max_overflow=16, pool_pre_ping=True, hide_parameters=True
            )
        except (ModuleNotFoundError, NoSuchModuleError) as err:
            raise MissingExtraError("PostgreSQL metadata store", "postgres", "psycopg") from err
    raise ConfigurationError(
        f"Database backend {backend!r} (from {url!r}) is not supported.",
        hint="Use SQLite (the default) or PostgreSQL ('postgresql+psycopg://...').",
    )


def _enter_wal(cursor: Any, busy_timeout_s: float) -> None:
    """Switch the database to WAL, retrying while another process holds the lock.

    SQLite answers a journal-mode change (and a first read while another connection runs WAL
    recovery) with SQLITE_BUSY without calling the busy handler, so two processes opening a new
    database at once can fail here although ``busy_timeout`` is set. Retry with a short backoff
    until the same deadline the busy handler would have used.
    """
    deadline = time.monotonic() + max(busy_timeout_s, 0.1)
    delay = 0.005
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={max(1, round(busy_timeout_s * 1000))}")
        _enter_wal(cursor, busy_timeout_s)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: every transaction passes here, and SQLAlchemy's work for a
        # statement cost more than SQLite's for BEGIN (a driver error is a fault all the same,
        # see _translate_faults).
        raw = conn.connection.driver_connection
        options = conn.get_execution_options()
        if options.get("civicml_write"):
            if options.get("civicml_lazy"):  # MetadataStore.write puts FULL back after it
                raw.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
            raw.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        else:
            raw.execute("BEGIN")  # type: ignore[union-attr]
