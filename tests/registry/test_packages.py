"""Signed model packages (issue 9 item 7): export from one civicml, import into another.

Two embedded homes in tmp_path: 'source' trains, registers and exports; 'target' trusts the
source's signing key and imports. Tampered files, an untrusted signer and hostile tars (``..``
paths, links, members the signed manifest does not list) are refused before anything is stored.
"""

from __future__ import annotations

import io
import json
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.cli.main import main
from civicml.core.errors import InvalidInputError
from civicml.core.settings import Settings
from civicml.data.samples import benefit_applications
from civicml.oversight.packages import KEY_FILE, PackageVerificationError
from civicml.registry.schemas import ApprovalStatus, ModelVersion
from civicml.training.model import TabularModel

PROJECT, MODEL = "benefits", "eligibility"


class Homes:
    def __init__(self, tmp_path: Path, source: cm.Client, mv: ModelVersion, frame: Any) -> None:
        self.tmp_path = tmp_path
        self.source = source
        self.mv = mv
        self.frame = frame
        self.source_home = tmp_path / "source"
        self.target_home = tmp_path / "target"
        self.pub = self.source_home / "keys" / KEY_FILE.replace(".pem", ".pub")

    def target(self, trusted: list[str] | None = None, user: str = "olga") -> cm.Client:
        signers = [str(self.pub)] if trusted is None else trusted
        settings = Settings.load(home=self.target_home, trusted_signers=signers)
        return cm.connect(settings=settings, user=user)

    def export(self, name: str = "pkg.tar") -> Path:
        path = self.tmp_path / name
        self.source.project(PROJECT).models.export(self.mv, path)
        return path


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Homes]:
    yield from build_homes(tmp_path)


def build_homes(tmp_path: Path) -> Iterator[Homes]:
    """The source home with ``eligibility`` v1 trained and registered by tara."""
    source = cm.connect(home=tmp_path / "source", user="tara")
    proj = source.project(PROJECT)
    frame = benefit_applications(300, seed=5)
    data = proj.datasets.ingest("applications", frame)
    with proj.start_run() as run:
        trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
    mv = proj.models.register(MODEL, trained, run=run)
    yield Homes(tmp_path, source, mv, frame)
    source.close()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for info in tar:
            handle = tar.extractfile(info)
            assert handle is not None
            out[info.name] = handle.read()
        return out


