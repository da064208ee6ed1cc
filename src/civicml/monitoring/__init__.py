"""Monitoring: data drift reports and Model Monitor style baselines.

``drift_report(reference, current)`` compares two pandas DataFrames column by column with the
test Evidently would choose for the column's type and the reference size (KS / Wasserstein for
numbers, chi-squared / Z / Jensen-Shannon for categories, PSI for all), plus missing values,
type violations and Model Monitor style constraint violations (``suggest_baseline``,
``check_constraints``). ``render_html(report)`` writes a self-contained HTML page.

``MonitoringService(ctx).drift(project, current=(name, version), baseline=(name, version))``
runs that engine on two dataset versions and stores the result as a :class:`Report`: the JSON
and HTML files in the artifact store, a row, lineage edges from both dataset versions and a
``report.created`` audit event.
"""

from civicml.monitoring.constraints import (
    check_constraints,
    compute_statistics,
    linf_robust,
    suggest_baseline,
    suggest_constraints,
)
from civicml.monitoring.drift import DriftInputError, drift_report
from civicml.monitoring.records import (
    DatasetVersionRef,
    Report,
    ReportInputs,
    ReportSummary,
)
from civicml.monitoring.report_html import render_html
from civicml.monitoring.schemas import (
    BaselineConstraints,
    ColumnDrift,
    DatasetStatistics,
    DriftReport,
    Violation,
)
from civicml.monitoring.service import MonitoringService

__all__ = [
    "BaselineConstraints",
    "ColumnDrift",
    "DatasetStatistics",
    "DatasetVersionRef",
    "DriftInputError",
    "DriftReport",
    "MonitoringService",
    "Report",
    "ReportInputs",
    "ReportSummary",
    "Violation",
    "check_constraints",
    "compute_statistics",
    "drift_report",
    "linf_robust",
    "render_html",
    "suggest_baseline",
    "suggest_constraints",
]
