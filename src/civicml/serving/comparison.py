"""The shadow comparison engine: live answers against the shadow's answers to the same requests.

Pure functions over captured records (SageMaker's capture format, :mod:`civicml.serving.capture`):
a shadow record (``eventMetadata.shadow``) carries the ``eventId`` of the live record it copies,
so the two form a *pair*. Over the pairs, :func:`compare` computes

* **agreement**: a classifier agrees when both predicted the same label; a regressor when
  ``|live - shadow| <= tolerance * max(1, |live|)`` (an absolute tolerance for values near 0, a
  relative one above 1);
* **score differences**: per pair, the largest absolute difference of the class probabilities
  (a classifier; its positive-class probability difference when binary) or of the predicted
  values (a regressor): mean, max and the 50th/90th/99th percentiles;
* **latency** of each side (the model's latency the host measured, ms): p50 and p99;
* **counts**: pairs, shadow copies that failed, shadow records without a live pair;
* a **recommendation**: ``promote`` only when there are at least ``min_pairs`` pairs, no shadow
  copy failed, agreement is at least ``min_agreement`` and the shadow's p99 is at most
  ``1 + max_latency_increase`` times the live p99; ``do_not_promote`` otherwise, with each reason.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_MAX_LATENCY_INCREASE",
    "DEFAULT_MIN_AGREEMENT",
    "DEFAULT_MIN_PAIRS",
    "DEFAULT_TOLERANCE",
    "Disagreement",
    "LatencySummary",
    "ScoreDifferences",
    "ShadowComparison",
    "compare",
]

DEFAULT_TOLERANCE = 0.01
DEFAULT_MIN_PAIRS = 100
DEFAULT_MIN_AGREEMENT = 0.95
DEFAULT_MAX_LATENCY_INCREASE = 0.2
#: Label pairs listed in a report's disagreements, most frequent first.
MAX_DISAGREEMENTS = 20


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScoreDifferences(_Schema):
    """Per pair: the largest absolute difference of the probabilities (classification) or of
    the predicted values (regression)."""

    mean_abs: float = Field(description="Mean over the pairs.")
    max_abs: float = Field(description="Largest over the pairs.")
    p50: float = Field(description="Median over the pairs.")
    p90: float = Field(description="90th percentile over the pairs.")
    p99: float = Field(description="99th percentile over the pairs.")


class LatencySummary(_Schema):
    """A side's model latency over the paired records (ms, as the serving host measured it)."""

    n: int = Field(ge=0, description="Records with a latency.")
    p50_ms: float | None = Field(description="Median; null without any.")
    p99_ms: float | None = Field(description="99th percentile; null without any.")


class Disagreement(_Schema):
    """How often the live variant said one label and the shadow another."""

    live: Any = Field(description="The live prediction.")
    shadow: Any = Field(description="The shadow's prediction.")
    count: int = Field(ge=1, description="Pairs with these two labels.")


class ShadowComparison(_Schema):
    """The comparison of a shadow variant with the live answers, and whether to promote it."""

    shadow_variant: str = Field(description="The shadow variant compared.")
    shadow_model: str | None = Field(description="Its model version, e.g. 'eligibility v4'.")
    live_variants: list[str] = Field(description="The live variants that answered the pairs.")
    live_models: list[str] = Field(description="Their model versions.")
    task: Literal["classification", "regression", "unknown"] = Field(
        description="Compared as labels (classification) or values (regression); 'unknown' "
        "when there was no pair to tell."
    )
    pairs: int = Field(ge=0, description="Live records with a shadow answer to compare.")
    shadow_records: int = Field(ge=0, description="Shadow records read.")
    shadow_errors: int = Field(ge=0, description="Shadow copies that failed (no answer).")
    unpaired: int = Field(
        ge=0, description="Shadow records whose live record was not captured or was refused."
    )
    agreements: int = Field(ge=0, description="Pairs that agree.")
    agreement_rate: float | None = Field(description="agreements / pairs; null without pairs.")
    tolerance: float = Field(
        description="Regression: values agree within tolerance * max(1, |live|)."
    )
    score_differences: ScoreDifferences | None = Field(
        description="Differences of scores; null without pairs (or without probabilities)."
    )
    disagreements: list[Disagreement] = Field(
        description="Classification: the label pairs that differed, most frequent first."
    )
    live_latency: LatencySummary = Field(description="The live answers' latency.")
    shadow_latency: LatencySummary = Field(description="The shadow answers' latency.")
    min_pairs: int = Field(description="Fewest pairs a promotion needs.")
    min_agreement: float = Field(description="Lowest agreement rate a promotion accepts.")
    max_latency_increase: float = Field(
        description="Highest relative increase of p99 latency a promotion accepts (0.2: 20%)."
    )
    recommendation: Literal["promote", "do_not_promote"] = Field(
        description="'promote' only when every check passed."
    )
    reasons: list[str] = Field(description="Why: each check and how it went.")


