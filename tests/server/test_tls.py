"""TLS (issue 9, item 6): ``civicml server --tls-cert/--tls-key`` serves HTTPS with HSTS on the
same transport (head timeout, connection limit, TCP_NODELAY); the remote SDK and CLI verify the
server's certificate, trusting an agency CA through ``ca_bundle`` / ``--ca-bundle`` /
``CIVICML_CA_BUNDLE``, and say so clearly when they cannot.

Every certificate is made here (a CA, a server certificate for 127.0.0.1 and localhost, a second
CA nobody trusts); every server is a real uvicorn on a free loopback port.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import civicml as cm
from civicml.cli.main import main
from civicml.core.errors import ConfigurationError
from civicml.sdk.remote import RemoteError
from civicml.server import create_app
from civicml.server.transport import tls_files
from tests.conftest import free_port
from tests.server.helpers import API, assert_error, isolated_settings, serve, serve_server

HSTS = "max-age=31536000"
HEAD_TIMEOUT_S = 1.0
WAIT_S = 20.0  # a bound on the test, never a timing assertion


# Certificates -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PKI:
    ca: Path  # the agency CA (PEM) that issued the server's certificate
    other_ca: Path  # a CA that did not
    cert: Path
    key: Path  # mode 0600
    other_key: Path  # a key that is not the certificate's


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server_cert(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("civicml test server"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, mode: int = 0o600) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("Agency Test CA")
    other, _ = _ca("Somebody Else's CA")
    cert, key = _server_cert(ca, ca_key)
    return PKI(
        ca=_write_cert(root / "ca.pem", ca),
        other_ca=_write_cert(root / "other-ca.pem", other),
        cert=_write_cert(root / "server.pem", cert),
        key=_write_key(root / "server.key", key),
        other_key=_write_key(root / "other.key", _key()),
    )


@pytest.fixture(scope="module")
def tls_url(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app over HTTPS (with a short head timeout for the slow-client test)."""
    settings = isolated_settings(
        tmp_path_factory.mktemp("tls"),
        server_tls_cert=pki.cert,
        server_tls_key=pki.key,
        server_header_timeout_s=HEAD_TIMEOUT_S,
    )
    with serve(create_app(settings), ca_bundle=pki.ca) as url:
        yield url


