"""What starts a scheduled pipeline: cron instants, audit events, and the pipeline reference.

* **Cron**: five-field expressions (or ``@hourly``, ``@daily``…) evaluated in the schedule's time
  zone with ``croniter``; instants are whole minutes, recorded in UTC.
* **Events** are the audit trail's own events (``governance/audit.py``): every state change is one,
  with an action, a subject and before/after documents. :data:`EVENT_FIELDS` lists the ones a
  schedule can wait for and the fields each offers to a match filter and to ``{event.<field>}``
  parameter templates.
* **Pipeline references** are ``package.module:function`` only, and the module must be one the
  operator allowed (setting ``pipeline_modules``): the scheduler imports code, and it never
  imports a name a user gave unless it is inside that list.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from civicml.core.errors import ConfigurationError, InvalidInputError
from civicml.core.settings import Settings
from civicml.pipelines.dsl import Pipeline, canonical_json

__all__ = [
    "CRON",
    "EVENT_FIELDS",
    "EVENT_TYPES",
    "check_cron",
    "check_match",
    "check_templates",
    "event_fields",
    "latest_due",
    "load_scheduled_pipeline",
    "matches",
    "next_after",
    "parse_ref",
    "render",
]

CRON = "cron"

_COMMON = {
    "event_id": "the audit event's id (also the firing's key)",
    "seq": "the audit event's sequence number",
    "type": "the event type",
    "project": "the project's name",
    "actor": "who caused it",
    "at": "when it happened (ISO-8601 UTC)",
    "schedule": "the schedule's name",
}
_MODEL = {
    "model": "the registered model's name",
    "version": "the model version's number",
    "model_version_id": "the model version's id",
}

#: Every trigger type and the fields its ``{event.<field>}`` templates and match filters may name.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    CRON: {
        "type": "'cron'",
        "fire_at": "the cron instant (ISO-8601 UTC), e.g. 2026-05-04T02:00:00Z",
        "project": "the project's name",
        "schedule": "the schedule's name",
    },
    "dataset_version.created": {
        **_COMMON,
        "dataset": "the dataset's name",
        "version": "the new version's number",
        "dataset_version_id": "the dataset version's id",
        "digest": "SHA-256 of its canonical Parquet",
        "row_count": "its number of rows",
        "columns": "its number of columns",
    },
    "report.created": {  # drift reports (monitoring)
        **_COMMON,
        "report_id": "the report's id",
        "verdict": "'drift', 'no_drift' or 'insufficient_data'",
        "title": "the report's title",
        "n_drifted": "how many columns drifted",
        "n_columns": "how many columns were compared",
        "current_rows": "rows of the current data",
        "current_dataset": "the current dataset's name",
        "current_version": "the current dataset version's number",
        "baseline_dataset": "the baseline dataset's name",
        "baseline_version": "the baseline dataset version's number",
    },
    "model_version.registered": {
        **_COMMON,
        **_MODEL,
        "run_id": "the run it was registered from (null for a file upload)",
        "approval_status": "its approval status (PendingManualApproval)",
    },
    "model_version.approval_changed": {
        **_COMMON,
        **_MODEL,
        "approval_status": "the new status: 'Approved' or 'Rejected' (or back to pending)",
        "previous_status": "the status before",
        "note": "the reviewer's note",
    },
    "data.erased": {  # an erasure removed a data subject from the version's training data
        **_COMMON,
        **_MODEL,
        "erasure_id": "the erasure's id (civicml privacy erasures show)",
    },
    "alert.fired": {  # alert rules (civicml.alerts): e.g. retrain when drift alerts
        **_COMMON,
        "alert_id": "the alert's id",
        "rule": "the alert rule's name",
        "subject": "what it fired on: the endpoint or the dataset",
        "severity": "'info', 'warning' or 'critical'",
        "value": "the metric's value when it fired",
        "metric": "the metric compared, e.g. 'verdict' or 'p99_ms'",
        "condition": "the rule's condition, e.g. 'verdict == drift'",
        "source": "'endpoint' or 'monitoring'",
    },
}
#: The audit event types a schedule can be triggered by.
EVENT_TYPES: tuple[str, ...] = tuple(k for k in EVENT_FIELDS if k != CRON)

_TEMPLATE = re.compile(r"\{event\.([A-Za-z_][A-Za-z0-9_]*)\}")
_CRON_KEYWORDS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MAX_MATCH_VALUES = 32


# Events ------------------------------------------------------------------------------------
def _doc(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _dataset_ref(text: object) -> tuple[str | None, int | None]:
    """``"applications v3"`` → ``("applications", 3)``."""
    if not isinstance(text, str):
        return None, None
    name, sep, number = text.rpartition(" v")
    return (name, int(number)) if sep and number.isdigit() else (text, None)


def event_fields(
    row: Any, schedule: str | None = None, *, project: str | None = None
) -> dict[str, Any] | None:
    """The fields of an audit event row that a schedule sees, or None when it is no trigger
    (another action, or a report that is not a drift report)."""
    action = row.action
    if action not in EVENT_FIELDS or action == CRON:
        return None
    after, before = _doc(row.after), _doc(row.before)
    fields: dict[str, Any] = {
        "event_id": row.id,
        "seq": int(row.seq),
        "type": action,
        "project": project if project is not None else row.project,
        "actor": row.actor,
        "at": row.at,
        "schedule": schedule,
    }
    if action == "dataset_version.created":
        fields.update(
            dataset=after.get("name"),
            version=after.get("version"),
            dataset_version_id=row.entity_id,
            digest=after.get("digest"),
            row_count=after.get("row_count"),
            columns=after.get("columns"),
        )
    elif action == "report.created":
        if after.get("kind") != "drift":
            return None
        current, baseline = _dataset_ref(after.get("current")), _dataset_ref(after.get("baseline"))
        fields.update(
            report_id=row.entity_id,
            verdict=after.get("verdict"),
            title=after.get("title"),
            n_drifted=after.get("n_drifted"),
            n_columns=after.get("n_columns"),
            current_rows=after.get("current_rows"),
            current_dataset=current[0],
            current_version=current[1],
            baseline_dataset=baseline[0],
            baseline_version=baseline[1],
        )
    elif action == "data.erased":
        fields.update(
            model=after.get("name"),
            version=after.get("version"),
            model_version_id=row.entity_id,
            erasure_id=after.get("erasure_id"),
        )
    elif action == "alert.fired":
        fields.update(
            alert_id=row.entity_id,
            **{
                key: after.get(key)
                for key in ("rule", "subject", "severity", "value", "metric", "condition", "source")
            },
        )
    else:
        fields.update(
            model=after.get("name"), version=after.get("version"), model_version_id=row.entity_id
        )
        if action == "model_version.registered":
            fields.update(run_id=after.get("run_id"), approval_status=after.get("approval_status"))
        else:
            fields.update(
                approval_status=after.get("approval_status"),
                previous_status=before.get("approval_status"),
                note=after.get("note"),
            )
    return fields


def _unknown_field(field: str, trigger: str, what: str) -> InvalidInputError:
    import difflib

    known = sorted(EVENT_FIELDS[trigger])
    close = difflib.get_close_matches(field, known, n=1)
    return InvalidInputError(
        f"{what} names field {field!r}, which a {trigger!r} trigger does not offer.",
        hint=f"Did you mean {close[0]!r}?"
        if close
        else f"Its fields are: {', '.join(known)} (docs/pipelines.md, Schedules and triggers).",
    )


def check_match(trigger: str, match: Mapping[str, Any]) -> dict[str, Any]:
    """``match`` normalised: each key a field of ``trigger``, each value a JSON scalar or a list
    of at most 32 of them (any of which matches).

    Raises:
        InvalidInputError: An unknown field, or a value that is not a scalar or list of them.
    """
    out: dict[str, Any] = {}
    for key, value in match.items():
        if key not in EVENT_FIELDS[trigger]:
            raise _unknown_field(key, trigger, "The match filter")
        items = value if isinstance(value, list) else [value]
        if len(items) > _MAX_MATCH_VALUES or not all(
            v is None or isinstance(v, str | int | float | bool) for v in items
        ):
            raise InvalidInputError(
                f"The match filter's value for {key!r} must be a string, number, boolean or "
                f"null, or a list of at most {_MAX_MATCH_VALUES} of them.",
                hint='Write e.g. {"verdict": "drift"} or {"dataset": ["claims", "payments"]}.',
            )
        out[key] = value
    return out


def matches(match: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether an event's ``fields`` pass the filter (all keys; a list is any of its values).
    Values compare as JSON: ``1`` is not ``"1"`` nor ``true``."""
    for key, wanted in match.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        got = canonical_json(fields.get(key))
        if not any(canonical_json(option) == got for option in options):
            return False
    return True


