"""The S3 artifact store (``civicml.store.s3``) against a real S3 API server on loopback (moto's
server mode): content addressing, no overwrites, verify-on-read, encryption at rest, rotation
through sidecar objects, clear errors, and an embedded civicml whose artifacts live in a bucket."""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from civicml.core import ArtifactIntegrityError, Settings
from civicml.core.errors import ConfigurationError, ConflictError, NotFoundError
from civicml.store.artifacts import artifact_store_for
from civicml.store.crypto import MAGIC, SEGMENT_BYTES
from tests.conftest import skip_or_fail

MARKER = b"Zyxwvut-Confidential-Applicant-4417"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-never-shown",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real S3 API server (moto) on a free loopback port, for this module."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        skip_or_fail("moto's server mode is not installed: pip install -e '.[dev]'")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"civicml-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(tmp_path: Path, endpoint: str, bucket: str) -> Settings:
    return Settings.load(
        home=tmp_path / "home", artifacts=f"s3://{bucket}/team/x", s3_endpoint_url=endpoint
    )


@pytest.fixture
def store(settings: Settings) -> Any:
    return artifact_store_for(settings)


def key_of(digest: str) -> str:
    return f"team/x/objects/{digest[:2]}/{digest[2:4]}/{digest}"


def stored_bytes(s3: Any, bucket: str, digest: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key_of(digest))["Body"].read())


def object_keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


# Round trips -------------------------------------------------------------------------------------
def test_bytes_streams_and_files_round_trip(store: Any, tmp_path: Path) -> None:
    data = MARKER * 1000
    source = tmp_path / "f.bin"
    source.write_bytes(data + b"file")

    a = store.put_bytes(data)
    b = store.put_stream(io.BytesIO(data + b"stream"))
    c = store.put_file(source)

    assert a.digest == hashlib.sha256(data).hexdigest() and a.size == len(data)
    assert store.read_bytes(a.digest) == data
    with store.open(f"sha256:{b.digest}") as handle:
        assert handle.read() == data + b"stream"
    assert store.read_bytes(c.digest) == data + b"file"
    assert store.exists(c.digest)
    assert not list(store.scratch_dir.glob("*.part"))


def test_a_large_object_streams_through_segments(store: Any) -> None:
    data = bytes(range(256)) * ((9 << 20) // 256) + b"tail"  # above the in-memory limit

    stored = store.put_stream(io.BytesIO(data))

    with store.open(stored.digest) as handle:
        handle.seek(SEGMENT_BYTES + 5)
        assert handle.read(10) == data[SEGMENT_BYTES + 5 : SEGMENT_BYTES + 15]
        handle.seek(0)
        assert hashlib.sha256(handle.read()).hexdigest() == stored.digest


def test_the_same_content_twice_is_one_object(store: Any, s3: Any, bucket: str) -> None:
    first = store.put_bytes(b"same content")
    before = stored_bytes(s3, bucket, first.digest)

    second = store.put_bytes(b"same content")

    assert first == second
    assert object_keys(s3, bucket) == [key_of(first.digest)]
    assert stored_bytes(s3, bucket, first.digest) == before  # not overwritten


def test_the_upload_is_conditional_so_a_racing_writer_never_overwrites(
    store: Any, s3: Any, bucket: str
) -> None:
    digest = hashlib.sha256(b"racing").hexdigest()
    s3.put_object(Bucket=bucket, Key=key_of(digest), Body=b"racing")  # the other writer won
    store.exists = lambda _digest: False  # as if it won after our HEAD

    store.put_bytes(b"racing")

    assert stored_bytes(s3, bucket, digest) == b"racing"


# Integrity ---------------------------------------------------------------------------------------
def test_verify_on_read_catches_a_tampered_object(store: Any, s3: Any, bucket: str) -> None:
    stored = store.put_bytes(MARKER)
    data = bytearray(stored_bytes(s3, bucket, stored.digest))
    data[-5] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key_of(stored.digest), Body=bytes(data))

    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        store.read_bytes(stored.digest)
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        store.open(stored.digest)


def test_verify_on_read_catches_a_replaced_plaintext_object(
    tmp_path: Path, endpoint: str, bucket: str, s3: Any
) -> None:
    plain = artifact_store_for(
        Settings.load(
            home=tmp_path / "home",
            artifacts=f"s3://{bucket}/team/x",
            s3_endpoint_url=endpoint,
            encrypt_artifacts=False,
        )
    )
    stored = plain.put_bytes(b"approved model")
    assert stored_bytes(s3, bucket, stored.digest) == b"approved model"
    s3.put_object(Bucket=bucket, Key=key_of(stored.digest), Body=b"swapped model!")

    with pytest.raises(ArtifactIntegrityError):
        plain.read_bytes(stored.digest)


def test_bytes_at_rest_hold_no_plaintext(store: Any, s3: Any, bucket: str) -> None:
    stored = store.put_bytes(MARKER * 50)

    at_rest = stored_bytes(s3, bucket, stored.digest)

    assert at_rest.startswith(MAGIC)
    assert MARKER not in at_rest


def test_a_missing_object_is_not_found(store: Any) -> None:
    with pytest.raises(NotFoundError, match="is not in the artifact store"):
        store.read_bytes("ab" * 32)
    assert not store.exists("ab" * 32)


def test_delete_removes_an_object_once(store: Any, s3: Any, bucket: str) -> None:
    """Erasure and retention delete bytes nothing names any more (docs/privacy.md)."""
    digest = store.put_bytes(MARKER).digest
    assert store.delete(digest) is True
    assert not store.exists(digest) and key_of(digest) not in object_keys(s3, bucket)
    assert store.delete(digest) is False