def _trust(pki: PKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


# The SDK ------------------------------------------------------------------------------------
def test_the_sdk_with_the_agency_ca_bundle_works_end_to_end(tls_url: str, pki: PKI) -> None:
    with cm.connect(tls_url, ca_bundle=pki.ca) as ml:
        ml.create_project("over-tls", description="made over HTTPS")
        names = [p.name for p in ml.projects()]

    assert "over-tls" in names


def test_the_sdk_reads_the_ca_bundle_from_the_environment(
    tls_url: str, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICML_CA_BUNDLE", str(pki.ca))
    with cm.connect(tls_url) as ml:
        ml.project("from-env")
        assert "from-env" in [p.name for p in ml.projects()]


@pytest.mark.parametrize("bundle", [None, "other"])
def test_an_untrusted_certificate_is_a_clear_error(
    tls_url: str, pki: PKI, bundle: str | None
) -> None:
    ca_bundle = pki.other_ca if bundle == "other" else None
    with cm.connect(tls_url, ca_bundle=ca_bundle) as ml:
        with pytest.raises(RemoteError, match="certificate is not trusted") as caught:
            ml.projects()

    assert caught.value.hint is not None
    assert "--ca-bundle" in caught.value.hint and "CIVICML_CA_BUNDLE" in caught.value.hint
    assert "Traceback" not in caught.value.message


@pytest.mark.parametrize("problem", ["missing", "not-pem"])
def test_a_bad_ca_bundle_file_is_a_clear_error(tls_url: str, tmp_path: Path, problem: str) -> None:
    bundle = tmp_path / "ca.pem"
    if problem == "not-pem":
        bundle.write_text("not a certificate\n")

    with pytest.raises(ConfigurationError, match="CA bundle") as caught:
        cm.connect(tls_url, ca_bundle=bundle)

    assert caught.value.hint is not None and "CIVICML_CA_BUNDLE" in caught.value.hint


def test_https_to_a_plain_http_server_is_a_clear_error(pki: PKI, tmp_path: Path) -> None:
    with serve(create_app(isolated_settings(tmp_path))) as url:
        https = url.replace("http://", "https://")
        with cm.connect(https, ca_bundle=pki.ca) as ml:
            with pytest.raises(RemoteError, match="TLS with the civicml server") as caught:
                ml.projects()

    assert caught.value.hint is not None and "http://" in caught.value.hint


# The server ---------------------------------------------------------------------------------
def test_plain_http_to_the_tls_port_gets_no_answer(tls_url: str) -> None:
    plain = tls_url.replace("https://", "http://")

    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}{API}/health", timeout=WAIT_S)
    with cm.connect(plain) as ml:
        with pytest.raises(RemoteError, match="Cannot reach the civicml server") as caught:
            ml.projects()
    assert caught.value.hint is not None and "use an https:// URL" in caught.value.hint
    assert ".." not in caught.value.message


def test_every_answer_over_tls_carries_hsts(tls_url: str, pki: PKI) -> None:
    with httpx.Client(base_url=tls_url, verify=_trust(pki), timeout=WAIT_S) as client:
        ok = client.get(f"{API}/health")
        missing = client.get(f"{API}/projects/no-such-project")
        refused = client.post(  # answered by the guard, before any route
            f"{API}/projects", content=b"{}", headers={"content-encoding": "gzip"}
        )

    assert ok.status_code == 200
    assert_error(missing, 404, "NotFoundError")
    assert_error(refused, 415, "UnsupportedMediaTypeError")
    for response in (ok, missing, refused):
        assert response.headers["strict-transport-security"] == HSTS
        assert response.headers["x-content-type-options"] == "nosniff"


def test_plain_http_never_carries_hsts(tmp_path: Path) -> None:
    with serve(create_app(isolated_settings(tmp_path))) as url:
        response = httpx.get(f"{url}{API}/health", timeout=WAIT_S)

    assert response.status_code == 200
    assert "strict-transport-security" not in response.headers


def _tls_socket(url: str, pki: PKI) -> ssl.SSLSocket:
    host, port = _address(url)
    return _trust(pki).wrap_socket(socket.create_connection((host, port)), server_hostname=host)


def test_the_head_timeout_still_closes_a_stalled_tls_connection(tls_url: str, pki: PKI) -> None:
    with _tls_socket(tls_url, pki) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(WAIT_S)
        try:
            closed = sock.recv(65536) == b""
        except (ConnectionResetError, ssl.SSLEOFError):
            closed = True

    assert closed


def test_bytes_that_are_not_http_get_hsts_over_tls(tls_url: str, pki: PKI) -> None:
    """uvicorn's own 400 (not the app's) carries HSTS and the security headers too."""
    with _tls_socket(tls_url, pki) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        sock.settimeout(WAIT_S)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, ssl.SSLEOFError):
            pass

    head = data.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 400")
    assert b"strict-transport-security: max-age=" in head
    assert b"x-frame-options: deny" in head


def test_tls_connections_have_tcp_nodelay_and_a_connection_limit(pki: PKI, tmp_path: Path) -> None:
    settings = isolated_settings(
        tmp_path, server_tls_cert=pki.cert, server_tls_key=pki.key, server_limit_concurrency=3
    )
    with serve_server(create_app(settings), ca_bundle=pki.ca) as (url, server):
        held = [_tls_socket(url, pki) for _ in range(3)]  # handshakes done: counted
        try:
            deadline = time.monotonic() + WAIT_S
            while len(server.server_state.connections) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            for protocol in list(server.server_state.connections):
                raw = protocol.transport.get_extra_info("socket")
                assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

            response = httpx.get(f"{url}{API}/health", verify=_trust(pki), timeout=WAIT_S)

            body = assert_error(response, 503, "ServiceUnavailableError", "connection limit")
            assert "CIVICML_SERVER_LIMIT_CONCURRENCY" in body["hint"]
            assert response.headers["strict-transport-security"] == HSTS
        finally:
            for sock in held:
                sock.close()


