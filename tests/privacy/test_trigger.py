"""``data.erased`` is an event a pipeline schedule can start on (a retraining trigger)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from civicml.pipelines.schedule_schemas import ScheduleCreate
from civicml.pipelines.triggers import EVENT_TYPES, event_fields


def test_data_erased_offers_the_model_and_the_erasure() -> None:
    assert "data.erased" in EVENT_TYPES
    row = SimpleNamespace(
        id="e1",
        seq=9,
        action="data.erased",
        project="benefits",
        actor="alice",
        at="2026-12-06T10:00:00Z",
        entity_id="mv1",
        before=None,
        after=json.dumps({"name": "eligibility", "version": 3, "erasure_id": "er1"}),
    )
    fields = event_fields(row, "retrain")
    assert fields is not None
    assert (fields["model"], fields["version"], fields["model_version_id"]) == (
        "eligibility",
        3,
        "mv1",
    )
    assert fields["erasure_id"] == "er1" and fields["type"] == "data.erased"
    made = ScheduleCreate.model_validate(
        {"name": "r", "pipeline": "m:f", "event": "data.erased", "match": {"model": "eligibility"}}
    )
    assert made.event == "data.erased"