def check_templates(trigger: str, params: Any) -> None:
    """Refuse ``{event.<field>}`` templates naming a field ``trigger`` does not offer.

    Raises:
        InvalidInputError: The unknown field, with the known ones.
    """
    if isinstance(params, str):
        for found in _TEMPLATE.finditer(params):
            if found.group(1) not in EVENT_FIELDS[trigger]:
                raise _unknown_field(found.group(1), trigger, f"Parameter template {params!r}")
    elif isinstance(params, dict):
        for value in params.values():
            check_templates(trigger, value)
    elif isinstance(params, list):
        for value in params:
            check_templates(trigger, value)


def render(params: Any, fields: Mapping[str, Any]) -> Any:
    """``params`` with ``{event.<field>}`` templates filled in from ``fields``: a string that is
    one template becomes the field's value as it is (a number stays a number); templates inside
    longer strings are replaced by the value's text. Other text, braces included, is kept."""
    if isinstance(params, str):
        whole = _TEMPLATE.fullmatch(params)
        if whole is not None:
            return fields.get(whole.group(1))
        return _TEMPLATE.sub(lambda m: _text(fields.get(m.group(1))), params)
    if isinstance(params, dict):
        return {key: render(value, fields) for key, value in params.items()}
    if isinstance(params, list):
        return [render(value, fields) for value in params]
    return params


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# Cron --------------------------------------------------------------------------------------
def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InvalidInputError(
            f"Time zone {timezone!r} is not an IANA time zone name.",
            hint="Write e.g. 'UTC', 'Europe/Berlin' or 'America/New_York'.",
        ) from err


