"""The Done-when scenario: a subject in three dataset versions, a capture and a model is erased
end to end, and the audit chain still verifies."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import civicml as cm
from civicml.serving.capture import CaptureService
from tests.privacy.helpers import DATASET, KEY, PROJECT, SUBJECT, build


def _check_reports(ctx: Any, version_ids: list[str]) -> list[str]:
    """Digests of the quality / personal-data report files of these dataset versions."""
    from sqlalchemy import select

    from civicml.data._tables import dataset_checks
    from civicml.store._tables import artifacts

    checks = select(dataset_checks.c.id).where(dataset_checks.c.dataset_version_id.in_(version_ids))
    with ctx.db.read() as conn:
        return list(
            conn.execute(
                select(artifacts.c.digest).where(
                    artifacts.c.owner_kind == "dataset_check", artifacts.c.owner_id.in_(checks)
                )
            ).scalars()
        )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_a_subject_is_erased_from_versions_captures_and_models(home: Path) -> None:
    world = build(home)
    with cm.connect(home=home, user="alice") as ml:
        proj = ml.project(PROJECT)
        ctx = ml.backend.ctx
        before = [v.digest for v in world.versions]
        captured_before = CaptureService(ctx).files(PROJECT, "web")
        reports_before = _check_reports(ctx, [v.id for v in world.versions])
        assert captured_before
        done = proj.privacy.erase(KEY, SUBJECT, reason="request 2026-41")

        # found: the three versions (1, 1 and 6 rows), not households; the capture files
        found = done.summary.versions
        assert [(v.dataset, v.version, v.rows_removed) for v in found] == [
            (DATASET, 1, 1),
            (DATASET, 2, 1),
            (DATASET, 3, 6),
        ]
        assert done.summary.scanned_versions == 3  # households has no applicant_id
        assert [v.successor_version for v in found] == [4, 5, 6]
        for v, old in zip(found, world.versions, strict=True):
            assert v.digest_before == old.digest
            assert v.bytes_deleted and not ctx.artifacts.exists(old.digest)
            successor = proj.datasets.version(DATASET, v.successor_version)
            assert successor.digest == v.digest_after
            assert successor.row_count == v.rows_before - v.rows_removed
            table = pq.read_table(io.BytesIO(ctx.artifacts.read_bytes(successor.digest)))
            assert SUBJECT not in table.column(KEY).to_pylist()
        assert all(ctx.artifacts.exists(d) is False for d in before)
        # their personal-data reports (files with sample rows) went with them
        assert sum(v.check_reports_removed for v in found) == len(reports_before)
        assert _check_reports(ctx, [v.id for v in world.versions]) == []
        assert not any(ctx.artifacts.exists(d) for d in reports_before)
        assert ctx.artifacts.exists(world.other.digest)

        # captures: the subject's 2 records gone, the others kept, old bytes deleted
        [capture] = done.summary.captures
        assert capture.records_removed == 2
        assert not ctx.artifacts.exists(capture.digest_before)
        left = CaptureService(ctx).to_frame(PROJECT, "web")
        assert len(left) == 2 and SUBJECT not in set(left[KEY])

        # the model trained on v2 is flagged on its card and dashboard
        [flagged] = done.summary.models
        assert (flagged.model, flagged.version) == ("eligibility", 1)
        card = proj.cards.get("eligibility", 1)
        assert card.content["training_details"]["trained_on_erased_data"] == [done.id]
        [row] = proj.models.dashboard().rows
        assert row.trained_on_erased_data

        # lineage: old --DerivedFrom--> successor; the old node is marked deleted
        graph = ml.catalog.lineage(PROJECT, "dataset", f"{DATASET}:5", direction="upstream")
        assert any(e.kind == "DerivedFrom" for e in graph.edges)
        assert any(n.deleted and n.ref == found[1].version_id for n in graph.nodes)

        # the certificate: what was found and removed, hashes, events; never the value
        cert = json.loads(proj.privacy.certificate(done.id))
        salt = cert["subject"]["salt"]
        expected = hashlib.sha256(f"{salt}\x00{KEY}\x00{SUBJECT}".encode()).hexdigest()
        assert cert["subject"]["hash"] == done.subject_hash == expected
        assert [v["digest_before"] for v in cert["dataset_versions"]] == before
        assert set(done.summary.audit_event_ids) == set(cert["audit_event_ids"])
        html = proj.privacy.certificate(done.id, html=True).decode()
        assert "Erasure certificate" in html and SUBJECT not in html
        assert SUBJECT not in json.dumps(cert)
        assert hashlib.sha256(proj.privacy.certificate(done.id)).hexdigest() == (
            done.certificate_digest
        )

        # the audit trail records it without the value, and still verifies
        events = ml.audit_events(project=PROJECT, limit=1000)
        actions = [e.action for e in events]
        assert actions.count("dataset_version.erased") == 3
        assert "data.erased" in actions and "erasure.completed" in actions
        ids = {e.id for e in events}
        assert set(done.summary.audit_event_ids) <= ids and done.audit_event_id in ids
        assert all(SUBJECT not in json.dumps([e.before, e.after]) for e in events)
        assert ml.verify_audit().ok
        assert proj.privacy.erasure(done.id).status == "completed"
        assert proj.privacy.erasure(done.id).audit_event_id == done.audit_event_id
        assert [e.id for e in proj.privacy.erasures()] == [done.id]

        # erasing again finds nothing
        again = proj.privacy.erase(KEY, SUBJECT)
        assert again.summary.versions == [] and again.summary.captures == []
        assert ml.verify_audit().ok


def test_a_legal_hold_withholds_a_dataset(home: Path) -> None:
    build(home)
    with cm.connect(home=home, user="alice") as ml:
        proj = ml.project(PROJECT)
        proj.privacy.hold("dataset", DATASET, reason="case 2026-114")
        done = proj.privacy.erase(KEY, SUBJECT)
        assert done.summary.versions == []
        assert done.summary.withheld == [f"dataset {DATASET}"]
        assert len(done.summary.captures) == 1  # the endpoint is not held


def test_a_crash_before_the_bytes_go_is_finished_by_the_next_pass(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civicml.privacy import erasure as module
    from civicml.privacy.retention import RetentionService

    world = build(home)

    def crash(*_: object) -> set[str]:
        raise RuntimeError("killed")

    with cm.connect(home=home, user="alice") as ml:
        proj = ml.project(PROJECT)
        ctx = ml.backend.ctx
        monkeypatch.setattr(module, "delete_unreferenced", crash)
        with pytest.raises(RuntimeError, match="killed"):
            proj.privacy.erase(KEY, SUBJECT)
        [pending] = proj.privacy.erasures()
        assert pending.status == "deleting"
        assert all(ctx.artifacts.exists(v.digest) for v in world.versions)  # not yet deleted
        monkeypatch.undo()
        assert RetentionService(ctx).finish_erasures() == 1
        assert proj.privacy.erasure(pending.id).status == "completed"
        assert not any(ctx.artifacts.exists(v.digest) for v in world.versions)
        assert ml.verify_audit().ok


def test_erasure_needs_its_permission(home: Path) -> None:
    from civicml.core import PermissionDeniedError

    build(home)
    with cm.connect(home=home, user="alice") as ml:
        ml.project(PROJECT).grant("val", "data-scientist")
    settings = cm.Settings.load(home=home, user="val", roles={"val": ["guest"]})
    with cm.connect(settings=settings) as ml:
        proj = ml.project(PROJECT)
        with pytest.raises(PermissionDeniedError, match=r"privacy\.erase"):
            proj.privacy.erase(KEY, SUBJECT)
        with pytest.raises(PermissionDeniedError, match=r"privacy\.erase"):
            proj.privacy.erasures()