def _rewrite(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    out = path.with_name("hostile.tar")
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return out


def _load(members: dict[str, bytes], root: Path) -> TabularModel:
    for name, data in members.items():
        if name.startswith("files/"):
            target = root / name.removeprefix("files/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return TabularModel.load(root)


def test_round_trip_registers_pending_version_with_lineage_and_audit(homes: Homes) -> None:
    package = homes.export()
    members = _members(package)
    manifest = json.loads(members["package.json"])
    assert manifest["model"] == MODEL and manifest["version"] == homes.mv.version
    assert manifest["approval"]["status"] == ApprovalStatus.PENDING.value
    assert manifest["lineage"]["training_datasets"][0]["name"] == "applications"
    assert manifest["card"]["model"] == MODEL
    assert set(manifest["files"]) == {n.removeprefix("files/") for n in members if "/" in n}
    key = homes.source_home / "keys" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    with homes.target() as target:
        proj = target.project(PROJECT)
        mv = proj.models.import_package(package)
        assert mv.name == MODEL and mv.version == 1
        assert mv.approval_status is ApprovalStatus.PENDING  # approved again locally
        assert mv.metrics == homes.mv.metrics
        proj.models.export(mv, homes.tmp_path / "again.tar")  # read back from the target
        again = _members(homes.tmp_path / "again.tar")
        events = target.audit_events(action="model_version.imported")
        graph = target.lineage("model_version", mv.id, direction="upstream")
    signer = json.loads(members["signature.json"])["key_id"]
    assert events and events[0].after["signer"] == signer
    package_nodes = [n for n in graph.nodes if n.kind == "model_package"]
    assert package_nodes and package_nodes[0].properties["signer"] == signer
    assert any(e.kind == "DerivedFrom" for e in graph.edges)

    original = _load(members, homes.tmp_path / "a")
    imported = _load(again, homes.tmp_path / "b")
    features = homes.frame.drop(columns=["eligible"])
    assert (original.predict(features) == imported.predict(features)).all()


def test_tampered_file_is_refused(homes: Homes) -> None:
    members = _members(homes.export())
    name = next(n for n in members if n.endswith(".skops"))
    data = bytearray(members[name])
    data[len(data) // 2] ^= 0xFF
    members[name] = bytes(data)
    hostile = _rewrite(homes.tmp_path / "pkg.tar", members)
    with homes.target() as target:
        with pytest.raises(PackageVerificationError, match="does not match its signed SHA-256"):
            target.project(PROJECT).models.import_package(hostile)
        assert target.project(PROJECT).models.list() == []


def test_tampered_manifest_is_refused(homes: Homes) -> None:
    members = _members(homes.export())
    manifest = json.loads(members["package.json"])
    manifest["metrics"] = {"accuracy": 1.0}
    members["package.json"] = json.dumps(manifest).encode()
    hostile = _rewrite(homes.tmp_path / "pkg.tar", members)
    with homes.target() as target, pytest.raises(PackageVerificationError, match="does not verify"):
        target.project(PROJECT).models.import_package(hostile)


def test_untrusted_signer_is_refused_even_the_local_key(homes: Homes) -> None:
    package = homes.export()
    with homes.target(trusted=[]) as target:
        with pytest.raises(PackageVerificationError, match="not a trusted signer"):
            target.project(PROJECT).models.import_package(package)
    # The source's own key is not trusted implicitly either.
    with pytest.raises(PackageVerificationError, match="not a trusted signer"):
        homes.source.project(PROJECT).models.import_package(package)


@pytest.mark.parametrize(
    "hostile",
    [
        tarfile.TarInfo("../evil"),
        tarfile.TarInfo("/etc/evil"),
        tarfile.TarInfo("files/a/../../evil"),
    ],
    ids=["dotdot", "absolute", "nested-dotdot"],
)
def test_path_traversal_is_refused(homes: Homes, hostile: tarfile.TarInfo) -> None:
    hostile.size = 1
    bad = _rewrite(homes.tmp_path / "pkg.tar", _members(homes.export()), [hostile])
    with homes.target() as target, pytest.raises(InvalidInputError, match="escapes the package"):
        target.project(PROJECT).models.import_package(bad)
    assert not (homes.tmp_path / "evil").exists()


def test_links_and_unlisted_members_are_refused(homes: Homes) -> None:
    members = _members(homes.export())
    link = tarfile.TarInfo("files/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with homes.target() as target:
        models = target.project(PROJECT).models
        bad = _rewrite(homes.tmp_path / "pkg.tar", members, [link])
        with pytest.raises(InvalidInputError, match="is a link"):
            models.import_package(bad)
        members["files/model.joblib"] = b"not listed"
        bad = _rewrite(homes.tmp_path / "pkg.tar", members)
        with pytest.raises(InvalidInputError, match="not listed in the signed manifest"):
            models.import_package(bad)
        (homes.tmp_path / "junk.tar").write_bytes(b"no tar at all")
        with pytest.raises(InvalidInputError, match="not a readable tar"):
            models.import_package(homes.tmp_path / "junk.tar")


# CLI ------------------------------------------------------------------------------------------
Cli = Callable[..., tuple[int, str, str]]


def _cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--home", str(home), "--user", "olga", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_import_and_exit_codes(
    homes: Homes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    package = homes.tmp_path / "cli.tar"
    code, out, err = _cli(
        capsys, homes.source_home, "models", "export", MODEL, "1", "-o", str(package), "-p", PROJECT
    )
    assert code == 0, err
    assert "signed by key" in out and package.is_file()

    code, out, err = _cli(
        capsys, homes.target_home, "models", "import", str(package), "-p", PROJECT
    )
    assert code == 1 and err.startswith("Error: ") and "not a trusted signer" in err
    assert "Traceback" not in err

    monkeypatch.setenv("CIVICML_TRUSTED_SIGNERS", json.dumps([str(homes.pub)]))
    code, out, err = _cli(
        capsys,
        homes.target_home,
        "models",
        "import",
        str(package),
        "-p",
        PROJECT,
        "--name",
        "promoted",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["name"] == "promoted"

    bad = _rewrite(package, _members(package), [tarfile.TarInfo("../evil")])
    code, out, err = _cli(capsys, homes.target_home, "models", "import", str(bad), "-p", PROJECT)
    assert code == 2 and "escapes the package" in err and "Traceback" not in err
    code, out, err = _cli(capsys, homes.target_home, "models", "import", "nope.tar", "-p", PROJECT)
    assert code == 2 and "No package file" in err
