"""``ml.keys``: the encryption keys of the artifact store (platform admins; embedded or remote)."""

from __future__ import annotations

from typing import Any

from civicml.governance.schemas import KeyReport, KeyRotation

__all__ = ["KeysHandle"]


class KeysHandle:
    """List, rotate and retire the key-encryption keys; encrypt plaintext artifacts."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def list(self) -> KeyReport:
        """Every key, which is current, and how many artifacts each protects."""
        return self._backend.key_report()  # type: ignore[no-any-return]

    def rotate(self) -> KeyRotation:
        """Make a new key current and re-wrap every artifact's data key under it.

        Example:
            >>> done = ml.keys.rotate()  # doctest: +SKIP
            >>> ml.keys.retire(done.previous_key_id)  # doctest: +SKIP
        """
        return self._backend.rotate_keys()  # type: ignore[no-any-return]

    def retire(self, key_id: str) -> None:
        """Destroy a key no artifact uses any more (refused while one does)."""
        self._backend.retire_key(key_id)

    def encrypt_existing(self) -> int:
        """Encrypt the artifacts stored in plaintext; returns how many were."""
        return int(self._backend.encrypt_existing())
