"""Key administration: platform admins only, every change audited, the same through the SDK,
the CLI and the REST API (the role matrix walks the routes in tests/server/test_authorization)."""

from __future__ import annotations

import httpx
import pytest

from civicml.core.errors import ConflictError, PermissionDeniedError
from civicml.core.identity import Principal
from civicml.governance import AuditTrail
from civicml.governance.keys import KeyService
from civicml.sdk.client import connect
from civicml.server import create_app
from civicml.store import Context
from tests.server.helpers import API, isolated_settings
from tests.server.helpers import serve as serve_app
from tests.server.test_auth import bearer, mint


def test_rotate_retire_and_encrypt_are_audited_with_ids_never_material(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    ctx.artifacts.put_bytes(b"some artifact")
    keys = KeyService(ctx)
    before = keys.report()
    [first] = before.keys
    done = keys.rotate()
    assert done.previous_key_id == first.key_id and done.rewrapped == 1
    with pytest.raises(ConflictError, match="current key"):
        keys.retire(done.key_id)
    keys.retire(first.key_id)
    assert [k.key_id for k in keys.report().keys] == [done.key_id]
    events = {e.action: e for e in AuditTrail(ctx).list() if e.entity_kind == "encryption_key"}
    assert set(events) == {"keys.rotated", "keys.retired"}
    assert events["keys.rotated"].after == done.model_dump()
    assert events["keys.retired"].after == {"key_id": first.key_id}
    key_file = ctx.artifacts.keys.directory / f"kek-{done.key_id}.key"  # type: ignore[union-attr]
    audited = str([e.after for e in events.values()])
    assert key_file.read_bytes()[:8].hex() not in audited  # ids and counts, never material
    # Healthy objects are not logged as failing their integrity check (they were, once per
    # object and command, before the header check built its error only when needed).
    assert not [r for r in caplog.records if "integrity" in r.getMessage()]


def test_only_keys_admin_may(ctx: Context) -> None:
    for roles in ({"project-admin", "reviewer", "auditor"}, set()):
        reviewer = KeyService(ctx.as_principal(Principal(user="rui", roles=frozenset(roles))))
        for call in (reviewer.report, reviewer.rotate, reviewer.encrypt_existing):
            with pytest.raises(PermissionDeniedError, match=r"'keys\.admin'"):
                call()


def test_keys_through_the_server_and_the_remote_sdk(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from civicml.governance.schemas import TokenCreate

    settings = isolated_settings(tmp_path_factory.mktemp("keys"), auth="token")
    admin = mint(settings, TokenCreate(name="ops")).secret
    viewer = mint(settings, TokenCreate(name="v", roles=["viewer"])).secret
    with serve_app(create_app(settings)) as url:
        with connect(url, token=admin) as ml:
            first = ml.keys.list().keys
            done = ml.keys.rotate()
            assert done.previous_key_id == (first[0].key_id if first else None)
            assert ml.keys.encrypt_existing() == 0
        refused = httpx.post(f"{url}{API}/keys/rotate", headers=bearer(viewer), json={})
        assert refused.status_code == 403
        assert "keys.admin" in refused.json()["message"]
