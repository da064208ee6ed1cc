"""Schemas of the monitoring stage that cross a boundary: the drift report and the baseline.

Two families:

* :class:`DriftReport` / :class:`ColumnDrift` — the per-column drift report (Evidently-style
  choice of test, ``../shared/reference/anchors.md`` B3), serialised with ``model_dump_json()``.
* :class:`DatasetStatistics`, :class:`BaselineConstraints`, :class:`Violation` — modelled on
  SageMaker Model Monitor's ``statistics.json``, ``constraints.json`` and
  ``constraint_violations.json`` (anchors B2). Differences from Model Monitor are listed in
  :mod:`civicml.monitoring.constraints`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "BaselineConstraints",
    "CategoricalBucket",
    "CategoryShare",
    "ColumnDrift",
    "ColumnKind",
    "CommonStatistics",
    "DatasetStatistics",
    "DistributionConstraints",
    "DriftReport",
    "DriftVerdict",
    "FeatureConstraints",
    "FeatureStatistics",
    "Histogram",
    "InferredType",
    "KllBucket",
    "MonitoringConfig",
    "NumericalStatistics",
    "StatTestName",
    "StringStatistics",
    "Violation",
    "ViolationType",
]

ColumnKind = Literal["numeric", "categorical"]
DriftVerdict = Literal["drift", "no_drift", "insufficient_data"]
StatTestName = Literal["ks", "wasserstein", "chisquare", "z", "jensenshannon", "psi"]
InferredType = Literal["Integral", "Fractional", "String", "Unknown"]
ViolationType = Literal[
    "data_type_check",
    "completeness_check",
    "baseline_drift_check",
    "missing_column_check",
    "extra_column_check",
    "categorical_values_check",
]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------
# Drift report
# --------------------------------------------------------------------------------------


class Histogram(_Schema):
    """Shares of each frame in equal-width bins over the combined range (for plots)."""

    edges: list[float] = Field(description="Bin edges, one more than the number of bins.")
    reference_share: list[float] = Field(description="Share of reference values in each bin.")
    current_share: list[float] = Field(description="Share of current values in each bin.")


class CategoryShare(_Schema):
    """Share of one category in each frame (for plots)."""

    value: str = Field(description="The category, as text.")
    reference_share: float = Field(description="Share of non-missing reference values.")
    current_share: float = Field(description="Share of non-missing current values.")


class ColumnDrift(_Schema):
    """Drift verdict of one column, e.g. ``age``: Wasserstein 0.31 ≥ 0.1 → drifted."""

    column: str = Field(description="Column name.")
    kind: ColumnKind = Field(description="How the column was treated: 'numeric' or 'categorical'.")
    stattest: StatTestName = Field(
        description="Test used (Evidently's names): 'ks', 'wasserstein', 'chisquare', 'z', "
        "'jensenshannon' or 'psi'."
    )
    stattest_label: str = Field(description="Human-readable name of the test.")
    statistic: float | None = Field(
        description="The test's own value: KS D, chi-squared statistic, z, normed Wasserstein "
        "distance, Jensen-Shannon distance or PSI; null when the column could not be tested."
    )
    p_value: float | None = Field(
        description="p-value for the hypothesis tests (ks, chisquare, z); null for distances."
    )
    drift_score: float | None = Field(
        description="The value compared with the threshold, as Evidently's drift_score: the "
        "p-value for hypothesis tests, the distance otherwise."
    )
    threshold: float = Field(description="Threshold applied to drift_score.")
    drift_detected: bool | None = Field(
        description="True when drift_score crosses the threshold: p ≤ threshold for ks, "
        "p < threshold for chisquare and z, distance ≥ threshold otherwise; null when the "
        "column was not judged (see note): too few rows or values, or none at all."
    )
    psi: float | None = Field(
        description="Population Stability Index (Evidently binning), computed for every column."
    )
    n_unique: int = Field(description="Distinct non-missing values over reference | current.")
    reference_count: int = Field(description="Non-missing, finite reference values tested.")
    current_count: int = Field(description="Non-missing, finite current values tested.")
    missing_share_reference: float = Field(description="Share of missing values in reference.")
    missing_share_current: float = Field(description="Share of missing values in current.")
    type_violations: int = Field(
        description="Current values present but not castable to the reference column's type."
    )
    note: str | None = Field(
        default=None, description="Why the column was not tested or not judged, if so."
    )
    histogram: Histogram | None = Field(
        default=None, description="Numeric columns: binned shares for the report's plot."
    )
    top_values: list[CategoryShare] | None = Field(
        default=None, description="Categorical columns: the most frequent values, for the plot."
    )


class DriftReport(_Schema):
    """Dataset drift report: per-column verdicts, the overall verdict and constraint violations."""

    reference_rows: int = Field(description="Rows in the reference (baseline) frame.")
    current_rows: int = Field(description="Rows in the current frame.")
    columns: list[ColumnDrift] = Field(description="One entry per compared column.")
    n_columns: int = Field(description="Number of columns compared.")
    n_drifted: int = Field(description="Number of columns with drift_detected.")
    share_drifted: float = Field(description="n_drifted / n_columns.")
    drift_share: float = Field(
        description="Dataset drift is declared when share_drifted ≥ this (Evidently's 0.5)."
    )
    dataset_drift: bool = Field(description="True when verdict is 'drift'.")
    verdict: DriftVerdict = Field(
        default=None,  # filled from dataset_drift by _verdict (reports stored before it existed)
        validate_default=True,
        description="'drift' when share_drifted ≥ drift_share; 'no_drift'; "
        "'insufficient_data' when either frame has fewer than min_rows rows (no column judged).",
    )
    min_rows: int | None = Field(
        default=None,
        description="Fewest rows each frame needed for a verdict (setting drift_min_rows); "
        "null in reports made before the floor existed.",
    )
    insufficient_data: str | None = Field(
        default=None,
        description="Why there is no verdict, e.g. 'Only 4 current rows (at least 30 needed for "
        "a drift verdict)'; null when there is one.",
    )
    violations: list[Violation] = Field(
        description="Model Monitor style constraint violations of current vs. the reference "
        "(without baseline_drift_check when the data is insufficient)."
    )

    @field_validator("verdict", mode="before")
    @classmethod
    def _verdict(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return "drift" if info.data.get("dataset_drift") else "no_drift"
        return value


# --------------------------------------------------------------------------------------
# Model Monitor style statistics.json / constraints.json / constraint_violations.json
# --------------------------------------------------------------------------------------


class CommonStatistics(_Schema):
    """``common`` block of a feature's statistics."""

    num_present: int = Field(description="Non-missing values.")
    num_missing: int = Field(description="Missing values.")


