"""Migration 0017: every endpoint deployed before variants becomes a one-variant endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from civicml.core import Settings
from civicml.serving import EndpointService, ModelHost
from civicml.serving._tables import endpoint_variants
from civicml.store import Context
from tests.conftest import make_context
from tests.serving.helpers import MODEL, PROJECT, records, register
from tests.store.helpers import migrate


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_upgrade_gives_each_endpoint_its_one_variant(
    backend: str,
    request: pytest.FixtureRequest,
    ctx: Context,
    model_dirs: tuple[Path, Path],
) -> None:
    if backend == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
        settings = Settings.load(home=ctx.settings.home, db_url=url)
        ctx = make_context(settings, ctx.principal, ctx.clock)  # type: ignore[arg-type]
    url = ctx.settings.database_url
    from civicml.governance.projects import ProjectService

    ProjectService(ctx).create(PROJECT)
    register(ctx, model_dirs[0])
    register(ctx, model_dirs[1])
    endpoints = EndpointService(ctx)
    endpoints.deploy(PROJECT, "web", MODEL, 2)
    endpoints.deploy(PROJECT, "old", MODEL, 1, variant="blue")
    ctx.db.close()

    migrate(url, "0016", down=True)  # as an installation from before variants holds them
    migrate(url, "head")

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(endpoint_variants)).all()
    engine.dispose()
    assert sorted((r.name, r.model_version, r.weight, r.role) for r in rows) == [
        ("v1", 1, 1.0, "live"),  # 'blue' did not exist before variants: named after its version
        ("v2", 2, 1.0, "live"),
    ]
    fresh = make_context(ctx.settings, ctx.principal, ctx.clock)  # type: ignore[arg-type]
    host = ModelHost(fresh)
    try:
        assert host.invoke(PROJECT, "web", records(1))["variant"] == "v2"
        assert host.invoke(PROJECT, "old", records(1))["variant"] == "v1"
    finally:
        host.close()
        fresh.db.close()
