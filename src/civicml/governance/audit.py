"""The audit trail: hash-chained events, anchored by an Ed25519-signed head kept outside the DB.

Every state change appends one event in the same transaction as the change. Each event's hash
covers its fields and the hash of the event before it, so editing, deleting or reordering a row
breaks the chain. Someone with database access could still cut the tail or recompute every hash;
so after each commit the new head is signed with a key kept outside the database (in keys_dir)
and written to a witness file under ``$CIVICML_HOME`` (and into every export): ``verify`` then
also catches a truncated tail or a recomputed chain. With ``audit_witness = "database"`` each
signed head is also stored as a row in the database, so several servers sharing the database and
the key keep one chain that any of them can verify.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from civicml.core.errors import ConfigurationError, ServiceUnavailableError
from civicml.core.files import fsync_directory
from civicml.core.ids import new_id
from civicml.core.names import name_key
from civicml.governance._tables import audit_events, audit_head, audit_signed_heads, projects
from civicml.governance.access import Access, project_missing
from civicml.governance.schemas import (
    AuditEvent,
    AuditProblem,
    AuditReport,
    AuditWarning,
    SignedHead,
)
from civicml.store.context import Context
from civicml.store.db import UnitOfWork
from civicml.store.faults import database_fault, driver_error

__all__ = [
    "GENESIS",
    "AuditSigner",
    "AuditTrail",
    "canonical_json",
    "event_hash",
    "flush_witnesses",
]

GENESIS = "0" * 64
#: The export format: ``before`` and ``after`` are JSON objects (in civicml-audit/1 they were
#: JSON text inside the line); both verify, as the hash covers the same canonical text.
EXPORT_FORMAT = "civicml-audit/2"
MAX_WARNINGS = 100
log = logging.getLogger("civicml.audit")
_HEAD_ID = 1
_MEMO_KEY = "audit-head"
_KEY_CACHE: dict[Path, Ed25519PrivateKey] = {}
# Witness advances pending in this process, by witness path (see _WitnessBatch).
_BATCHES: dict[Path, _WitnessBatch] = {}
_BATCHES_LOCKS = [threading.Lock()]  # a list, so that a forked child can replace it
# A damaged database, as the drivers say it: SQLite's messages, PostgreSQL's SQLSTATE classes
# XX (internal error: data or index corrupted) and 58 (system error: I/O error).
_SQLITE_DAMAGE = ("malformed", "not a database", "disk i/o error", "database corrupt")
_PG_DAMAGE_CLASSES = ("XX", "58")


#: A witness thread with nothing to sign for this long ends (one home per test, or a CLI's
#: short life, must not leave a thread behind for each witness file it touched).
_WITNESS_IDLE_EXIT_S = 5.0

# One encoder for every event: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
)


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, UTF-8, no NaN."""
    return _CANONICAL.encode(value)


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over the canonical form of an event's fields (which include ``prev_hash``)."""
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def _hashed_fields(row: Any) -> dict[str, Any]:
    return {
        "seq": int(row.seq),
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "roles": row.roles,
        "action": row.action,
        "entity_kind": row.entity_kind,
        "entity_id": row.entity_id,
        "project": row.project,
        "before": row.before,
        "after": row.after,
        "prev_hash": row.prev_hash,
    }