class KllBucket(_Schema):
    """One of the 10 equal-width histogram buckets of a numeric feature."""

    lower_bound: float = Field(description="Inclusive lower bound.")
    upper_bound: float = Field(description="Upper bound (inclusive for the last bucket).")
    count: int = Field(description="Values in the bucket.")


class NumericalStatistics(_Schema):
    """``numerical_statistics`` of a feature (values castable to numbers)."""

    common: CommonStatistics = Field(description="Present/missing counts.")
    mean: float = Field(description="Mean of the numeric values.")
    sum: float = Field(description="Sum of the numeric values.")
    std_dev: float = Field(description="Population standard deviation.")
    min: float = Field(description="Minimum.")
    max: float = Field(description="Maximum.")
    buckets: list[KllBucket] = Field(
        description="10 equal-width buckets (Model Monitor: distribution.kll.buckets)."
    )
    quantiles: list[float] = Field(
        description="Exact quantiles at 1001 evenly spaced ranks 0, 0.001, …, 1; civicml's "
        "stand-in for Model Monitor's KLL sketch, used for the L-infinity distance."
    )


class CategoricalBucket(_Schema):
    """One category and its count."""

    value: str = Field(description="The category, as text.")
    count: int = Field(description="Occurrences.")


class StringStatistics(_Schema):
    """``string_statistics`` of a feature."""

    common: CommonStatistics = Field(description="Present/missing counts.")
    distinct_count: int = Field(description="Distinct non-missing values.")
    buckets: list[CategoricalBucket] = Field(
        description="Most frequent categories, up to 1,000 (distribution.categorical.buckets)."
    )