def _output(record: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(record["captureData"]["endpointOutput"]["data"])
    return data


def compare(
    records: Iterable[Mapping[str, Any]],
    *,
    shadow_variant: str,
    tolerance: float = DEFAULT_TOLERANCE,
    min_pairs: int = DEFAULT_MIN_PAIRS,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_latency_increase: float = DEFAULT_MAX_LATENCY_INCREASE,
) -> ShadowComparison:
    """Compare ``shadow_variant``'s captured answers with the live answers they copy.

    Args:
        records: Captured records of the endpoint (any order; live, shadow and others).
        shadow_variant: The shadow variant's name.
        tolerance: Regression agreement tolerance (see the module docstring).
        min_pairs: Fewest pairs for a ``promote``.
        min_agreement: Lowest agreement rate for a ``promote``.
        max_latency_increase: Highest relative p99 latency increase for a ``promote``.
    """
    key = shadow_variant.lower()
    shadow: dict[str, Mapping[str, Any]] = {}
    live: dict[str, Mapping[str, Any]] = {}
    shadow_records = 0
    shadow_errors = 0
    shadow_model: str | None = None
    for record in records:
        meta = record["eventMetadata"]
        if meta.get("shadow"):
            if str(meta.get("variant") or "").lower() != key:
                continue
            shadow_records += 1
            shadow_model = f"{meta.get('modelName')} v{meta.get('modelVersion')}"
            if "error" in _output(record):
                shadow_errors += 1
            else:
                shadow[meta["eventId"]] = record
        else:
            live[meta["eventId"]] = record
    pairs = []
    for event_id, copy in shadow.items():
        original = live.get(event_id)
        if original is None:
            continue
        answer = _output(original)
        if "prediction" in answer:
            pairs.append((original, answer, copy, _output(copy)))
    unpaired = len(shadow) - len(pairs)
    classification = any(a.get("classes") for _, a, _, _ in pairs)
    task: Literal["classification", "regression", "unknown"] = (
        "unknown" if not pairs else "classification" if classification else "regression"
    )
    agreements = 0
    diffs: list[float] = []
    confusion: Counter[tuple[str, str]] = Counter()
    labels: dict[str, Any] = {}
    for _, mine, _, theirs in pairs:
        a, b = mine["prediction"], theirs["prediction"]
        if classification:
            if a == b:
                agreements += 1
            else:
                pair = (json.dumps(a), json.dumps(b))
                confusion[pair] += 1
                labels[pair[0]], labels[pair[1]] = a, b
            pa, pb = mine.get("probabilities"), theirs.get("probabilities")
            if pa is not None and pb is not None and mine.get("classes") == theirs.get("classes"):
                diffs.append(max(abs(float(x) - float(y)) for x, y in zip(pa, pb, strict=True)))
        else:
            diff = abs(float(a) - float(b))
            diffs.append(diff)
            if diff <= tolerance * max(1.0, abs(float(a))):
                agreements += 1
    rate = agreements / len(pairs) if pairs else None
    scores = None
    if diffs:
        values = np.asarray(diffs, dtype=np.float64)
        p50, p90, p99 = (float(v) for v in np.quantile(values, [0.5, 0.9, 0.99]))
        scores = ScoreDifferences(
            mean_abs=float(values.mean()), max_abs=float(values.max()), p50=p50, p90=p90, p99=p99
        )
    live_latency = _latency(original for original, _, _, _ in pairs)
    shadow_latency = _latency(copy for _, _, copy, _ in pairs)
    live_variants = sorted({str(o["eventMetadata"].get("variant")) for o, _, _, _ in pairs})
    live_models = sorted(
        {
            f"{o['eventMetadata'].get('modelName')} v{o['eventMetadata'].get('modelVersion')}"
            for o, _, _, _ in pairs
        }
    )
    reasons, promote = _verdict(
        len(pairs),
        shadow_records,
        shadow_errors,
        rate,
        live_latency,
        shadow_latency,
        min_pairs=min_pairs,
        min_agreement=min_agreement,
        max_latency_increase=max_latency_increase,
    )
    return ShadowComparison(
        shadow_variant=shadow_variant,
        shadow_model=shadow_model,
        live_variants=live_variants,
        live_models=live_models,
        task=task,
        pairs=len(pairs),
        shadow_records=shadow_records,
        shadow_errors=shadow_errors,
        unpaired=unpaired,
        agreements=agreements,
        agreement_rate=rate,
        tolerance=tolerance,
        score_differences=scores,
        disagreements=[
            Disagreement(live=labels[a], shadow=labels[b], count=n)
            for (a, b), n in confusion.most_common(MAX_DISAGREEMENTS)
        ],
        live_latency=live_latency,
        shadow_latency=shadow_latency,
        min_pairs=min_pairs,
        min_agreement=min_agreement,
        max_latency_increase=max_latency_increase,
        recommendation="promote" if promote else "do_not_promote",
        reasons=reasons,
    )


def _latency(records: Iterable[Mapping[str, Any]]) -> LatencySummary:
    values = [
        float(r["eventMetadata"]["latencyMs"])
        for r in records
        if r["eventMetadata"].get("latencyMs") is not None
    ]
    if not values:
        return LatencySummary(n=0, p50_ms=None, p99_ms=None)
    p50, p99 = (float(v) for v in np.quantile(np.asarray(values), [0.5, 0.99]))
    return LatencySummary(n=len(values), p50_ms=p50, p99_ms=p99)


def _verdict(
    pairs: int,
    shadow_records: int,
    shadow_errors: int,
    rate: float | None,
    live: LatencySummary,
    shadow: LatencySummary,
    *,
    min_pairs: int,
    min_agreement: float,
    max_latency_increase: float,
) -> tuple[list[str], bool]:
    reasons: list[str] = []
    ok = True
    if pairs < min_pairs:
        ok = False
        reasons.append(f"Only {pairs} pairs were captured; at least {min_pairs} are needed.")
    else:
        reasons.append(f"{pairs} pairs compared (at least {min_pairs} needed).")
    if shadow_errors:
        ok = False
        reasons.append(f"The shadow failed {shadow_errors} of {shadow_records} copies.")
    else:
        reasons.append(f"The shadow answered all {shadow_records} copies.")
    if rate is not None:
        if rate < min_agreement:
            ok = False
            reasons.append(f"Agreement {rate:.2%} is below the {min_agreement:.2%} required.")
        else:
            reasons.append(f"Agreement {rate:.2%} meets the {min_agreement:.2%} required.")
    if live.p99_ms is not None and shadow.p99_ms is not None:
        limit = live.p99_ms * (1 + max_latency_increase)
        if shadow.p99_ms > limit:
            ok = False
            reasons.append(
                f"The shadow's p99 latency {shadow.p99_ms:.3g} ms is above {limit:.3g} ms "
                f"(live p99 {live.p99_ms:.3g} ms + {max_latency_increase:.0%})."
            )
        else:
            reasons.append(
                f"The shadow's p99 latency {shadow.p99_ms:.3g} ms is within {limit:.3g} ms "
                f"(live p99 {live.p99_ms:.3g} ms + {max_latency_increase:.0%})."
            )
    return reasons, ok
