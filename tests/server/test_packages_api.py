"""Signed model packages through a real server: GET …/versions/{v}/package and
POST …/models/import (an octet-stream upload), with the SDK's remote client and raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import civicml as cm
from civicml.core.errors import InvalidInputError
from civicml.core.settings import Settings
from civicml.registry.schemas import ApprovalStatus
from civicml.server import create_app
from tests.registry.test_packages import (
    MODEL,
    PROJECT,
    Homes,
    _members,
    _rewrite,
    build_homes,
)
from tests.server.helpers import serve


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Homes]:
    yield from build_homes(tmp_path)


@pytest.fixture
def target_url(homes: Homes) -> Iterator[str]:
    settings = Settings.load(home=homes.target_home, trusted_signers=[str(homes.pub)])
    with serve(create_app(settings)) as url:
        yield url


def test_import_and_export_through_the_server(homes: Homes, target_url: str) -> None:
    package = homes.export()
    with cm.connect(target_url, user="olga") as remote:
        remote.project(PROJECT)
        mv = remote.project(PROJECT).models.import_package(package, name="promoted")
        assert mv.name == "promoted" and mv.approval_status is ApprovalStatus.PENDING
        again = homes.tmp_path / "again.tar"
        signer = remote.project(PROJECT).models.export(mv, again)
    assert signer and signer != json.loads(_members(package)["signature.json"])["key_id"]
    original, downloaded = _members(package), _members(again)
    files = {n: d for n, d in original.items() if n.startswith("files/")}
    assert files and all(downloaded[n] == d for n, d in files.items())
    assert json.loads(downloaded["package.json"])["model"] == "promoted"


def test_hostile_and_tampered_uploads_are_4xx(homes: Homes, target_url: str) -> None:
    package = homes.export()
    members = _members(package)
    url = f"{target_url}/api/v1/projects/{PROJECT}/models/import"
    headers = {"Content-Type": "application/octet-stream", "X-CivicML-User": "olga"}
    with cm.connect(target_url, user="olga") as remote:
        remote.project(PROJECT)
        evil = _rewrite(package, members, [_info("../evil")])
        with pytest.raises(InvalidInputError, match="escapes the package"):
            remote.project(PROJECT).models.import_package(evil)
    name = next(n for n in members if n.endswith(".skops"))
    members[name] = members[name][:-1] + bytes([members[name][-1] ^ 1])
    tampered = _rewrite(package, members)
    answer = httpx.post(url, content=tampered.read_bytes(), headers=headers)
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "PackageVerificationError" and body["hint"]
    assert str(homes.tmp_path) not in answer.text
    answer = httpx.post(url, content=b"not a tar", headers=headers)
    assert answer.status_code == 422 and "not a readable tar" in answer.json()["message"]
    missing = httpx.get(
        f"{target_url}/api/v1/projects/{PROJECT}/models/{MODEL}/versions/9/package",
        headers=headers,
    )
    assert missing.status_code == 404


def _info(name: str) -> object:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = 1
    return info
