"""What happens to a version after ingestion, and whether training may consume it.

:func:`after_ingest` runs once per new version, with one plaintext copy of its Parquet file: the
personal-data scan (``datasets_pii_scan``), then the dataset's quality expectations when it has
any. The version is recorded *before* either runs, so a crash in between leaves a version with
no classification and no quality status — and :func:`check_usable` treats exactly that as
unchecked, never as passed.

:func:`check_usable` is the one gate every consumer that trains calls (``cm.train.*``, the
pipeline steps ``train``, ``tune`` and ``batch_predict``; ``GET …/versions/{v}/usable`` for
remote clients). It reads the version's stored state, not the caller's copy. A check that
fails at ingestion (a bug, a full disk) is logged and leaves the version unchecked; the
ingestion itself has succeeded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from civicml.core.errors import ConflictError
from civicml.data import _checks
from civicml.data._sample import RowSample
from civicml.data.expectation_schemas import QualityStatus
from civicml.data.schemas import Classification, DatasetVersion
from civicml.store.context import Context

__all__ = ["PURPOSES", "after_ingest", "check_usable"]

PURPOSES = ("training", "pipeline")
log = logging.getLogger("civicml.data")


def after_ingest(
    ctx: Context,
    version: DatasetVersion,
    *,
    path: Path | None = None,
    same_columns: tuple[DatasetVersion, Sequence[str]] | None = None,
    sample: RowSample | None = None,
) -> DatasetVersion:
    """Scan a new version for personal data and run its dataset's expectations; the version
    as they left it. ``path``: its canonical Parquet file in plaintext, when the caller has it
    (else a plaintext copy is made from the store, once, and only when the expectations or a
    scan without ``sample`` read the file); ``same_columns``: as for
    :meth:`DatasetService.ingest <civicml.data.service.DatasetService.ingest>`; ``sample``: the
    rows the scan looks at, gathered as the version was written."""
    from civicml.data.personal import PersonalDataService
    from civicml.data.quality import QualityService
    from civicml.data.service import DatasetService

    target = _checks.target_of(ctx, version, "datasets.write")
    with contextlib.ExitStack() as scope:
        scan = ctx.settings.datasets_pii_scan
        if path is None and (
            (scan and sample is None) or _checks.has_expectations(ctx, target.dataset_id)
        ):
            path = scope.enter_context(_checks.plaintext(ctx, target.digest))
        if scan:
            _attempt(
                "personal-data scan",
                version,
                lambda: PersonalDataService(ctx).scan(
                    version,
                    trigger="ingest",
                    path=path,
                    same_columns=same_columns,
                    sample=sample,
                ),
            )
        _attempt(
            "quality check",
            version,
            lambda: QualityService(ctx).run(version, trigger="ingest", path=path),
        )
    return DatasetService(ctx).get_version_by_id(version.id)


def _attempt(what: str, version: DatasetVersion, check: Callable[[], object]) -> None:
    """Run one check; the version is recorded already, so a check that fails leaves it
    unchecked (which :func:`check_usable` refuses where it matters) instead of failing the
    ingestion after the fact."""
    try:
        check()
    except Exception as err:
        log.warning(  # the class only: a message could name a file on the server
            "The %s of dataset version %s v%s failed (%s); it stays unchecked.",
            what,
            version.name,
            version.version,
            type(err).__name__,
        )


def check_usable(ctx: Context, version: DatasetVersion, *, purpose: str = "training") -> None:
    """Refuse ``version`` to a training run or pipeline when it may not be consumed.

    Raises:
        ConflictError: Quarantined (and not released); not checked against the dataset's
            blocking expectations; classified personal (or not scanned) under the
            ``redacted_or_justified`` policy without a justification.
        NotFoundError: The version does not exist (or its project is hidden from the caller).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    target = _checks.target_of(ctx, version, "datasets.read")
    what = f"Dataset version {target.dataset} v{target.version}"
    where = f"{target.dataset} {target.version} -p {target.project}"
    status = target.row.quality_status
    if status == QualityStatus.QUARANTINED.value:
        raise ConflictError(
            f"{what} is quarantined: a blocking quality expectation failed; no {purpose} may "
            "consume it.",
            hint=f"See why: civicml datasets expect report {where}. Ingest corrected data, or "
            f"have a holder of datasets.override_quarantine release it: civicml datasets "
            f"expect override {where} --justification '…'",
        )
    if status is None and _checks.has_blocking(ctx, target.dataset_id):
        raise ConflictError(
            f"{what} has not been checked against its dataset's blocking expectations.",
            hint=f"Check it: civicml datasets expect run {where}",
        )
    if ctx.settings.datasets_personal_training != "redacted_or_justified":
        return
    approvals = target.row.use_approvals or {}
    classification = target.row.classification
    if classification is None:
        raise ConflictError(
            f"{what} has not been scanned for personal data, and the policy "
            "datasets_personal_training = 'redacted_or_justified' needs to know.",
            hint=f"Scan it: civicml datasets pii scan {where}",
        )
    if classification == Classification.PERSONAL.value and "personal" not in approvals:
        raise ConflictError(
            f"{what} is classified personal; the policy datasets_personal_training = "
            f"'redacted_or_justified' forbids {purpose} on it unredacted.",
            hint=f"Redact it (civicml datasets redact {where} --hash COLUMN …), or have a "
            "holder of datasets.override_quarantine justify the use: civicml datasets pii "
            f"justify {where} --justification '…'",
        )
