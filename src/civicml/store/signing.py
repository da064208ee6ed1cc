"""The model-signing Ed25519 key (``keys_dir/model-signing-ed25519.pem``) and trusted signers.

One key signs two things: every model version's manifest at registration (see
:func:`version_statement`, verified again at deploy) and exported model packages
(:mod:`civicml.oversight.packages`). The key lives here, below the registry in the import
layers, so registration can sign without importing ``oversight``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from civicml.core.errors import CivicMLError, InvalidInputError
from civicml.core.settings import Settings

__all__ = [
    "KEY_FILE",
    "VERSION_SIGNATURE_FORMAT",
    "PackageSigner",
    "canonical_json",
    "key_id",
    "sign_version",
    "trusted_keys",
    "verification_keys",
    "verify_statement",
    "version_statement",
]

KEY_FILE = "model-signing-ed25519.pem"
#: The ``format`` field of the statement signed at registration.
VERSION_SIGNATURE_FORMAT = "civicml-model-version-signature/1"


def canonical_json(value: Any) -> bytes:
    """The one serialisation that is signed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def key_id(public: Ed25519PublicKey) -> str:
    """A short id of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class PackageSigner:
    """The Ed25519 key that signs exported packages, at ``keys_dir/model-signing-ed25519.pem``."""

    def __init__(self, settings: Settings) -> None:
        self.key_path = settings.keys_root / KEY_FILE
        self.pub_path = self.key_path.with_suffix(".pub")

    def private_key(self) -> Ed25519PrivateKey:
        if not self.key_path.is_file():
            self._create()
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise CivicMLError(
                "The model signing key is not an Ed25519 key.",
                hint=f"Replace {KEY_FILE} in keys_dir with an Ed25519 key, or remove it to have "
                "a new one created.",
            )
        return key

    def _create(self) -> None:
        self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = self.key_path.with_name(f".{self.key_path.name}.{os.getpid()}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, self.key_path)  # the first of two racing processes wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        if not self.pub_path.is_file():
            public = self.private_key().public_key()
            self.pub_path.write_bytes(
                public.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def sign(self, data: bytes) -> dict[str, str]:
        key = self.private_key()
        public = key.public_key()
        return {
            "algorithm": "Ed25519",
            "key_id": key_id(public),
            "public_key": base64.b64encode(_raw(public)).decode("ascii"),
            "signature": base64.b64encode(key.sign(data)).decode("ascii"),
        }


def _load_public(entry: str) -> Ed25519PublicKey:
    path = Path(entry).expanduser()
    text: bytes
    if path.is_file():
        text = path.read_bytes().strip()
    else:
        text = entry.strip().encode("ascii", "replace")
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
            if isinstance(key, Ed25519PublicKey):
                return key
            raise ValueError("not Ed25519")
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as err:
        raise InvalidInputError(
            "An entry of trusted_signers is neither an Ed25519 public key file nor a base64 key.",
            hint="List .pub files (PEM) or base64 raw Ed25519 public keys in trusted_signers.",
        ) from err


def trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The signers whose packages this installation imports, by key id."""
    keys = [_load_public(entry) for entry in settings.trusted_signers]
    return {key_id(k): k for k in keys}


def verification_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The keys whose version signatures deploy accepts: the local key and trusted_signers."""
    keys = trusted_keys(settings)
    signer = PackageSigner(settings)
    if signer.key_path.is_file():
        public = signer.private_key().public_key()
        keys[key_id(public)] = public
    return keys


def version_statement(project: str, model: str, version: int, manifest_digest: str) -> bytes:
    """The exact bytes signed at registration: canonical JSON (sorted keys, no spaces, UTF-8) of
    ``{"format": "civicml-model-version-signature/1", "manifest_digest": <sha256 hex>,
    "model": <name>, "project": <name>, "version": <number>}``."""
    return canonical_json(
        {
            "format": VERSION_SIGNATURE_FORMAT,
            "manifest_digest": manifest_digest,
            "model": model,
            "project": project,
            "version": version,
        }
    )


def verify_statement(settings: Settings, statement: bytes, signature: Any) -> str | None:
    """Check ``signature`` (as stored at registration) over ``statement``.

    Returns ``None`` when it verifies, else a short reason (for the caller's error message).
    """
    if not isinstance(signature, dict) or signature.get("algorithm") != "Ed25519":
        return "the stored signature is not an Ed25519 signature"
    keys = verification_keys(settings)
    key = keys.get(str(signature.get("key_id", "")))
    if key is None:
        return (
            f"it was signed by key {str(signature.get('key_id'))[:16]!r}, which is neither this "
            "installation's model-signing key nor in trusted_signers"
        )
    try:
        key.verify(base64.b64decode(str(signature.get("signature", "")), validate=True), statement)
    except (InvalidSignature, ValueError):
        return (
            "the signature does not match the version's manifest digest, project, name and number"
        )
    return None


def sign_version(
    settings: Settings, project: str, model: str, version: int, manifest_digest: str
) -> dict[str, str]:
    """The signature stored with a model version: algorithm, key id and base64 signature over
    :func:`version_statement` (the public key is not stored: deploy looks the key id up)."""
    signed = PackageSigner(settings).sign(
        version_statement(project, model, version, manifest_digest)
    )
    return {k: signed[k] for k in ("algorithm", "key_id", "signature")}
