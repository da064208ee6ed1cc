"""Sealed spool files: the format :class:`civicml.store.crypto.SealedAppender` writes.

A sealed spool file is a header — :data:`SPOOL_MAGIC`, a random file id, the id of the
key-encryption key (KEK) and the file's own data key wrapped by it — followed by frames: each
a 4-byte big-endian length and one AES-256-GCM ciphertext whose nonce is the frame's index (a
fresh key per file: never a nonce twice) and whose associated data is the file id and that
index, so frames cannot be reordered or moved between files. A frame torn by a crash is
dropped on reading (:func:`civicml.store.crypto.read_sealed`).

This module needs only the standard library and ``cryptography``, so the capture spool process
(:mod:`civicml.serving._capture_worker`, which never holds a KEK) loads it by path: its parent
wraps each file's data key (:func:`civicml.store.crypto.new_spool_key`) and hands it the
header and the key; the frames are sealed here.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SPOOL_MAGIC = b"CMLSPOOL1\n"
#: File id, key id length, wrapped key length.
SPOOL_FIXED = struct.Struct(">16sHH")
#: Bound into the wrapping of each spool file's data key (with the file id).
SPOOL_AAD = b"civicml/spool-data-key/v1|"
FRAME = struct.Struct(">I")


def spool_header(file_id: bytes, key_id: str, wrapped: bytes) -> bytes:
    """The header of a sealed spool file whose data key is ``wrapped`` by KEK ``key_id``."""
    kid = key_id.encode()
    return SPOOL_MAGIC + SPOOL_FIXED.pack(file_id, len(kid), len(wrapped)) + kid + wrapped


class FrameSealer:
    """Seals the frames of one spool file, in order.

    Args:
        data_key: The file's own 256-bit data key.
        file_id: The file id in its header.
    """

    def __init__(self, data_key: bytes, file_id: bytes) -> None:
        self._aead = AESGCM(data_key)
        self._file_id = file_id
        self._frames = 0

    def seal(self, data: bytes) -> bytes:
        """The next frame: ``data`` sealed, behind its length."""
        counter = self._frames.to_bytes(12, "big")
        sealed = self._aead.encrypt(counter, data, self._file_id + counter)
        self._frames += 1
        return FRAME.pack(len(sealed)) + sealed