class FeatureStatistics(_Schema):
    """Statistics of one feature, as one entry of ``statistics.json``'s ``features``."""

    name: str = Field(description="Column name.")
    inferred_type: InferredType = Field(
        description="Integral, Fractional, String or Unknown (all missing)."
    )
    type_counts: dict[str, int] = Field(
        description="Present values per value type (Integral/Fractional/String); civicml "
        "addition used by data_type_check."
    )
    numerical_statistics: NumericalStatistics | None = Field(
        default=None, description="Present when some values are numeric."
    )
    string_statistics: StringStatistics | None = Field(
        default=None, description="Present when inferred_type is String."
    )


class DatasetStatistics(_Schema):
    """``statistics.json``: ``{version: 0, dataset: {item_count}, features: [...]}``."""

    version: int = Field(default=0, description="Format version (Model Monitor: 0).")
    item_count: int = Field(description="Rows (Model Monitor: dataset.item_count).")
    features: list[FeatureStatistics] = Field(description="One entry per column.")


class FeatureConstraints(_Schema):
    """Constraints of one feature, as one entry of ``constraints.json``'s ``features``."""

    name: str = Field(description="Column name.")
    inferred_type: InferredType = Field(description="Type the current values must have.")
    completeness: float = Field(description="Non-missing share the current data must reach.")
    is_non_negative: bool | None = Field(
        default=None,
        description="num_constraints.is_non_negative: recorded as Model Monitor does; no "
        "violation type checks it.",
    )
    domains: list[str] | None = Field(
        default=None, description="string_constraints.domains: allowed categories."
    )


class DistributionConstraints(_Schema):
    """``monitoring_config.distribution_constraints``."""

    perform_comparison: Literal["Enabled", "Disabled"] = Field(
        default="Enabled", description="Run baseline_drift_check."
    )
    comparison_threshold: float = Field(
        default=0.1, description="Numeric features drift when the distance exceeds this."
    )
    comparison_method: Literal["Simple", "Robust"] = Field(
        default="Robust", description="Simple = linf_simple, Robust = linf_robust."
    )
    categorical_comparison_threshold: float = Field(
        default=0.1, description="Categorical features drift when the distance exceeds this."
    )
    categorical_drift_method: Literal["LInfinity"] = Field(
        default="LInfinity", description="Only LInfinity is implemented (not ChiSquared)."
    )
    robust_c_alpha: float = Field(
        default=1.8, description="c(alpha) of linf_robust; Deequ's default 1.8 (alpha ≈ 0.003)."
    )


class MonitoringConfig(_Schema):
    """``monitoring_config`` of ``constraints.json``."""

    evaluate_constraints: Literal["Enabled", "Disabled"] = Field(
        default="Enabled", description="Check the constraints at all."
    )
    datatype_check_threshold: float = Field(
        default=0.1, description="data_type_check fires above this share of mistyped values."
    )
    domain_content_threshold: float = Field(
        default=0.1, description="categorical_values_check fires above this unknown share."
    )
    distribution_constraints: DistributionConstraints = Field(
        default_factory=DistributionConstraints, description="baseline_drift_check settings."
    )


class BaselineConstraints(_Schema):
    """``constraints.json``: ``{version: 0, features: [...], monitoring_config: {...}}``."""

    version: int = Field(default=0, description="Format version (Model Monitor: 0).")
    features: list[FeatureConstraints] = Field(description="One entry per baseline column.")
    monitoring_config: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="Thresholds and methods."
    )


class Violation(_Schema):
    """One entry of ``constraint_violations.json``'s ``violations``."""

    feature_name: str = Field(description="Column the violation is about.")
    constraint_check_type: ViolationType = Field(description="Which check fired.")
    description: str = Field(description="What was expected and what was observed.")


DriftReport.model_rebuild()