def check_cron(expression: str, timezone: str) -> None:
    """Refuse anything but a five-field cron expression (minute hour day month weekday) or one
    of ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``; and unknown time zones.

    Raises:
        InvalidInputError: What is wrong, with an example.
    """
    from croniter import croniter

    _zone(timezone)
    text = expression.strip()
    fields = text.split()
    keyword = text.lower() in _CRON_KEYWORDS
    if not keyword and (len(fields) != 5 or not croniter.is_valid(text)):
        raise InvalidInputError(
            f"Cron expression {expression!r} is not five fields (minute hour day month "
            "weekday) that croniter understands.",
            hint="Write e.g. '0 2 * * *' (02:00 every day) or '*/15 * * * *'; @hourly and "
            "@daily work too. Seconds are not supported.",
        )


def latest_due(expression: str, timezone: str, now: datetime) -> datetime:
    """The latest cron instant at or before ``now`` (UTC)."""
    from croniter import croniter

    base = now.astimezone(_zone(timezone)).replace(microsecond=0) + timedelta(seconds=1)
    found: datetime = croniter(expression.strip(), base).get_prev(datetime)
    return found.astimezone(UTC)


def next_after(expression: str, timezone: str, moment: datetime) -> datetime:
    """The first cron instant strictly after ``moment`` (UTC)."""
    from croniter import croniter

    base = moment.astimezone(_zone(timezone))
    found: datetime = croniter(expression.strip(), base).get_next(datetime)
    return found.astimezone(UTC)


# Pipeline references -----------------------------------------------------------------------
def parse_ref(ref: str) -> tuple[str, str]:
    """``"package.module:function"`` → ``("package.module", "function")``.

    Raises:
        InvalidInputError: A file path or anything but dotted identifiers, a colon, a name.
    """
    module, sep, attr = ref.partition(":")
    parts = module.split(".")
    if not sep or not attr.isidentifier() or not all(p.isidentifier() for p in parts):
        raise InvalidInputError(
            f"Pipeline reference {ref!r} is not package.module:function.",
            hint="Schedules name a module the scheduler can import, e.g. "
            "agency_pipelines.nightly:retrain (no file paths).",
        )
    return module, attr


def _allowed(module: str, settings: Settings) -> bool:
    return any(module == p or module.startswith(p + ".") for p in settings.pipeline_modules)


def check_allowed(ref: str, settings: Settings) -> tuple[str, str]:
    """``ref`` parsed, if its module is inside the ``pipeline_modules`` setting.

    Raises:
        InvalidInputError: Not ``package.module:function``.
        ConfigurationError: The module is outside ``pipeline_modules`` (400; CLI exit 2).
    """
    module, attr = parse_ref(ref)
    if not _allowed(module, settings):
        allowed = ", ".join(settings.pipeline_modules) or "none"
        raise ConfigurationError(
            f"Module {module!r} is not in the setting pipeline_modules (allowed: {allowed}); "
            "the scheduler imports only modules the operator listed there.",
            hint=f"Ask the operator to add it: CIVICML_PIPELINE_MODULES='[\"{module}\"]' or "
            "pipeline_modules = [...] in civicml.toml (docs/configuration.md).",
        )
    return module, attr


def load_scheduled_pipeline(ref: str, settings: Settings) -> Pipeline:
    """Import the ``@cm.pipeline`` function ``ref`` names, after :func:`check_allowed`.

    Raises:
        ConfigurationError: The module is not allowed.
        InvalidInputError: It cannot be imported, or the name is not a pipeline.
    """
    module_name, attr = check_allowed(ref, settings)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # an allowed module that fails to import: say why
        raise InvalidInputError(
            f"Cannot import pipeline module {module_name!r}: {type(err).__name__}: {err}",
            hint="Install it where the scheduler runs (civicml server / civicml scheduler).",
        ) from err
    found = getattr(module, attr, None)
    if not isinstance(found, Pipeline):
        what = "is not defined" if found is None else f"is a {type(found).__qualname__}"
        raise InvalidInputError(
            f"{attr!r} in {module_name!r} {what}, not a @cm.pipeline function.",
            hint="Name a function decorated with @cm.pipeline after the colon.",
        )
    return found
