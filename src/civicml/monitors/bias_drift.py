"""Bias drift: Clarify's post-training bias metrics on a window of captured predictions with
ground truth, judged against allowed ranges as Clarify's bias-drift monitor judges them.

For each range A (a metric on a facet, every facet value or one) the window's value v comes
from the bias engine (:func:`civicml.evaluation.bias.posttraining_bias`) on the labeled records.
A small window gives a noisy v, so it gets a **normal bootstrap confidence interval**
``C = v ± z·sd`` (sd of v over ``bootstrap`` seeded resamples of the rows with replacement, z of
the ``confidence`` level): a violation is recorded only when C and A do not meet (anchors B2).
A value the engine leaves undefined (a facet value with no rows in a resample, a zero
denominator) is not judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.evaluation.bias import posttraining_bias
from civicml.evaluation.schemas import POSTTRAINING_CODES, BiasReport
from civicml.monitors.schemas import BiasCheck, BiasDriftConstraints, MonitorViolation

__all__ = ["BiasFinding", "bias_values", "judge_bias", "policy_checks"]

LABEL, PREDICTED = "__civicml_label__", "__civicml_predicted__"


@dataclass(frozen=True, slots=True)
class BiasFinding:
    """One metric on one facet value in a window, with its interval and verdict."""

    metric: str
    facet: str
    facet_value: str
    value: float | None
    low: float | None
    high: float | None
    allowed: str
    violated: bool

    @property
    def key(self) -> str:
        """``"DPPL sex=female"``."""
        return f"{self.metric} {self.facet}={self.facet_value}"


def policy_checks(policy: dict[str, Any] | None) -> list[BiasCheck]:
    """The post-training ``[[bias]]`` rules of an approval policy as ranges (pre-training
    metrics describe data, not the model's answers, and are left out)."""
    if not policy:
        return []
    found = []
    for rule in policy.get("bias") or []:
        if isinstance(rule, dict) and rule.get("metric") in POSTTRAINING_CODES:
            found.append(BiasCheck.model_validate(rule))
    return found


def bias_values(
    frame: pd.DataFrame, facets: Sequence[str], codes: Sequence[str], positive: Any
) -> dict[tuple[str, str, str], float | None]:
    """``(metric, facet, facet value) -> value`` of the post-training metrics of ``frame``
    (columns :data:`LABEL` and :data:`PREDICTED` hold class labels)."""
    out: dict[tuple[str, str, str], float | None] = {}
    for facet in facets:
        report: BiasReport = posttraining_bias(
            frame,
            label=LABEL,
            positive_label=[positive],
            facet=facet,
            predicted=PREDICTED,
            metrics=list(codes),
        )
        for result in report.facets:
            for metric in result.metrics:
                out[(metric.code, facet, result.facet_value)] = metric.value
    return out


def judge_bias(
    frame: pd.DataFrame,
    constraints: BiasDriftConstraints,
    positive: Any,
    *,
    seed: int = 0,
) -> tuple[list[BiasFinding], list[MonitorViolation]]:
    """Every check of ``constraints`` on ``frame``, with bootstrap intervals.

    Raises:
        InvalidInputError: A facet is not a column of the data, or has too many values.
    """
    from scipy.stats import norm  # type: ignore[import-untyped]

    for check in constraints.checks:
        if check.facet not in frame.columns:
            raise InvalidInputError(
                f"Facet {check.facet!r} is not in the captured inputs or the ground truth.",
                hint="Upload it with the labels as an attribute column (e.g. a 'sex' column "
                "next to inference_id and label).",
            )
    facets = list(dict.fromkeys(c.facet for c in constraints.checks))
    codes = sorted({c.metric for c in constraints.checks})
    values = bias_values(frame, facets, codes, positive)
    samples: dict[tuple[str, str, str], list[float]] = {key: [] for key in values}
    rng = np.random.default_rng(seed)
    n = len(frame)
    for _ in range(constraints.bootstrap):
        resample = frame.iloc[rng.integers(0, n, n)].reset_index(drop=True)
        try:
            found = bias_values(resample, facets, codes, positive)
        except InvalidInputError:  # a facet or label value vanished from this resample
            continue
        for key, value in found.items():
            if key in samples and value is not None and math.isfinite(value):
                samples[key].append(value)
    z = float(norm.ppf(0.5 + constraints.confidence / 2))
    findings: list[BiasFinding] = []
    violations: list[MonitorViolation] = []
    for check in constraints.checks:
        low_ok, high_ok = check.interval()
        for (code, facet, facet_value), value in sorted(values.items()):
            if code != check.metric or facet != check.facet:
                continue
            if check.value is not None and facet_value != check.value:
                continue
            if value is None:
                findings.append(
                    BiasFinding(code, facet, facet_value, None, None, None, check.describe(), False)
                )
                continue
            spread = samples[(code, facet, facet_value)]
            sd = float(np.std(spread, ddof=1)) if len(spread) > 1 else 0.0
            low, high = value - z * sd, value + z * sd
            violated = high < low_ok or low > high_ok
            finding = BiasFinding(
                code, facet, facet_value, value, low, high, check.describe(), violated
            )
            findings.append(finding)
            if violated:
                violations.append(
                    MonitorViolation(
                        constraint_check_type="bias_drift_check",
                        metric_name=code,
                        facet=facet,
                        facet_value=facet_value,
                        value=value,
                        description=f"{finding.key} = {value:.4g} (interval {low:.4g} to "
                        f"{high:.4g} at {constraints.confidence:.0%}) is outside the allowed "
                        f"range {check.describe()}.",
                    )
                )
    return findings, violations
