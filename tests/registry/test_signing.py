"""Model versions are signed at registration (issue 9 item 7) and deploy verifies the signature.

Registration signs ``version_statement(project, model, version, manifest digest)`` with the
model-signing key; deploy and endpoint update refuse a version whose stored signature no longer
verifies (a direct UPDATE of the digest or the signature), and accept a legacy unsigned version
with ``signature: "absent"`` in the audit event.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from sqlalchemy import update

from civicml.core import ConflictError
from civicml.evaluation.models import convert_model_bundles
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.registry import RegistryService
from civicml.registry._tables import approval_history, model_versions
from civicml.serving import EndpointService
from civicml.store import Context
from civicml.store.signing import KEY_FILE, PackageSigner, verify_statement, version_statement
from civicml.training import fit_tabular
from tests.serving.helpers import MODEL, PROJECT, register, train, training_frame
from tests.training.test_model_files import write_legacy_bundle


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    train(root / "v1", c=1.0)
    train(root / "v2", c=0.01)
    return root / "v1", root / "v2"


@pytest.fixture
def project(ctx: Context) -> str:
    ProjectService(ctx).create(PROJECT)
    return PROJECT


def _stored(ctx: Context, version_id: str) -> tuple[object, str]:
    with ctx.db.read() as conn:
        row = conn.execute(model_versions.select().where(model_versions.c.id == version_id)).one()
    return row.manifest_signature, row.artifact_digest


def _set(ctx: Context, version_id: str, **values: object) -> None:
    with ctx.db.write() as uow:
        uow.conn.execute(
            update(model_versions).where(model_versions.c.id == version_id).values(**values)
        )


def test_registration_stores_a_verifiable_signature(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    mv = register(ctx, model_dirs[0], approve=False)
    signature, digest = _stored(ctx, mv.id)
    assert isinstance(signature, dict)
    assert set(signature) == {"algorithm", "key_id", "signature"}
    assert signature["algorithm"] == "Ed25519"
    assert (ctx.settings.keys_root / KEY_FILE).is_file()
    statement = version_statement(PROJECT, MODEL, 1, digest)
    assert verify_statement(ctx.settings, statement, signature) is None
    # the signed bytes are the documented canonical JSON, verifiable with the public key alone
    assert statement == (
        b'{"format":"civicml-model-version-signature/1","manifest_digest":"'
        + digest.encode()
        + b'","model":"'
        + MODEL.encode()
        + b'","project":"'
        + PROJECT.encode()
        + b'","version":1}'
    )
    public = PackageSigner(ctx.settings).private_key().public_key()
    public.verify(base64.b64decode(signature["signature"]), statement)
    assert RegistryService(ctx).verify_version_signature(mv) == "verified"
    # another version's statement does not verify with this signature
    other = version_statement(PROJECT, MODEL, 2, digest)
    assert verify_statement(ctx.settings, other, signature) is not None


def test_deploy_records_a_verified_signature(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx).deploy(project, "web", MODEL, 1)
    (event,) = AuditTrail(ctx).list(entity_kind="endpoint")
    assert event.after is not None and event.after["signature"] == "verified"


def test_deploy_refuses_a_tampered_signature(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    mv = register(ctx, model_dirs[0])
    signature, _ = _stored(ctx, mv.id)
    assert isinstance(signature, dict)
    forged = bytearray(base64.b64decode(signature["signature"]))
    forged[0] ^= 1
    _set(
        ctx,
        mv.id,
        manifest_signature=signature | {"signature": base64.b64encode(forged).decode()},
    )
    with pytest.raises(
        ConflictError,
        match=rf"Model version {MODEL}/1 fails its registration signature check: the "
        "signature does not match",
    ) as caught:
        EndpointService(ctx).deploy(project, "web", MODEL, 1)
    assert caught.value.hint is not None and "audit verify" in caught.value.hint
    assert EndpointService(ctx).list(project) == []


def test_deploy_refuses_a_manifest_digest_changed_in_the_database(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    """Even with the approval evidence rewritten to match, the signature gives it away."""
    v1 = register(ctx, model_dirs[0])
    v2 = register(ctx, model_dirs[1], approve=False)
    other_digest = v2.artifact_digest
    _set(ctx, v1.id, artifact_digest=other_digest)
    with ctx.db.write() as uow:
        uow.conn.execute(
            update(approval_history)
            .where(approval_history.c.version_id == v1.id)
            .values(evidence={"manifest_digest": other_digest})
        )
    with pytest.raises(ConflictError, match="fails its registration signature check"):
        EndpointService(ctx).deploy(project, "web", MODEL, 1)
    with pytest.raises(ConflictError, match="fails its registration signature check"):
        EndpointService(ctx).deploy(project, "web", MODEL, "latest")


def test_deploy_refuses_a_signer_that_is_not_trusted(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    mv = register(ctx, model_dirs[0])
    signature, _ = _stored(ctx, mv.id)
    assert isinstance(signature, dict)
    _set(ctx, mv.id, manifest_signature=signature | {"key_id": "0123456789abcdef"})
    with pytest.raises(ConflictError, match="neither this installation's model-signing key"):
        EndpointService(ctx).deploy(project, "web", MODEL, 1)


def test_update_refuses_a_tampered_version_and_keeps_the_old_one(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    register(ctx, model_dirs[0])
    svc = EndpointService(ctx)
    svc.deploy(project, "web", MODEL, 1)
    v2 = register(ctx, model_dirs[1])
    _set(ctx, v2.id, manifest_signature={"algorithm": "RSA", "key_id": "x", "signature": "x"})
    with pytest.raises(ConflictError, match="not an Ed25519 signature"):
        svc.update(project, "web", 2)
    assert svc.get(project, "web").model_version == 1


def test_legacy_unsigned_version_deploys_and_the_audit_says_so(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    v1 = register(ctx, model_dirs[0])
    v2 = register(ctx, model_dirs[1])
    for mv in (v1, v2):  # registered before migration 0011
        _set(ctx, mv.id, manifest_signature=None)
    svc = EndpointService(ctx)
    assert RegistryService(ctx).verify_version_signature(v1) == "absent"
    svc.deploy(project, "web", MODEL, 1)
    svc.update(project, "web", 2)
    events = AuditTrail(ctx).list(entity_kind="endpoint")
    assert [e.action for e in events] == ["endpoint.deployed", "endpoint.updated"]
    assert all(e.after is not None and e.after["signature"] == "absent" for e in events)


def test_converting_an_old_bundle_re_signs_the_new_manifest(
    ctx: Context, project: str, tmp_path: Path
) -> None:
    """`civicml models convert` changes the manifest digest legitimately: the signature follows."""
    model = fit_tabular(training_frame(), "eligible", algorithm="logistic", seed=0)
    write_legacy_bundle(model, tmp_path / "old")
    files = {p.name: ctx.artifacts.put_file(p).digest for p in sorted((tmp_path / "old").iterdir())}
    registry = RegistryService(ctx)
    old = registry.register(PROJECT, MODEL, artifacts=files)
    assert convert_model_bundles(ctx).converted == [f"{PROJECT}/{MODEL} v1"]
    mv = registry.get_version(PROJECT, MODEL, 1)
    assert mv.artifact_digest != old.artifact_digest
    assert registry.verify_version_signature(mv) == "verified"
