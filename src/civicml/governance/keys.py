"""Administration of the key-encryption keys that protect the artifact store at rest.

The same operations as ``civicml keys`` (list, rotate, retire, encrypt what was stored in
plaintext), for a platform admin (``keys.admin``) through the SDK, the CLI and the REST API
alike, each change recorded in the audit trail (``keys.rotated``, ``keys.retired``,
``artifacts.encrypted``) with key ids and counts — never key material. The store does the work
(:class:`civicml.store.artifacts.LocalArtifactStore`); the audit event is written once it is done,
so a rotation that fails half-way leaves data readable (each data key is re-wrapped atomically)
and no event claiming it finished.
"""

from __future__ import annotations

from civicml.governance.access import Access
from civicml.governance.audit import AuditTrail
from civicml.governance.schemas import KeyReport, KeyRotation, KeyUsage
from civicml.store.context import Context

__all__ = ["KeyService"]


class KeyService:
    """The artifact store's keys, for ``ctx.principal`` (who needs ``keys.admin``)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._access = Access(ctx)

    def report(self) -> KeyReport:
        """Every key with how many artifacts it protects (the first key is made if none is).

        Raises:
            PermissionDeniedError: The caller lacks ``keys.admin``.
        """
        self._access.require_platform("keys.admin")
        found = self._ctx.artifacts.key_report()
        return KeyReport(
            encrypt=found.encrypt,
            keys=[
                KeyUsage(key_id=k.key_id, current=k.current, objects=k.objects) for k in found.keys
            ],
            plaintext_objects=found.plaintext_objects,
            unknown_keys=dict(found.unknown_keys),
        )

    def rotate(self) -> KeyRotation:
        """Make a new key current and re-wrap every artifact's data key under it (the data is
        not rewritten); plaintext artifacts are encrypted too while encryption is on.

        Raises:
            PermissionDeniedError: The caller lacks ``keys.admin``.
        """
        self._access.require_platform("keys.admin")
        done = self._ctx.artifacts.rotate_keys()
        result = KeyRotation(
            key_id=done.key_id,
            previous_key_id=done.previous_key_id,
            rewrapped=done.rewrapped,
            encrypted=done.encrypted,
        )
        self._record("keys.rotated", result.key_id, result.model_dump())
        return result

    def retire(self, key_id: str) -> None:
        """Destroy a key no artifact uses any more.

        Raises:
            PermissionDeniedError: The caller lacks ``keys.admin``.
            NotFoundError: No such key.
            ConflictError: It is current, or artifacts still use it.
        """
        self._access.require_platform("keys.admin")
        self._ctx.artifacts.retire_key(key_id)
        self._record("keys.retired", key_id, {"key_id": key_id})

    def encrypt_existing(self) -> int:
        """Encrypt every artifact still stored in plaintext; returns how many were.

        Raises:
            PermissionDeniedError: The caller lacks ``keys.admin``.
        """
        self._access.require_platform("keys.admin")
        converted = self._ctx.artifacts.encrypt_existing()
        if converted:
            self._record("artifacts.encrypted", "artifact-store", {"encrypted": converted})
        return converted

    def _record(self, action: str, entity: str, after: dict[str, object]) -> None:
        with self._ctx.db.write() as uow:
            self._audit.record(uow, action, "encryption_key", entity, after=after)