# Keys --------------------------------------------------------------------------------------------
def test_rotation_rewraps_through_sidecars_and_retire_is_refused_while_used(
    store: Any, s3: Any, bucket: str
) -> None:
    stored = store.put_bytes(MARKER)
    before = stored_bytes(s3, bucket, stored.digest)
    old = store.keys.current_key_id()
    with pytest.raises(ConflictError, match="is the current key"):
        store.retire_key(old)

    result = store.rotate_keys()

    assert result.previous_key_id == old and result.rewrapped == 1
    assert stored_bytes(s3, bucket, stored.digest) == before  # data untouched
    assert key_of(stored.digest) + ".key" in object_keys(s3, bucket)
    assert store.read_bytes(stored.digest) == MARKER
    report = store.key_report()
    assert {(k.key_id, k.objects) for k in report.keys} == {(old, 0), (result.key_id, 1)}
    store.retire_key(old)
    assert store.read_bytes(stored.digest) == MARKER


def test_retire_is_refused_while_an_object_uses_the_key(store: Any, tmp_path: Path) -> None:
    stored = store.put_bytes(MARKER)
    old = store.keys.current_key_id()
    store.keys.create_key()  # a new current key, no rewrap yet

    with pytest.raises(ConflictError, match="still protects 1 artifact"):
        store.retire_key(old)
    assert store.read_bytes(stored.digest) == MARKER


def test_encrypt_existing_converts_plaintext_objects(
    tmp_path: Path, endpoint: str, bucket: str, s3: Any
) -> None:
    base = {"home": tmp_path / "home", "artifacts": f"s3://{bucket}/team/x"}
    plain = artifact_store_for(
        Settings.load(**base, s3_endpoint_url=endpoint, encrypt_artifacts=False)
    )
    stored = plain.put_bytes(MARKER)
    encrypted = artifact_store_for(Settings.load(**base, s3_endpoint_url=endpoint))

    assert encrypted.key_report().plaintext_objects == 1
    assert encrypted.encrypt_existing() == 1

    assert MARKER not in stored_bytes(s3, bucket, stored.digest)
    assert encrypted.read_bytes(stored.digest) == MARKER


# Configuration -----------------------------------------------------------------------------------
def test_a_missing_bucket_is_a_configuration_error(tmp_path: Path, endpoint: str) -> None:
    settings = Settings.load(
        home=tmp_path / "home", artifacts="s3://no-such-bucket-here/x", s3_endpoint_url=endpoint
    )

    with pytest.raises(ConfigurationError, match=r"'no-such-bucket-here'.* does not exist") as err:
        artifact_store_for(settings)
    assert err.value.hint and "Create the bucket" in err.value.hint


def test_an_unreachable_endpoint_is_a_configuration_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings.load(
        home=tmp_path / "home",
        artifacts="s3://bucket-x/x",
        s3_endpoint_url=f"http://127.0.0.1:{port}",
    )

    with pytest.raises(ConfigurationError, match="cannot be reached") as err:
        artifact_store_for(settings)
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in str(err.value) + str(err.value.hint)


@pytest.mark.parametrize(
    "value,message",
    [
        ("s3://Bad_Bucket/x", "is not an S3 bucket name"),
        ("s3://bucket-x/a//b", "empty, '.' or '..' part"),
        ("s3://bucket-x/x?versionId=1", "carries a query"),
    ],
)
def test_malformed_s3_urls_are_refused_at_start(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.load(artifacts=value)


def test_an_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError, match="carries credentials") as err:
        Settings.load(artifacts="s3://bucket-x", s3_endpoint_url="http://ak:sekrit@127.0.0.1:9")
    assert "sekrit" not in str(err.value)


def test_an_s3_url_is_normalised() -> None:
    settings = Settings.load(artifacts="s3://bucket-x/team/x/")
    assert settings.artifacts == "s3://bucket-x/team/x" and settings.artifacts_s3


def test_without_boto3_the_hint_names_the_extra(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)

    with pytest.raises(ConfigurationError, match="needs the Python package 'boto3'") as err:
        artifact_store_for(settings)
    assert err.value.hint == "pip install 'civicml[s3]'"


# End to end --------------------------------------------------------------------------------------
def test_an_embedded_civicml_keeps_its_datasets_in_the_bucket(
    settings: Settings, s3: Any, bucket: str, tmp_path: Path
) -> None:
    from civicml.sdk.client import connect

    source = tmp_path / "applications.csv"
    source.write_text("income,region\n1200,north\n900,south\n")

    with connect(settings=settings) as ml:
        project = ml.project("benefits")
        version = project.datasets.ingest("applications", source)
        table = project.datasets.read(version)

    assert table.column("region").to_pylist() == ["north", "south"]
    keys = object_keys(s3, bucket)
    assert keys and all(k.startswith("team/x/objects/") for k in keys)
    assert not (Path(settings.home) / "artifacts").exists()


def test_the_keys_cli_rotates_an_s3_store(
    settings: Settings,
    store: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from civicml.cli.main import main

    digest = store.put_bytes(MARKER).digest
    old = store.keys.current_key_id()
    monkeypatch.setenv("CIVICML_ARTIFACTS", str(settings.artifacts))
    monkeypatch.setenv("CIVICML_S3_ENDPOINT_URL", str(settings.s3_endpoint_url))
    home = str(settings.home)

    assert main(["--home", home, "keys", "rotate"]) == 0
    assert "1 artifact key(s) re-wrapped" in capsys.readouterr().out
    assert main(["--home", home, "keys", "retire", old]) == 0
    assert store.read_bytes(digest) == MARKER
