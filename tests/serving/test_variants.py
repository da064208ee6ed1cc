"""Variants: several approved versions behind one endpoint, weights, pinning, capture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from civicml.core import ConflictError, InvalidInputError, NotFoundError
from civicml.governance.audit import AuditTrail
from civicml.serving import CaptureService, EndpointService, ModelHost, VariantService
from civicml.store import Context
from civicml.store.artifact_index import ArtifactIndex
from civicml.training import TabularModel
from tests.serving.helpers import MODEL, records, register


def _two_versions(ctx: Context, model_dirs: tuple[Path, Path]) -> None:
    register(ctx, model_dirs[0])
    register(ctx, model_dirs[1])


def _within_binomial(count: int, n: int, p: float) -> None:
    """``count`` of ``n`` draws is within 4.5 standard deviations of ``n * p``."""
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= 4.5 * sigma + 1, (count, n, p)


def test_deploy_makes_a_one_variant_endpoint(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _two_versions(ctx, model_dirs)
    info = EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    [variant] = info.variants
    assert (variant.name, variant.role.value, variant.model_version) == ("v1", "live", 1)
    assert (variant.weight, variant.share) == (1.0, 1.0)
    result = host.invoke(project, "web", records(2))
    assert (result["variant"], result["model_version"]) == ("v1", 1)
    # the single-version update keeps working: one variant, named after the new version
    updated = EndpointService(ctx, host).update(project, "web", 2)
    assert [(v.name, v.model_version) for v in updated.variants] == [("v2", 2)]
    assert host.invoke(project, "web", records(1))["variant"] == "v2"


def test_weights_split_the_traffic_and_a_pin_picks_a_variant(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _two_versions(ctx, model_dirs)
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1, variant="blue")
    svc = VariantService(ctx, host)
    info = svc.put(project, "web", "green", MODEL, 2)  # weight 0: pinned requests only
    assert [(v.name, v.weight, v.share) for v in info.variants] == [
        ("blue", 1.0, 1.0),
        ("green", 0.0, 0.0),
    ]
    rows = records(3)
    assert {host.invoke(project, "web", rows)["variant"] for _ in range(50)} == {"blue"}
    pinned = host.invoke(project, "web", rows, variant="GREEN")  # names are case-blind
    assert (pinned["variant"], pinned["model_version"]) == ("green", 2)
    expected = TabularModel.load(model_dirs[1]).predict_proba(rows)
    np.testing.assert_allclose(pinned["probabilities"], expected, rtol=1e-12)

    info = svc.set_weights(project, "web", {"blue": 1, "green": 3})
    assert [v.share for v in info.variants] == [0.25, 0.75]
    n = 2000
    green = sum(host.invoke(project, "web", rows[:1])["variant"] == "green" for _ in range(n))
    _within_binomial(green, n, 0.75)

    with pytest.raises(NotFoundError, match="Endpoint 'web' has no variant 'gren'") as err:
        host.invoke(project, "web", rows, variant="gren")
    assert "Did you mean 'green'" in (err.value.hint or "")
    events = [e.action for e in AuditTrail(ctx).list(entity_kind="endpoint")]
    assert events.count("endpoint.variants_changed") == 2


def test_bad_variant_changes_are_refused(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _two_versions(ctx, model_dirs)
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    svc = VariantService(ctx, host)
    svc.put(project, "web", "green", MODEL, 2, weight=1)
    with pytest.raises(ConflictError, match="No live variant would have a traffic weight"):
        svc.set_weights(project, "web", {"v1": 0, "green": 0})
    with pytest.raises(NotFoundError, match="has no variant 'blue'"):
        svc.set_weights(project, "web", {"blue": 1})
    with pytest.raises(InvalidInputError, match="Weight -1 of variant 'green'"):
        svc.set_weights(project, "web", {"green": -1})
    with pytest.raises(InvalidInputError, match="No weights were given"):
        svc.set_weights(project, "web", {})
    with pytest.raises(ConflictError, match="already has these variants"):
        svc.set_weights(project, "web", {"green": 1})
    svc.remove(project, "web", "v1")
    with pytest.raises(ConflictError, match="No live variant would have a traffic weight"):
        svc.remove(project, "web", "green")
    assert [v.name for v in svc.list(project, "web")] == ["green"]
    assert EndpointService(ctx, host).get(project, "web").model_version == 2  # the primary


def test_captured_records_name_their_variant(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _two_versions(ctx, model_dirs)
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1, variant="blue")
    VariantService(ctx, host).put(project, "web", "green", MODEL, 2)
    host.invoke(project, "web", records(2))
    host.invoke(project, "web", records(1), variant="green")
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    meta = [c["eventMetadata"] for c in captured]
    assert [(m["variant"], m["modelVersion"], m["shadow"]) for m in meta] == [
        ("blue", 1, False),
        ("blue", 1, False),
        ("green", 2, False),
    ]
    assert all(m["latencyMs"] > 0 for m in meta)
    frame = CaptureService(ctx, host.capture).to_frame(project, "web", metadata=True)
    assert frame["variant"].tolist() == ["blue", "blue", "green"]


def test_capture_files_written_before_variants_stay_readable(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _two_versions(ctx, model_dirs)
    info = EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    host.invoke(project, "web", records(2))
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    for record in captured:  # as civicml wrote them before endpoints had variants
        for key in ("variant", "shadow", "latencyMs"):
            del record["eventMetadata"][key]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in captured)
    with ctx.db.write() as uow:
        ArtifactIndex.add(
            uow,
            project_id=_project_id(ctx, project),
            owner_kind="endpoint",
            owner_id=info.id,
            path="capture/2025/01/01/00/old.jsonl",
            stored=ctx.artifacts.put_bytes(lines),
            created_by="alice",
            created_at=ctx.clock.now(),
        )
    frame = CaptureService(ctx, host.capture).to_frame(project, "web", metadata=True)
    # the old file comes first (its hour is earlier); its records name no variant
    assert frame["variant"].isna().tolist() == [True, True, False, False]
    assert frame["variant"].tolist()[2:] == ["v1", "v1"]
    assert frame["prediction"].tolist()[:2] == frame["prediction"].tolist()[2:]


def _project_id(ctx: Context, project: str) -> str:
    from civicml.governance.projects import ProjectService

    return ProjectService(ctx).get(project, "projects.read").id
