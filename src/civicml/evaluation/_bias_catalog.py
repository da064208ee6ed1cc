"""Name, formula, range and reading of every SageMaker Clarify bias metric (anchors.md B1).

Notation as in Clarify's documentation: facet *d* is the facet value analysed (the possibly
disfavoured group), facet *a* every other row; ``n_x`` rows of facet x, ``n_x(1)`` / ``n_x(0)``
observed positive / negative labels, ``n'_x(1)`` / ``n'_x(0)`` predicted positive / negative
labels, ``TP/FP/TN/FN`` per facet. Clarify's sign convention: a difference is written so that a
positive value points at facet d being worse off (``q_a - q_d``, ``r_d - r_a``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOG", "MetricInfo"]


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """How a metric is defined and read."""

    name: str
    description: str
    interpretation: str
    range: str
    parity: float = 0.0


_POS_D_WORSE = "positive means facet d is disadvantaged, negative that facet a is"

CATALOG: dict[str, MetricInfo] = {
    # --- pre-training (observed labels) -----------------------------------------------------
    "CI": MetricInfo(
        "Class Imbalance",
        "CI = (n_a - n_d) / (n_a + n_d)",
        "0 = both facets equally represented; positive means facet d has fewer rows than "
        "facet a (under-represented), negative that it has more.",
        "[-1, 1]",
    ),
    "DPL": MetricInfo(
        "Difference in Proportions of Labels",
        "DPL = q_a - q_d, q_x = n_x(1) / n_x",
        f"0 = demographic parity in the labels; {_POS_D_WORSE} (fewer positive labels).",
        "[-1, 1]",
    ),
    "KL": MetricInfo(
        "Kullback-Leibler Divergence",
        "KL = Σ_y P_a(y) · ln(P_a(y) / P_d(y)) over the positive/negative label (nats)",
        "0 = same label distribution in both facets; larger means the label distribution of "
        "facet a diverges more from that of facet d.",
        "[0, ∞)",
    ),
    "JS": MetricInfo(
        "Jensen-Shannon Divergence",
        "JS = ½ [KL(P_a ‖ P) + KL(P_d ‖ P)], P = ½ (P_a + P_d)",
        "0 = same label distribution in both facets; larger means more divergent (at most ln 2).",
        "[0, ln 2)",
    ),
    "LP": MetricInfo(
        "Lp-norm (p = 2)",
        "LP = (Σ_y |P_a(y) - P_d(y)|²)^½",
        "0 = same label distribution in both facets; larger means more different.",
        "[0, √2)",
    ),
    "TVD": MetricInfo(
        "Total Variation Distance",
        "TVD = ½ Σ_y |P_a(y) - P_d(y)|",
        "0 = same label distribution in both facets; larger means more different.",
        "[0, 1)",
    ),
    "KS": MetricInfo(
        "Kolmogorov-Smirnov",
        "KS = max_y |P_a(y) - P_d(y)|",
        "0 = same label distribution in both facets; larger means more different.",
        "[0, 1]",
    ),
    "CDDL": MetricInfo(
        "Conditional Demographic Disparity in Labels",
        "CDDL = (1/n) Σ_i n_i · DD_i over the strata i of the group column, "
        "DD_i = n_d(0)/n(0) - n_d(1)/n(1) within stratum i",
        "0 = no disparity once the group is accounted for; positive means facet d holds a "
        "larger share of the rejections than of the acceptances (disadvantaged), negative the "
        "reverse.",
        "[-1, 1]",
    ),
    # --- post-training (predicted labels) ---------------------------------------------------
    "DPPL": MetricInfo(
        "Difference in Positive Proportions in Predicted Labels",
        "DPPL = q'_a - q'_d, q'_x = n'_x(1) / n_x",
        f"0 = demographic parity in predictions; {_POS_D_WORSE} (fewer positive predictions).",
        "[-1, 1]",
    ),
    "DI": MetricInfo(
        "Disparate Impact",
        "DI = q'_d / q'_a",
        "1 = parity; below 1 means facet d gets positive predictions less often than facet a "
        "(below 0.8 fails the four-fifths rule), above 1 more often.",
        "[0, ∞)",
        parity=1.0,
    ),
    "DCAcc": MetricInfo(
        "Difference in Conditional Acceptance",
        "DCAcc = c_a - c_d, c_x = n_x(1) / n'_x(1) (Clarify code DCA)",
        "0 = the model accepts both facets in the same proportion to their observed "
        "acceptances; positive means facet d is accepted more generously relative to its "
        "labels than facet a, negative that facet d is accepted less than its labels justify.",
        "(-∞, ∞)",
    ),
    "DAR": MetricInfo(
        "Difference in Acceptance Rates",
        "DAR = TP_a/(TP_a + FP_a) - TP_d/(TP_d + FP_d) (precision gap)",
        "0 = equal precision; positive means the positive predictions for facet d are less "
        "often right (more false acceptances) than for facet a, negative the reverse.",
        "[-1, 1]",
    ),
    "DRR": MetricInfo(
        "Difference in Rejection Rates",
        "DRR = TN_d/(TN_d + FN_d) - TN_a/(TN_a + FN_a) (negative-predictive-value gap)",
        "0 = equal rejection precision; negative means the rejections of facet d are less "
        "often right (more wrongly rejected members) than those of facet a, positive the "
        "reverse.",
        "[-1, 1]",
    ),
    "AD": MetricInfo(
        "Accuracy Difference",
        "AD = ACC_a - ACC_d, ACC = (TP + TN) / (TP + TN + FP + FN)",
        "0 = equal accuracy; positive means the model is less accurate for facet d, negative "
        "less accurate for facet a.",
        "[-1, 1]",
    ),
    "RD": MetricInfo(
        "Recall Difference",
        "RD = TP_a/(TP_a + FN_a) - TP_d/(TP_d + FN_d) (true-positive-rate gap)",
        "0 = equal opportunity; positive means qualified members of facet d are accepted less "
        "often than qualified members of facet a (d disadvantaged), negative the reverse.",
        "[-1, 1]",
    ),
    "SD": MetricInfo(
        "Specificity Difference",
        "SD = TN_d/(TN_d + FP_d) - TN_a/(TN_a + FP_a) (true-negative-rate gap)",
        "0 = equal specificity; positive means unqualified members of facet a are accepted "
        "more often than those of facet d (a favoured), negative the reverse.",
        "[-1, 1]",
    ),
    "DCR": MetricInfo(
        "Difference in Conditional Rejection",
        "DCR = r_d - r_a, r_x = n_x(0) / n'_x(0)",
        "0 = the model rejects both facets in the same proportion to their observed "
        "rejections; negative means facet d is rejected more than its labels justify relative "
        "to facet a, positive that facet a is.",
        "(-∞, ∞)",
    ),
    "TE": MetricInfo(
        "Treatment Equality",
        "TE = FN_d/FP_d - FN_a/FP_a",
        "0 = the same ratio of false negatives to false positives in both facets; positive "
        "means the errors for facet d lean more towards wrong rejections than for facet a.",
        "(-∞, ∞)",
    ),
    "CDDPL": MetricInfo(
        "Conditional Demographic Disparity in Predicted Labels",
        "CDDPL = (1/n) Σ_i n_i · DDPL_i, DDPL_i = n'_d(0)/n'(0) - n'_d(1)/n'(1) in stratum i",
        "0 = no disparity in predictions once the group is accounted for; positive means "
        "facet d holds a larger share of the predicted rejections than of the predicted "
        "acceptances (disadvantaged).",
        "[-1, 1]",
    ),
    "FT": MetricInfo(
        "Counterfactual Fliptest",
        "FT = (F⁺ - F⁻) / n_d; F⁺ = facet d members predicted negative whose k nearest facet a "
        "neighbours (k = 5, or 1 when n_a ≤ 9) were predicted positive, F⁻ the converse",
        f"0 = facet d treated like its nearest neighbours in facet a; {_POS_D_WORSE}.",
        "[-1, 1]",
    ),
    "GE": MetricInfo(
        "Generalized Entropy (alpha = 2)",
        "GE = 1/(2n) Σ_i [(b_i / b̄)² - 1], b_i = ŷ_i - y_i + 1 (over all rows)",
        "0 = every row gets the same benefit from the model; larger means benefits are spread "
        "more unequally. It does not depend on the facet.",
        "[0, ∞) (half the squared coefficient of variation of b)",
    ),
}