# Start-up checks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-cert", "does not exist"),
        ("missing-key", "does not exist"),
        ("only-cert", "needs both"),
        ("mismatched-key", "does not belong to the certificate"),
        ("not-pem", "cannot be loaded"),
        ("directory", "is a directory"),
    ],
)
def test_a_bad_certificate_or_key_stops_the_server_with_one_error_line(
    pki: PKI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    message: str,
) -> None:
    for name in [k for k in os.environ if k.startswith("CIVICML_")]:
        monkeypatch.delenv(name)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cert, key = {
        "missing-cert": (tmp_path / "nope.pem", pki.key),
        "missing-key": (pki.cert, tmp_path / "nope.key"),
        "only-cert": (pki.cert, None),
        "mismatched-key": (pki.cert, pki.other_key),
        "not-pem": (junk, pki.key),
        "directory": (tmp_path, pki.key),
    }[case]
    args = ["--home", str(tmp_path / "home"), "server", "--port", str(free_port())]
    args += ["--tls-cert", str(cert)] if cert else []
    args += ["--tls-key", str(key)] if key else []

    code = main(args)

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines[0].startswith("Error: ") and message in lines[0], err
    assert lines[1].startswith("Hint: "), err
    assert len(lines) == 2 and "Traceback" not in err
    assert str(tmp_path) not in lines[0] or case == "directory"


def test_a_key_readable_by_others_gets_a_warning(pki: PKI, tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.key.read_bytes())
    loose.chmod(0o644)

    tls = tls_files(isolated_settings(tmp_path, server_tls_cert=pki.cert, server_tls_key=loose))
    strict = tls_files(
        isolated_settings(tmp_path, server_tls_cert=pki.cert, server_tls_key=pki.key)
    )

    assert tls is not None and strict is not None
    assert len(tls.warnings) == 1 and "chmod 600" in tls.warnings[0]
    assert strict.warnings == []


def test_an_encrypted_key_is_refused_rather_than_prompted_for(pki: PKI, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )

    with pytest.raises(ConfigurationError, match="encrypted with a passphrase"):
        tls_files(isolated_settings(tmp_path, server_tls_cert=pki.cert, server_tls_key=locked))


# The real command and the CLI ---------------------------------------------------------------
def test_civicml_server_with_tls_and_the_cli_with_ca_bundle(
    pki: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``civicml server --tls-cert --tls-key`` as a subprocess (its key group-readable, so it
    warns); the CLI then works with ``--ca-bundle`` and fails clearly without it."""
    for name in [k for k in os.environ if k.startswith("CIVICML_")]:
        monkeypatch.delenv(name)
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.key.read_bytes())
    loose.chmod(0o640)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICML_")}
    env["CIVICML_HOME"] = str(tmp_path / "server-home")
    command = [sys.executable, "-m", "civicml.cli.main", "server", "--port", str(port)]
    command += ["--log-level", "warning", "--tls-cert", str(pki.cert), "--tls-key", str(loose)]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            health = None
            while health is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    health = httpx.get(f"{url}{API}/health", verify=_trust(pki), timeout=2)
                except httpx.TransportError:
                    time.sleep(0.1)
            assert health is not None, log.read_text()
            assert health.status_code == 200
            assert health.headers["strict-transport-security"] == HSTS

            home = str(tmp_path / "cli-home")
            capsys.readouterr()
            trusted = ["--home", home, "--url", url, "--ca-bundle", str(pki.ca)]
            assert main([*trusted, "projects", "create", "cli-tls"]) == 0
            assert main([*trusted, "projects", "list", "--json"]) == 0
            assert "cli-tls" in capsys.readouterr().out

            code = main(["--home", home, "--url", url, "projects", "list"])
            err = capsys.readouterr().err
            assert code == 1, err
            lines = err.strip().splitlines()
            assert lines[0].startswith("Error: The server's certificate is not trusted"), err
            assert lines[1].startswith("Hint: ") and "--ca-bundle" in lines[1], err
            assert len(lines) == 2 and "Traceback" not in err
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert f"civicml server on {url}" in output
    assert "Warning: The TLS key 'loose.key' can be read by other users" in output
    assert "Traceback" not in output


def test_an_invocation_over_tls_answered_by_the_direct_lane_carries_hsts(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.server.test_direct import PATH, counted_lane, deployed_app
    from tests.serving.helpers import records

    settings = isolated_settings(tmp_path, server_tls_cert=pki.cert, server_tls_key=pki.key)
    app = deployed_app(settings, tmp_path)
    counted = counted_lane(app, monkeypatch)
    try:
        with (
            serve(app, ca_bundle=pki.ca) as url,
            httpx.Client(base_url=url, verify=_trust(pki), timeout=WAIT_S) as client,
        ):
            answers = [client.post(PATH, json={"records": records(1)}) for _ in range(3)]
    finally:
        app.state.serving.close()
    assert counted.seen[-1] is True  # the endpoint's route was loaded: the lane answered
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.headers["strict-transport-security"] == HSTS
        assert response.headers["x-content-type-options"] == "nosniff"