class AuditSigner:
    """Signs chain heads with an Ed25519 key kept outside the database.

    The key is created on first use (mode 0600) at ``settings.audit_key_path``; the public key
    sits beside it as ``.pub`` so auditors can verify without the private key.
    """

    def __init__(self, key_path: Path, witness_path: Path) -> None:
        self.key_path = key_path
        self.pub_path = key_path.with_suffix(".pub")
        self.witness_path = witness_path
        self._key: Ed25519PrivateKey | None = None

    # Keys -----------------------------------------------------------------------------------
    def private_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = _KEY_CACHE.get(self.key_path)
            if self._key is None or not self.key_path.is_file():
                self._key = _KEY_CACHE[self.key_path] = self._load_or_create()
        return self._key

    def public_key(self) -> Ed25519PublicKey:
        if self.pub_path.is_file():
            return _load_public(self.pub_path.read_bytes())
        if self.key_path.is_file():
            return self.private_key().public_key()
        raise ConfigurationError(
            f"No audit signing key at {self.key_path}.",
            hint="Point CIVICML_AUDIT_KEY at the key this installation signs with.",
        )

    def has_key(self) -> bool:
        """Whether this installation holds the audit key (or its public half) at all."""
        return self.pub_path.is_file() or self.key_path.is_file()

    def public_key_hex(self) -> str:
        raw = self.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return raw.hex()

    def _load_or_create(self) -> Ed25519PrivateKey:
        if not self.key_path.is_file():
            self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Write the key in full to a temp file, then link it into place: a reader never sees
            # a half-written key, and if two processes race the first link wins.
            tmp = self.key_path.with_name(
                f".{self.key_path.name}.{os.getpid()}.{threading.get_ident()}.part"
            )
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.key_path)
            except FileExistsError:
                pass  # another process won the race; load its key below
            else:
                pub = key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                _atomic_write(self.pub_path, pub)
                return key
            finally:
                tmp.unlink(missing_ok=True)
        loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ConfigurationError(
                f"The audit key at {self.key_path} is not an Ed25519 private key.",
                hint="Move it away; civicml creates a new key on first use.",
            )
        if not self.pub_path.is_file():
            _atomic_write(
                self.pub_path,
                loaded.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
        return loaded

    # Heads ----------------------------------------------------------------------------------
    def sign(self, seq: int, head_hash: str, signed_at: str) -> SignedHead:
        key = self.private_key()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return SignedHead(
            seq=seq,
            hash=head_hash,
            signed_at=signed_at,
            public_key=public.hex(),
            signature=key.sign(_head_message(seq, head_hash, signed_at)).hex(),
        )

    def check(self, head: SignedHead) -> bool:
        try:
            self.public_key().verify(
                bytes.fromhex(head.signature), _head_message(head.seq, head.hash, head.signed_at)
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def read_witness(self) -> SignedHead | None:
        """The latest signed head, or None when there is none yet.

        Raises:
            ConfigurationError: The witness file exists but cannot be read as a signed head.
        """
        if not self.witness_path.is_file():
            return None
        try:
            return SignedHead.model_validate_json(self.witness_path.read_bytes())
        except (ValueError, OSError) as err:
            raise ConfigurationError(
                "The audit witness (audit/witness.json in the civicml home) is unreadable or "
                "was altered.",
                hint="Restore it from a backup or an export; until then the chain head cannot "
                "be vouched for.",
            ) from err

    def advance_witness(
        self,
        seq: int,
        head_hash: str,
        signed_at: str,
        hash_at: Callable[[int], str | None] | None = None,
    ) -> None:
        """Sign and record a newer head.

        The witness never moves backwards, and it only moves forward while the chain still holds
        the witnessed event unchanged (``hash_at(witness.seq)``): otherwise the next honest write
        would re-sign a truncated or recomputed chain and launder the tampering.
        """
        self.witness_path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.witness_path.with_suffix(".lock")):
            try:
                current = self.read_witness()
            except ConfigurationError:
                log.error("audit witness %s is unreadable; not replacing it", self.witness_path)
                return
            if current is not None and current.seq >= seq:
                return
            if (
                current is not None
                and hash_at is not None
                and (hash_at(current.seq) != current.hash or not self.check(current))
            ):
                log.error(
                    "the audit chain no longer extends the signed head at event %d; the witness "
                    "is kept so that 'civicml audit verify' reports it",
                    current.seq,
                )
                return
            head = self.sign(seq, head_hash, signed_at)
            # No directory fsync: if a crash loses the rename, the older witness is still a
            # valid signed prefix of the chain, and verify still holds.
            _atomic_write(self.witness_path, head.model_dump_json().encode(), sync_dir=False)


class AuditTrail:
    """Appends to, reads, verifies and exports the audit chain."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.signer = AuditSigner(ctx.settings.audit_key_path, ctx.settings.witness_path)
        self._shared = ctx.settings.audit_witness == "database"
        self._interval_s = ctx.settings.audit_witness_interval_ms / 1000

    def flush(self) -> None:
        """Sign the newest head this process committed but has not signed yet (a no-op when
        nothing is pending). Reading the witness, verify and export call it first."""
        batch = _BATCHES.get(self.signer.witness_path)
        if batch is not None:
            batch.flush()

    def record(
        self,
        uow: UnitOfWork,
        action: str,
        entity_kind: str,
        entity_id: str,
        *,
        project: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> str:
        """Append one event inside ``uow``; returns its id. The head is signed after commit.

        Raises:
            ServiceUnavailableError: The audit tables are damaged (nothing is changed).
        """
        # What _readable does, without a context manager: every state change passes here.
        try:
            return self._record(uow, action, entity_kind, entity_id, project, before, after)
        except Exception as err:
            replacement = _unreadable(err, "recorded")
            if replacement is err:
                raise
            raise replacement from err

    def _record(
        self,
        uow: UnitOfWork,
        action: str,
        entity_kind: str,
        entity_id: str,
        project: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> str:
        # The head is read once per transaction (locked on PostgreSQL until the commit) and
        # written once, just before the commit, whatever the number of events in between.
        # Plain DB-API statements: every state change passes here, and SQLAlchemy's work per
        # statement cost more than the database's.
        cursor, mark = uow.driver_cursor()
        known: tuple[int, str] | None = uow.memo.get(_MEMO_KEY)
        if known is None:
            lock = " FOR UPDATE" if uow.conn.dialect.name == "postgresql" else ""
            cursor.execute(f"SELECT seq, hash FROM audit_head WHERE id = {mark}{lock}", (_HEAD_ID,))
            head = cursor.fetchone()
            if head is None:
                raise ConfigurationError(
                    "The audit chain head row is missing: the audit_head table was emptied.",
                    hint="Run 'civicml audit verify'; restore the database from a backup.",
                )
            known = (int(head[0]), head[1])
        seq, prev = known[0] + 1, known[1]
        principal = self._ctx.principal
        fields: dict[str, Any] = {
            "seq": seq,
            "id": new_id(),
            "at": _iso(self._ctx.clock.now()),
            "actor": principal.user,
            "roles": ",".join(sorted(principal.roles)),
            "action": action,
            "entity_kind": entity_kind,
            "entity_id": entity_id,
            "project": project,
            "before": None if before is None else canonical_json(before),
            "after": None if after is None else canonical_json(after),
            "prev_hash": prev,
        }
        digest = event_hash(fields)
        fields["hash"] = digest
        cursor.execute(_insert_event_sql(mark), _ROW(fields))
        uow.memo[_MEMO_KEY] = (seq, digest)
        uow.before_commit(_MEMO_KEY, lambda: _write_head(uow))
        # Only the last head of a transaction needs signing: the key replaces earlier callbacks.
        # Only a durable one: a head signed but then undone by a power cut would read as a
        # truncated chain. The next durable commit's head covers this one.
        if uow.durable:
            uow.after_commit("audit-witness", lambda: self._committed(seq, digest))
        return str(fields["id"])

    def _committed(self, seq: int, digest: str) -> None:
        """After commit: sign the new head now, or (``audit_witness_interval_ms`` > 0) within
        that interval, once for the newest head of every commit in between."""
        if self._interval_s <= 0:
            self._advance(seq, digest)
            return
        path = self.signer.witness_path
        with _BATCHES_LOCKS[0]:
            batch = _BATCHES.get(path)
            if batch is None:
                batch = _BATCHES[path] = _WitnessBatch(self._interval_s)
        self._ctx.db.before_close("audit-witness", batch.flush)
        batch.submit(seq, lambda: self._advance_later(seq, digest))

    def _advance_later(self, seq: int, digest: str) -> None:
        if self._ctx.db.closed or not self._ctx.settings.home.is_dir():
            # Closed (it signed what it had then) or removed (a temporary home) meanwhile: the
            # next write signs a head covering this one, as after a killed writer.
            return
        self._advance(seq, digest)

    def _advance(self, seq: int, digest: str) -> None:
        self.signer.advance_witness(seq, digest, _iso(self._ctx.clock.now()), self._hash_at)
        if self._shared:
            self._advance_database(seq, digest)

    def _advance_database(self, seq: int, digest: str) -> None:
        """Store a signed head row for ``seq``, under the same rules as the witness file: never
        backwards, and only while the chain still holds the newest signed head unchanged.

        Servers sharing the database and the key may both get here at once: each signs its own
        commit's seq (unique), and a row for a lower seq than the newest is simply not written.
        """
        try:
            mine = self.signer.public_key_hex()
            with self._ctx.db.engine.begin() as conn:
                latest = _latest_signed_head(conn, mine)
                if latest is not None:
                    if latest.seq >= seq:
                        return
                    held = conn.execute(
                        select(audit_events.c.hash).where(audit_events.c.seq == latest.seq)
                    ).scalar()
                    if held != latest.hash or not self.signer.check(latest):
                        log.error(
                            "the audit chain no longer extends the signed head at event %d in "
                            "the database; it is kept so that 'civicml audit verify' reports it",
                            latest.seq,
                        )
                        return
                head = self.signer.sign(seq, digest, _iso(self._ctx.clock.now()))
                conn.execute(insert(audit_signed_heads).values(**head.model_dump()))
        except DBAPIError as err:  # after commit: the chain holds; the next commit signs again
            log.error("the signed audit head could not be stored: %s", _kind(err))
        except ConfigurationError as err:
            log.error("the audit head could not be signed: %s", err.message)

    def _database_witness(self) -> SignedHead | None:
        """The newest signed head in the database made with this installation's key (None when
        the database holds none, or this home has no key to check one with)."""
        if not self._shared or not self.signer.has_key():
            return None
        mine = self.signer.public_key_hex()
        with self._ctx.db.read() as conn:
            return _latest_signed_head(conn, mine)

    def _hash_at(self, seq: int) -> str | None:
        try:
            with self._ctx.db.read() as conn:
                found = conn.execute(
                    select(audit_events.c.hash).where(audit_events.c.seq == seq)
                ).scalar()
        except DBAPIError as err:  # after commit: keep the witness; verify reports the damage
            log.error("the audit trail could not be read to advance its witness: %s", _kind(err))
            return None
        return None if found is None else str(found)

    # Reading --------------------------------------------------------------------------------
    def list(
        self,
        *,
        project: str | None = None,
        entity_kind: str | None = None,
        entity_id: str | None = None,
        action: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Events in chain order, filtered; ``project`` matches regardless of letter case.

        Raises:
            ServiceUnavailableError: The audit tables are damaged and cannot be read.
        """
        query = select(audit_events).where(audit_events.c.seq > after_seq)
        access = Access(self._ctx)
        if project is not None:
            query = query.where(func.lower(audit_events.c.project) == name_key(project))
        if not access.may("audit.verify"):  # not a platform auditor: its projects' events only
            readable = self._readable_projects(access, project)
            query = query.where(func.lower(audit_events.c.project).in_(readable))
        if entity_kind is not None:
            query = query.where(audit_events.c.entity_kind == entity_kind)
        if entity_id is not None:
            query = query.where(audit_events.c.entity_id == entity_id)
        if action is not None:
            query = query.where(audit_events.c.action == action)
        query = query.order_by(audit_events.c.seq).limit(max(1, min(limit, 10_000)))
        with _readable("listed"), self._ctx.db.read() as conn:
            return [_to_event(row) for row in conn.execute(query)]

    def _readable_projects(self, access: Access, project: str | None) -> builtins.list[str]:
        """Lower-case names of the projects whose events the caller may read (``audit.read``).

        Raises:
            NotFoundError: ``project`` is named and the caller may not see it.
            PermissionDeniedError: It may see ``project`` but not read its audit events.
        """
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(projects.c.id, projects.c.name)).all()
        if project is not None:
            row = next((r for r in rows if r.name.lower() == name_key(project)), None)
            if row is None:
                raise project_missing(project, access.visible_names(), False)
            access.require(row.id, row.name, "audit.read")
            return [row.name.lower()]
        return [r.name.lower() for r in rows if access.allows(r.id, r.name, "audit.read")]

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[tuple[Any, Iterator[Any]]]:
        """The head row and every event, read from ONE snapshot (REPEATABLE READ on PostgreSQL;
        a read transaction is a snapshot on SQLite in WAL mode), so that appends committing
        meanwhile are not mistaken for tampering. The row cursor is closed on exit."""
        with self._ctx.db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                head = conn.execute(select(audit_head).where(audit_head.c.id == _HEAD_ID)).first()
                query = select(audit_events).order_by(audit_events.c.seq)
                with conn.execution_options(yield_per=2000).execute(query) as result:
                    yield head, iter(result)

    # Verification ---------------------------------------------------------------------------
    def verify(self) -> AuditReport:
        """Check the chain row by row, the head row, and the signed witness outside the DB.

        Events whose timestamps go backwards are reported as ``warnings`` (verification still
        passes). Without a witness in this home the verdict is ``unwitnessed``: not a tamper
        verdict, but truncation cannot be ruled out, so ``ok`` is False.

        Raises:
            ServiceUnavailableError: The audit tables are damaged and cannot be read (the
                message says so; verification has failed).
        """
        Access(self._ctx).require_platform("audit.verify")
        self.flush()  # what this process committed is signed before it is checked
        # The witness first: it only moves after a commit, so all it covers is in the snapshot.
        try:
            witness, witness_error = self.signer.read_witness(), None
        except ConfigurationError as err:
            witness, witness_error = None, err.message
        with _readable("verified"):
            stored = self._database_witness()
        warnings: list[AuditWarning] = []
        with _readable("verified"), self._snapshot() as (head, rows):
            checked, problem, last_seq, last_hash, by_seq = _walk(rows, warnings)
        problems = [problem] if problem else []
        if (
            not problems
            and head is not None
            and (int(head.seq), head.hash) != (last_seq, last_hash)
        ):
            if int(head.seq) > last_seq:
                reason = (
                    f"the chain ends at event {last_seq} but the recorded head is event "
                    f"{int(head.seq)}: events {last_seq + 1} to {int(head.seq)} were deleted"
                )
                problems.append(AuditProblem(seq=last_seq + 1, reason=reason))
            else:
                reason = (
                    f"the recorded chain head (event {int(head.seq)}) does not match the "
                    f"chain, which ends at event {last_seq}: the head row was altered"
                )
                problems.append(AuditProblem(seq=int(head.seq), reason=reason))
        unwitnessed = False
        if witness_error is not None:
            problems.append(AuditProblem(seq=last_seq, reason=witness_error))
        elif witness is None and stored is None and checked and not problems:
            unwitnessed = True
            problems.append(_no_witness(self.signer, last_seq))
        else:
            if witness is not None or stored is None:
                problems += _check_witness(self.signer, witness, checked, last_seq, by_seq)
            if stored is not None and not problems:
                problems += _check_witness(
                    self.signer, stored, checked, last_seq, by_seq, "signed head row"
                )
        newest = max(
            (h for h in (witness, stored) if h is not None), key=lambda h: h.seq, default=None
        )
        if newest is not None and not problems and newest.seq < last_seq:
            warnings.append(_unsigned_tail(newest.seq, last_seq, self._interval_s))
        return AuditReport(
            ok=not problems,
            verdict="unwitnessed" if unwitnessed else ("failed" if problems else "verified"),
            events_checked=checked,
            head_seq=last_seq,
            head_hash=last_hash,
            witness=newest,
            problems=problems,
            warnings=_capped(warnings),
        )

    # Export ---------------------------------------------------------------------------------
    def export(self, path: Path) -> int:
        """Write every event and the signed heads as JSON Lines; returns the event count.

        Each event's ``before`` and ``after`` are JSON objects (format ``civicml-audit/2``).

        Raises:
            ServiceUnavailableError: The audit tables are damaged and cannot be read.
        """
        Access(self._ctx).require_platform("audit.verify")
        self.flush()
        self.signer.private_key()  # an empty trail still exports its (new) public key
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        count, last_seq, last_hash = 0, 0, GENESIS
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(
                canonical_json(
                    {
                        "type": "header",
                        "format": EXPORT_FORMAT,
                        "public_key": self.signer.public_key_hex(),
                        "exported_at": _iso(self._ctx.clock.now()),
                    }
                )
                + "\n"
            )
            with _readable("exported"), self._snapshot() as (_head, rows):
                for row in rows:
                    record = {"type": "event", **_exported_fields(row), "hash": row.hash}
                    out.write(canonical_json(record) + "\n")
                    count, last_seq, last_hash = count + 1, int(row.seq), row.hash
            witness = self.signer.read_witness()
            with _readable("exported"):
                stored = self._database_witness()
            if stored is not None and (witness is None or stored.seq > witness.seq):
                witness = stored
            if witness is not None:
                out.write(canonical_json({"type": "witness", **witness.model_dump()}) + "\n")
            if count:
                head = self.signer.sign(last_seq, last_hash, _iso(self._ctx.clock.now()))
                out.write(canonical_json({"type": "signed_head", **head.model_dump()}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return count


def verify_export(path: Path, signer: AuditSigner | None = None) -> AuditReport:
    """Verify an export file offline: the chain, and the signed heads it carries.

    With ``signer`` the heads must be signed by that installation's key; otherwise by the public
    key in the export's header (which proves internal consistency only).
    """
    rows: list[Any] = []
    heads: list[SignedHead] = []
    public_key: str | None = None
    problems_early: list[AuditProblem] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigurationError(f"{path}: line {number} is not JSON ({err}).") from err
            if not isinstance(record, dict):
                raise ConfigurationError(f"{path}: line {number} is not a JSON object.")
            kind = record.pop("type", None)
            if kind == "header":
                public_key = record.get("public_key")
            elif kind == "event":
                missing = _EVENT_FIELDS - record.keys()
                if missing:
                    seq = record.get("seq", "?")
                    problems_early.append(
                        AuditProblem(
                            seq=seq if isinstance(seq, int) else 0,
                            event_id=record.get("id")
                            if isinstance(record.get("id"), str)
                            else None,
                            reason=f"event on line {number} is malformed: it lacks "
                            f"{', '.join(sorted(missing))}",
                        )
                    )
                    break
                rows.append(_Row(_hashed_text(record)))
            elif kind in ("witness", "signed_head"):
                try:
                    heads.append(SignedHead.model_validate(record))
                except ValueError as err:
                    raise ConfigurationError(
                        f"{path}: line {number} is not a valid signed head ({err})."
                    ) from err
    warnings: list[AuditWarning] = []
    checked, problem, last_seq, last_hash, by_seq = _walk(iter(rows), warnings)
    problems = [problem] if problem else problems_early
    key_hex = signer.public_key_hex() if signer is not None else public_key
    for head in heads:
        if key_hex is None or not _signature_ok(key_hex, head):
            problems.append(
                AuditProblem(
                    seq=head.seq, reason="a signed head in the export has an invalid signature"
                )
            )
    if not heads and checked:
        problems.append(AuditProblem(seq=last_seq, reason="the export carries no signed head"))
    for head in heads:
        problems += _check_witness(None, head, checked, last_seq, by_seq)
    return AuditReport(
        ok=not problems,
        verdict="failed" if problems else "verified",
        events_checked=checked,
        head_seq=last_seq,
        head_hash=last_hash,
        witness=heads[-1] if heads else None,
        problems=problems,
        warnings=_capped(warnings),
    )


def _write_head(uow: UnitOfWork) -> None:
    """Store the newest head of the transaction's events (its last step before the commit)."""
    seq, digest = uow.memo[_MEMO_KEY]
    cursor, mark = uow.driver_cursor()
    cursor.execute(
        f"UPDATE audit_head SET seq = {mark}, hash = {mark} WHERE id = {mark}",
        (seq, digest, _HEAD_ID),
    )


_COLUMNS = (
    "seq",
    "id",
    "at",
    "actor",
    "roles",
    "action",
    "entity_kind",
    "entity_id",
    "project",
    "before",
    "after",
    "prev_hash",
    "hash",
)


_ROW = operator.itemgetter(*_COLUMNS)  # an event's fields as a row of _COLUMNS


@functools.cache
def _insert_event_sql(mark: str) -> str:
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    return f"INSERT INTO audit_events ({names}) VALUES ({', '.join([mark] * len(_COLUMNS))})"


_EVENT_FIELDS = frozenset(
    {
        "seq",
        "id",
        "at",
        "actor",
        "roles",
        "action",
        "entity_kind",
        "entity_id",
        "project",
        "before",
        "after",
        "prev_hash",
        "hash",
    }
)


class _Row:
    def __init__(self, record: dict[str, Any]) -> None:
        self.__dict__.update(record)


def _walk(
    rows: Iterator[Any], warnings: list[AuditWarning]
) -> tuple[int, AuditProblem | None, int, str, dict[int, str]]:
    """Walk the chain; return (checked, first problem, last seq, last hash, seq->hash).

    Events timestamped earlier than the latest event before them are added to ``warnings``.
    """
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    by_seq: dict[int, str] = {}
    latest: tuple[datetime, int, str] | None = None  # (time, seq, at) of the latest so far
    for row in rows:
        seq = int(row.seq)
        if seq != expected_seq:
            reason = (
                f"event {expected_seq} is missing (deleted)"
                if seq > expected_seq
                else f"event {seq} appears out of order"
            )
            return (
                checked,
                AuditProblem(seq=expected_seq, event_id=None, reason=reason),
                expected_seq - 1,
                expected_prev,
                by_seq,
            )
        if row.prev_hash != expected_prev:
            return (
                checked,
                AuditProblem(
                    seq=seq,
                    event_id=row.id,
                    reason=(
                        f"event {seq} does not follow event {seq - 1}: the chain was reordered, "
                        "or an "
                        "event before it was deleted or replaced"
                    ),
                ),
                seq - 1,
                expected_prev,
                by_seq,
            )
        if event_hash(_hashed_fields(row)) != row.hash:
            return (
                checked,
                AuditProblem(
                    seq=seq,
                    event_id=row.id,
                    reason=(
                        f"event {seq} ({row.action} on {row.entity_kind} {row.entity_id}) "
                        "was edited: "
                        "its content no longer matches its hash"
                    ),
                ),
                seq - 1,
                expected_prev,
                by_seq,
            )
        checked += 1
        by_seq[seq] = row.hash
        expected_prev, expected_seq = row.hash, seq + 1
        latest = _check_clock(row, latest, warnings)
    return checked, None, expected_seq - 1, expected_prev, by_seq


def _check_witness(
    signer: AuditSigner | None,
    witness: SignedHead | None,
    checked: int,
    last_seq: int,
    by_seq: dict[int, str],
    what: str = "witness file",
) -> list[AuditProblem]:
    if witness is None:
        return [_no_witness(signer, last_seq)] if checked and signer is not None else []
    if signer is not None and not signer.check(witness):
        return [
            AuditProblem(
                seq=witness.seq,
                reason="the signed head's signature is invalid "
                f"(the {what} was altered or signed by another key)",
            )
        ]
    if witness.seq > last_seq:
        return [
            AuditProblem(
                seq=last_seq + 1,
                reason=(
                    f"the signed head covers {witness.seq} events but the chain holds "
                    f"only {last_seq}: "
                    "the tail was truncated"
                ),
            )
        ]
    if by_seq.get(witness.seq) != witness.hash:
        return [
            AuditProblem(
                seq=witness.seq,
                reason=(
                    f"event {witness.seq} differs from the signed head: the chain was "
                    "rewritten and its "
                    "hashes recomputed"
                ),
            )
        ]
    return []


def _unsigned_tail(signed: int, last_seq: int, interval_s: float) -> AuditWarning:
    """The events after the newest signed head: committed by a process that has not signed them
    yet (it signs within ``audit_witness_interval_ms``) or that stopped before it did (the next
    write signs them). They link to the signed head, but their truncation is not yet ruled out."""
    count = last_seq - signed
    return AuditWarning(
        kind="unsigned_tail",
        seq=signed + 1,
        message=f"{count} event{'s' if count != 1 else ''} after the signed head at event "
        f"{signed} {'are' if count != 1 else 'is'} not signed yet: a writer signs its newest head "
        f"within {interval_s * 1000:g} ms of committing, and the next write signs what a stopped "
        "writer left; until then their truncation could not be detected.",
    )


class _WitnessBatch:
    """Group commit for the witness: of the heads committed within ``interval_s``, only the
    newest is signed, once — the chain links every earlier event to it.

    ``submit`` after each commit sets the time the pending head is due, and one long-lived
    thread signs it then (a thread per interval cost a thread start, and waiting for it, on the
    path of a commit); ``flush`` signs at once (before verify and export, and at interpreter
    exit). A process killed in between leaves the newest events unsigned: ``verify`` reports
    them as an unsigned tail, and the next write (from any process) signs a head that covers
    them.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushing = threading.Lock()
        self._pending: tuple[int, Callable[[], None]] | None = None
        self._due: float | None = None  # when the pending head is signed (monotonic)
        self._idle = False  # the thread waits for a submit (it needs waking)
        self._thread: threading.Thread | None = None

    def submit(self, seq: int, advance: Callable[[], None]) -> None:
        with self._lock:
            if self._pending is None or seq > self._pending[0]:
                self._pending = (seq, advance)
            if self._due is None:
                self._due = time.monotonic() + self._interval_s
                if self._thread is None or not self._thread.is_alive():
                    self._idle = False
                    self._thread = threading.Thread(
                        target=self._run, name="civicml-audit-witness", daemon=True
                    )
                    self._thread.start()
                elif self._idle:
                    self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._due is None:
                        self._idle = True
                        try:
                            self._wake.wait(_WITNESS_IDLE_EXIT_S)
                        finally:
                            self._idle = False
                        if self._due is None:  # idle a while: end (submit starts another)
                            self._thread = None
                            return
                        continue
                    remaining = self._due - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                self._due = None
            self.flush()

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is None:
                return
            try:
                pending[1]()
            except Exception:  # after commit, off the caller's thread: the next head covers it
                log.exception("the audit head could not be signed")

    def reset(self) -> None:
        """In a forked child: nothing of the parent's is pending here, its locks are new and
        its thread is not running."""
        self.__init__(self._interval_s)  # type: ignore[misc]


def flush_witnesses() -> None:
    """Sign every head this process committed and has not signed yet."""
    with _BATCHES_LOCKS[0]:
        batches = list(_BATCHES.values())
    for batch in batches:
        batch.flush()


def _after_fork() -> None:
    _BATCHES_LOCKS[0] = threading.Lock()
    for batch in _BATCHES.values():
        batch.reset()


atexit.register(flush_witnesses)
os.register_at_fork(after_in_child=_after_fork)


def _no_witness(signer: AuditSigner, last_seq: int) -> AuditProblem:
    """Why a chain without a witness in this home is not vouched for, and what to do (no server
    path: the message reaches REST clients)."""
    return AuditProblem(
        seq=last_seq,
        reason=(
            "UNVERIFIED, not a tamper verdict: this civicml home holds no witness (signed chain "
            f"head) for the audit chain, so a truncated tail or a recomputed chain cannot be "
            f"ruled out; the chain's {last_seq} events do link correctly. The witness is kept "
            "by the home whose server or client wrote the events (a second home pointed at the "
            "same database has none). Verify from that home, or copy its audit/witness.json and "
            f"keys/{signer.pub_path.name} into this home; if this home wrote the events, its "
            "witness file was removed. Servers sharing one database can share the witness "
            "instead: the same audit key in keys_dir and audit_witness = 'database' on each"
        ),
    )


def _check_clock(
    row: Any, latest: tuple[datetime, int, str] | None, warnings: list[AuditWarning]
) -> tuple[datetime, int, str] | None:
    """Warn when ``row`` is timestamped before the latest event so far; the new latest."""
    try:
        moment = datetime.fromisoformat(str(row.at))
    except ValueError:
        return latest  # the hash still covers it; nothing to compare
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if latest is None or moment >= latest[0]:
        return (moment, int(row.seq), str(row.at))
    warnings.append(
        AuditWarning(
            kind="clock_went_backwards",
            seq=int(row.seq),
            event_id=row.id,
            message=(
                f"event {int(row.seq)} (id {row.id}) is timestamped {row.at}, "
                f"{_duration(latest[0] - moment)} before event {latest[1]} ({latest[2]}) "
                "earlier in the chain: the clock of the process that wrote it may be wrong"
            ),
        )
    )
    return latest


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _capped(warnings: list[AuditWarning]) -> list[AuditWarning]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    more = len(warnings) - MAX_WARNINGS
    return [
        *warnings[:MAX_WARNINGS],
        AuditWarning(
            kind="more_warnings",
            seq=0,
            message=f"{more} more warning(s) of the same kind were left out",
        ),
    ]


def _exported_fields(row: Any) -> dict[str, Any]:
    """The hashed fields with ``before``/``after`` as JSON objects, where that object's
    canonical form is exactly the hashed text (else the text itself, as in format 1)."""
    fields = _hashed_fields(row)
    for key in ("before", "after"):
        text = fields[key]
        if text is not None:
            value = json.loads(text)
            if canonical_json(value) == text:
                fields[key] = value
    return fields


def _hashed_text(record: dict[str, Any]) -> dict[str, Any]:
    """An exported event with ``before``/``after`` back as the canonical text that was hashed
    (format 2 exports objects; format 1 exported the text itself)."""
    for key in ("before", "after"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            record[key] = canonical_json(value)
    return record


def _damage(err: BaseException) -> str | None:
    """What the driver says is damaged, when ``err`` is damage rather than a bug."""
    message = _kind(err)
    orig = driver_error(err)
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    if any(marker in message.lower() for marker in _SQLITE_DAMAGE):
        return f"SQLite: {message}"
    if state[:2] in _PG_DAMAGE_CLASSES:
        return f"PostgreSQL SQLSTATE {state}"
    return None


def _kind(err: BaseException) -> str:
    """The driver's first line (SQLite's messages name no path or value)."""
    orig = driver_error(err) or err
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


@contextlib.contextmanager
def _readable(what: str) -> Iterator[None]:
    """Turn a damaged audit table into a 503 that says so, instead of a bug (500).

    A lock held too long, a full disk and the like become their own 503/507
    (:func:`civicml.store.faults.database_fault`); other database errors propagate as bugs.
    """
    try:
        yield
    except Exception as err:  # SQLAlchemy's errors, and a driver's from a DB-API cursor
        replacement = _unreadable(err, what)
        if replacement is err:
            raise
        raise replacement from err


def _unreadable(err: Exception, what: str) -> Exception:
    """The error :func:`_readable` raises for ``err`` (raised ``from err``): the database's
    fault, or a damaged audit table's 503; ``err`` itself (re-raised as it is) otherwise."""
    if driver_error(err) is None:
        return err
    fault = database_fault(err)
    if fault is not None:
        return fault
    damage = _damage(err)
    if damage is None:
        return err
    log.error("the audit trail could not be %s: the database is damaged (%s)", what, damage)
    return ServiceUnavailableError(
        f"The audit trail could not be {what}: the metadata database is damaged ({damage}). "
        "Verification fails until it is repaired.",
        hint="Stop writers, restore the database from a backup (SQLite: 'PRAGMA "
        "integrity_check' names the damage; '.recover' salvages rows), then run 'civicml "
        "audit verify'. An earlier 'civicml audit export' file still verifies with "
        "'civicml audit verify --file'.",
        retry_after=60,
    )


def _latest_signed_head(conn: Any, public_key: str) -> SignedHead | None:
    row = conn.execute(
        select(audit_signed_heads)
        .where(audit_signed_heads.c.public_key == public_key)
        .order_by(audit_signed_heads.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return SignedHead(
        seq=int(row.seq),
        hash=row.hash,
        signed_at=row.signed_at,
        public_key=row.public_key,
        signature=row.signature,
    )


def _signature_ok(public_key_hex: str, head: SignedHead) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(
            bytes.fromhex(head.signature), _head_message(head.seq, head.hash, head.signed_at)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=int(row.seq),
        id=row.id,
        at=row.at,
        actor=row.actor,
        roles=[r for r in row.roles.split(",") if r],
        action=row.action,
        entity_kind=row.entity_kind,
        entity_id=row.entity_id,
        project=row.project,
        before=None if row.before is None else json.loads(row.before),
        after=None if row.after is None else json.loads(row.after),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _head_message(seq: int, head_hash: str, signed_at: str) -> bytes:
    return f"civicml-audit-head\n{seq}\n{head_hash}\n{signed_at}".encode()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _load_public(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("The audit public key is not an Ed25519 key.")
    return key


def _atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_directory(path.parent)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
