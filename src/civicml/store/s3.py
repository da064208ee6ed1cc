"""Content-addressed artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, an agency store).

The same guarantees as :class:`~civicml.store.artifacts.LocalArtifactStore`, so Ray workers and
servers on other machines share one store:

* **Content-addressed.** An object lives at ``<prefix>/objects/ab/cd/<sha256 of the plaintext>``;
  callers never choose a key. A put spools to a temp file under :attr:`S3ArtifactStore.scratch_dir`
  while hashing (and encrypting, in the local store's format), so memory stays bounded.
* **Never overwritten.** The upload is conditional (``If-None-Match: *``): a second writer of the
  same digest gets 412 and keeps the object that is there. A store that does not implement
  conditional writes (it answers 501) gets a HEAD before the PUT instead: the same outcome except
  for two writers racing within the same instant, which write the same plaintext anyway.
* **Verified on read.** :meth:`S3ArtifactStore.open` and :meth:`S3ArtifactStore.read_bytes`
  download to an unnamed temp file and re-hash the plaintext before returning anything; a changed
  object raises :class:`~civicml.core.errors.ArtifactIntegrityError`, as the local store does.
* **Keys apart from data.** Key rotation writes ``<digest>.key`` sidecar objects (the local
  store's sidecar format) and never rewrites an object, so ``civicml keys rotate`` works here too.

Credentials come only from boto3's own chain (environment, ``~/.aws``, an instance role); they
are never logged, and no error message carries them. The one call that does rewrite an object is
:meth:`S3ArtifactStore.encrypt_existing`, which replaces a verified plaintext object by its
encrypted form (the local store does the same with a rename).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from civicml.core.errors import (
    ArtifactIntegrityError,
    ConfigurationError,
    InvalidInputError,
    MissingExtraError,
    NotFoundError,
    ServiceUnavailableError,
)
from civicml.core.process import process_alive
from civicml.store.artifacts import (
    _DIGEST,
    BufferReader,
    KeyAdministration,
    KnownDigest,
    Stored,
    _corrupted,
    check_digest,
)
from civicml.store.crypto import (
    MAGIC,
    BlobHeader,
    DecryptingReader,
    KeyProvider,
    encrypt_stream,
    read_header,
)
from civicml.store.faults import translate_storage_errors

if TYPE_CHECKING:
    from civicml.core.settings import Settings

__all__ = ["S3ArtifactStore", "s3_artifact_store"]

_CHUNK = 1 << 20
_KEEP_DECRYPTED = 8 << 20
_HEADER_PROBE = 4096  # bytes fetched to read an object's encryption header
_MAX_SINGLE_PUT = 5 << 30  # S3's limit for one PUT
_RETRY_AFTER_S = 5
log = logging.getLogger("civicml.artifacts")


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as err:
        raise MissingExtraError("The S3 artifact store", "s3", "boto3") from err
    return boto3


def s3_artifact_store(settings: Settings, *, keys: KeyProvider | None) -> S3ArtifactStore:
    """The S3 store that ``settings.artifacts`` (``s3://bucket/prefix``) names."""
    if not settings.artifacts or not settings.artifacts_s3:
        raise ConfigurationError(
            f"Artifact store {settings.artifacts!r} is not an s3:// URL.",
            hint="Write it as s3://bucket/prefix.",
        )
    return S3ArtifactStore(
        settings.artifacts,
        scratch=settings.artifacts_root,
        keys=keys,
        encrypt=settings.encrypt_artifacts,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )


class S3ArtifactStore(KeyAdministration):
    """Artifacts in an S3-compatible bucket: ``s3://bucket/prefix/objects/ab/cd/<sha256>``.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        scratch: A local directory for temp files (uploads being hashed, downloads being
            verified); created when missing. Also :attr:`root`.
        keys: Where key-encryption keys come from, as for the local store.
        encrypt: Write new objects encrypted (default: whenever ``keys`` is given).
        endpoint_url: An S3-compatible endpoint (MinIO, Ceph); default AWS S3.
        region: The bucket's region (default boto3's).
        client: A boto3 S3 client to use instead of building one (tests).

    Raises:
        MissingExtraError: boto3 is not installed.
        ConfigurationError: The bucket cannot be reached, does not exist, or refuses these
            credentials; nothing was written.
    """

    def __init__(
        self,
        url: str,
        *,
        scratch: Path,
        keys: KeyProvider | None = None,
        encrypt: bool | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if not url.startswith("s3://"):
            raise ConfigurationError(
                f"{url!r} is not an s3:// URL.", hint="Write it as s3://bucket/prefix."
            )
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.url = url
        self.bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.keys = keys
        self.encrypt = keys is not None if encrypt is None else encrypt
        if self.encrypt and keys is None:
            raise ConfigurationError(
                "Artifact encryption is on but no key provider is configured.",
                hint="Set keys_dir, or encrypt_artifacts = false.",
            )
        self.root = scratch
        self._tmp = scratch / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._conditional = True  # the server honours If-None-Match until it says otherwise
        boto3 = _boto3()
        import botocore.config
        import botocore.exceptions

        self._botocore = botocore.exceptions
        if client is None:
            options: dict[str, Any] = {
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 60,
            }
            if endpoint_url:
                # S3-compatible stores: path-style addressing, and no default request checksums
                # (older MinIO/Ceph refuse them); every read is verified against its digest.
                options["s3"] = {"addressing_style": "path"}
                options["request_checksum_calculation"] = "when_required"
                options["response_checksum_validation"] = "when_required"
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=botocore.config.Config(**options),
            )
        self._s3 = client
        self._check_bucket()

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def scratch_dir(self) -> Path:
        """A local directory for temporary files (uploads being received)."""
        return self._tmp

    def _key(self, digest: str) -> str:
        return f"{self._prefix}objects/{digest[:2]}/{digest[2:4]}/{digest}"

    # Errors ---------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"bucket {self.bucket!r}" + (
            f" at {self.endpoint_url}" if self.endpoint_url else " (AWS S3)"
        )

    def _check_bucket(self) -> None:
        """Fail at start, with what to fix, when the bucket cannot be used."""
        hint = (
            "Check CIVICML_ARTIFACTS (s3://bucket/prefix), CIVICML_S3_ENDPOINT_URL and the AWS "
            "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws or an instance role)."
        )
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except self._botocore.NoCredentialsError as err:
            raise ConfigurationError(
                f"The S3 artifact store {self._where()} needs credentials, and none were found.",
                hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials.",
            ) from err
        except self._botocore.ClientError as err:
            code = _code(err)
            if code in ("404", "NoSuchBucket", "NotFound"):
                what = "does not exist"
                hint = f"Create the bucket {self.bucket!r}, or correct CIVICML_ARTIFACTS."
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                what = "refuses these credentials"
            else:
                what = f"answered {code}"
            raise ConfigurationError(
                f"The S3 artifact store {self._where()} {what}.", hint=hint
            ) from err
        except self._botocore.BotoCoreError as err:
            raise ConfigurationError(
                f"The S3 artifact store {self._where()} cannot be reached ({type(err).__name__}).",
                hint=hint,
            ) from err

    @contextlib.contextmanager
    def _calls(self) -> Iterator[None]:
        """Turn boto3 failures after start into errors a caller can act on (no secrets)."""
        try:
            yield
        except self._botocore.NoCredentialsError as err:
            raise ConfigurationError(
                "The S3 artifact store has no credentials any more.",
                hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials.",
            ) from err
        except self._botocore.ClientError as err:
            code = _code(err)
            status = _status(err)
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling"):
                raise ServiceUnavailableError(
                    f"The S3 artifact store is unavailable ({code}); nothing was changed.",
                    hint="Try again shortly.",
                    retry_after=_RETRY_AFTER_S,
                ) from err
            raise ConfigurationError(
                f"The S3 artifact store refused a request ({code}).",
                hint="Check that the credentials may read and write the bucket "
                "(s3:GetObject, s3:PutObject, s3:ListBucket).",
            ) from err
        except self._botocore.BotoCoreError as err:
            raise ServiceUnavailableError(
                f"The S3 artifact store cannot be reached ({type(err).__name__}).",
                hint="Try again shortly; check CIVICML_S3_ENDPOINT_URL if it persists.",
                retry_after=_RETRY_AFTER_S,
            ) from err

    # Writes ---------------------------------------------------------------------------------
    def put_bytes(self, data: bytes | memoryview, *, sha256: str | None = None) -> Stored:
        """Store ``data`` (read in place); ``sha256`` as in
        :meth:`civicml.store.artifacts.LocalArtifactStore.put_bytes`."""
        return self._put(
            cast(BinaryIO, BufferReader(data)), None if sha256 is None else check_digest(sha256)
        )

    def put_file(self, path: Path) -> Stored:
        with open(path, "rb") as handle:
            return self.put_stream(handle)

    def put_stream(self, stream: BinaryIO) -> Stored:
        """Store the stream's bytes (once per content); returns their digest and size.

        Raises:
            InsufficientStorageError: The local scratch volume is full (507).
            ServiceUnavailableError: The object store is unreachable (503); nothing was stored.
        """
        return self._put(stream, None)

    def _put(self, stream: BinaryIO, known: str | None) -> Stored:
        hasher: Any = hashlib.sha256() if known is None else KnownDigest(known)
        size = 0
        with translate_storage_errors(), self._temp_file() as (tmp_path, handle):
            if self.encrypt and self.keys is not None:
                for segment in encrypt_stream(stream, handle, self.keys):
                    hasher.update(segment)
                    size += len(segment)
            else:
                while chunk := stream.read(_CHUNK):
                    hasher.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            handle.flush()
            digest: str = hasher.hexdigest()
            if not self.exists(digest):
                self._upload_new(self._key(digest), tmp_path)
        return Stored(digest=digest, size=size)

    def _upload_new(self, key: str, source: Path) -> None:
        """PUT ``source`` at ``key`` unless an object is there already (never replaces one)."""
        length = source.stat().st_size
        if length > _MAX_SINGLE_PUT:
            raise InvalidInputError(
                "The artifact is larger than 5 GiB, the most one S3 upload takes; it was not "
                "stored.",
                hint="Split it into several artifacts, or use a local artifact store.",
            )
        with self._calls():
            while True:
                extra: dict[str, Any] = {"IfNoneMatch": "*"} if self._conditional else {}
                try:
                    with open(source, "rb") as body:
                        self._s3.put_object(
                            Bucket=self.bucket, Key=key, Body=body, ContentLength=length, **extra
                        )
                    return
                except self._botocore.ClientError as err:
                    code, status = _code(err), _status(err)
                    if status == 412 or code == "PreconditionFailed":
                        return  # a writer of the same content got there first
                    if status == 409 and code == "ConditionalRequestConflict":
                        if self._head(key):
                            return
                        continue  # the other writer failed; try again
                    if self._conditional and status == 501:
                        log.info("the S3 store does not honour If-None-Match; using HEAD")
                        self._conditional = False
                        if self._head(key):
                            return
                        continue
                    raise

    def _put_replacing(self, key: str, body: bytes | BinaryIO, length: int) -> None:
        with self._calls():
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=length)

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        tmp_path = self._tmp / f"{os.getpid()}-{os.urandom(8).hex()}.part"
        try:
            with open(tmp_path, "xb") as handle:
                yield tmp_path, handle
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    # Reads ----------------------------------------------------------------------------------
    def _head(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except self._botocore.ClientError as err:
            if _status(err) == 404 or _code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def exists(self, digest: str) -> bool:
        with self._calls():
            return self._head(self._key(check_digest(digest)))

    def delete(self, digest: str) -> bool:
        """Remove an object and its key sidecar (erasure and retention, docs/privacy.md);
        False when it was already gone. The caller has checked no index row names it."""
        key = self._key(check_digest(digest))
        with self._calls():
            found = self._head(key)
            self._s3.delete_object(Bucket=self.bucket, Key=key)
            self._s3.delete_object(Bucket=self.bucket, Key=key + ".key")
        return found

    def _download(self, digest: str) -> BinaryIO:
        """The object's stored bytes in an unnamed temp file, positioned at 0."""
        handle: BinaryIO = tempfile.TemporaryFile(dir=self._tmp)  # closed by the caller
        try:
            with self._calls():
                try:
                    response = self._s3.get_object(Bucket=self.bucket, Key=self._key(digest))
                except self._botocore.ClientError as err:
                    if _code(err) in ("NoSuchKey", "404", "NotFound"):
                        raise NotFoundError(
                            f"Artifact sha256:{digest} is not in the artifact store: its bytes "
                            "are missing.",
                            hint="Restore them from a backup, or check that CIVICML_ARTIFACTS "
                            "points at the store this metadata database uses.",
                        ) from err
                    raise
                with translate_storage_errors():
                    for chunk in response["Body"].iter_chunks(_CHUNK):
                        handle.write(chunk)
                    handle.flush()
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return handle

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as handle:
            return handle.read()

    def open(self, digest: str) -> BinaryIO:
        """Download an object and check its whole content against the digest.

        The handle is seekable; an encrypted object is decrypted segment by segment as it is
        read, each segment authenticated again.

        Raises:
            NotFoundError: No object has this digest.
            ArtifactIntegrityError: The stored bytes do not match the digest (500).
        """
        digest = check_digest(digest)
        handle = self._download(digest)
        if handle.read(len(MAGIC)) == MAGIC:
            handle.seek(0)
            try:
                return self._open_encrypted(digest, handle)
            except ArtifactIntegrityError:
                handle = self._download(digest)  # a plaintext object that starts so?
                if _file_digest(handle) != digest:
                    handle.close()
                    raise
                handle.seek(0)
                return handle
        if _file_digest(handle) != digest:
            handle.close()
            raise _corrupted(digest)
        handle.seek(0)
        return handle

    def _open_encrypted(self, digest: str, handle: BinaryIO) -> BinaryIO:
        reader = self._decrypting(digest, handle)
        keep = reader.length <= _KEEP_DECRYPTED
        kept = []
        try:
            hasher = hashlib.sha256()
            for index in range(reader.segments):
                plain = reader.segment(index)
                hasher.update(plain)
                if keep:
                    kept.append(plain)
            if hasher.hexdigest() != digest:
                raise _corrupted(digest)
        except BaseException:
            reader.close()
            raise
        if keep:
            reader.close()
            return io.BytesIO(b"".join(kept))
        reader.seek(0)
        return io.BufferedReader(reader, buffer_size=_CHUNK)

    def _decrypting(self, digest: str, handle: BinaryIO) -> DecryptingReader:
        """A plaintext view of an encrypted object (closes ``handle`` when it fails)."""
        bad = _corrupted(digest, log_it=False)
        try:
            header = read_header(handle, bad)
            key_id, wrapped = self._effective_wrapping(digest, header)
            if self.keys is None:
                raise ArtifactIntegrityError(
                    f"Artifact sha256:{digest} is encrypted, and no key provider is configured.",
                    hint="Set keys_dir to the directory that holds the key-encryption keys.",
                )
            try:
                data_key = self.keys.unwrap(key_id, wrapped, header.wrap_aad)
            except ArtifactIntegrityError as err:
                raise ArtifactIntegrityError(
                    f"Artifact sha256:{digest} cannot be decrypted: {err.message}", hint=err.hint
                ) from err
            return DecryptingReader(handle, header, data_key, bad)
        except BaseException as err:
            handle.close()
            if err is bad:
                log.error("artifact sha256:%s failed its integrity check", digest)
            raise

    def copy_to(self, digest: str, target: Path) -> None:
        """Write a verified copy of an object to ``target`` (atomically)."""
        with self.open(digest) as src:
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            with open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)

    # Recovery -------------------------------------------------------------------------------
    def recover(self) -> int:
        """Delete local temp files left by processes that died mid-upload; returns how many.

        Nothing partial is ever visible in the bucket: a PUT either stores the whole object or
        nothing.
        """
        removed = 0
        for tmp in self._tmp.glob("*.part"):
            pid_text = tmp.name.split("-", 1)[0]
            if pid_text.isdigit() and process_alive(int(pid_text)):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        return removed

    # Sidecars (the local store's format, as objects) ----------------------------------------
    def _effective_wrapping(self, digest: str, header: BlobHeader) -> tuple[str, bytes]:
        return self._read_sidecar(digest, header) or (header.key_id, header.wrapped_key)

    def _read_sidecar(self, digest: str, header: BlobHeader) -> tuple[str, bytes] | None:
        with self._calls():
            try:
                response = self._s3.get_object(Bucket=self.bucket, Key=self._key(digest) + ".key")
            except self._botocore.ClientError as err:
                if _code(err) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            raw = response["Body"].read(1 << 16)
        try:
            record = json.loads(raw)
            if record.get("blob") != header.blob_id.hex():
                return None  # left by an object of the same digest that was deleted since
            return str(record["kek"]), base64.b64decode(record["wrapped"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable: the header's own wrapping still applies

    def _write_sidecar(self, digest: str, header: BlobHeader, key_id: str, wrapped: bytes) -> None:
        record = {"v": 1, "blob": header.blob_id.hex(), "kek": key_id}
        record["wrapped"] = base64.b64encode(wrapped).decode("ascii")
        body = json.dumps(record).encode()
        self._put_replacing(self._key(digest) + ".key", body, len(body))

    # Keys -----------------------------------------------------------------------------------
    def _object_keys(self) -> Iterator[str]:
        """The digest of every object in the store (sidecars and strays skipped)."""
        with self._calls():
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self._prefix}objects/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"]).rsplit("/", 1)[-1]
                    if _DIGEST.match(name) and item["Key"] == self._key(name):
                        yield name

    def _header(self, digest: str) -> BlobHeader | None:
        """The encryption header of an object; None for a plaintext one."""
        probe = self._range(digest, _HEADER_PROBE)
        if probe[: len(MAGIC)] != MAGIC:
            return None
        bad = _corrupted(digest, log_it=False)
        try:
            return read_header(io.BytesIO(probe), bad)
        except ArtifactIntegrityError:
            if len(probe) < _HEADER_PROBE:
                log.error("artifact sha256:%s failed its integrity check", digest)
                raise
        try:  # a header longer than the probe (long key id or wrapped key)
            return read_header(io.BytesIO(self._range(digest, 1 << 18)), bad)
        except ArtifactIntegrityError:
            log.error("artifact sha256:%s failed its integrity check", digest)
            raise

    def _range(self, digest: str, length: int) -> bytes:
        with self._calls():
            try:
                response = self._s3.get_object(
                    Bucket=self.bucket, Key=self._key(digest), Range=f"bytes=0-{length - 1}"
                )
            except self._botocore.ClientError as err:
                if _code(err) == "InvalidRange":
                    return b""  # an empty (plaintext) object
                raise
            return bytes(response["Body"].read())

    def _object_key_ids(self) -> Iterator[str | None]:
        for digest in self._object_keys():
            found = self._wrapping(digest)
            yield None if found is None else found[0]

    def _wrapping(self, digest: str) -> tuple[str, bytes, BlobHeader] | None:
        header = self._header(digest)
        if header is None:
            return None
        key_id, wrapped = self._effective_wrapping(digest, header)
        return key_id, wrapped, header

    def rewrap(self) -> int:
        """Re-wrap every object's data key under the current key-encryption key, in its sidecar
        object (the object itself is not rewritten); returns how many were re-wrapped."""
        keys = self._provider()
        current = keys.current_key_id()
        done = 0
        for digest in self._object_keys():
            found = self._wrapping(digest)
            if found is None or found[0] == current:
                continue
            key_id, wrapped, header = found
            data_key = keys.unwrap(key_id, wrapped, header.wrap_aad)
            self._write_sidecar(
                digest, header, current, keys.wrap(current, data_key, header.wrap_aad)
            )
            done += 1
        return done

    def encrypt_existing(self) -> int:
        """Encrypt every object still stored in plaintext (each is checked against its digest
        first, and its encrypted form checked again before it replaces the object); returns
        how many were converted."""
        keys = self._provider()
        converted = 0
        for digest in self._object_keys():
            if self._header(digest) is not None:
                continue
            with self._download(digest) as source:
                if _file_digest(source) != digest:
                    raise _corrupted(digest)
                source.seek(0)
                hasher = hashlib.sha256()
                with translate_storage_errors(), self._temp_file() as (tmp_path, handle):
                    for segment in encrypt_stream(source, handle, keys):
                        hasher.update(segment)
                    handle.flush()
                    if hasher.hexdigest() != digest:
                        raise _corrupted(digest)
                    with open(tmp_path, "rb") as body:
                        self._put_replacing(self._key(digest), body, tmp_path.stat().st_size)
            converted += 1
        return converted


def _file_digest(handle: BinaryIO) -> str:
    handle.seek(0)
    hasher = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", "unknown"))


def _status(err: Any) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
