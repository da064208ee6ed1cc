"""Cost accounting: measured usage of runs and endpoints, priced by the rate card; budgets.

Sits between governance and the stages: every stage records what its work used here
(:func:`~civicml.costs.meter.measure`, the usage ledger) and asks :func:`check_budget` before
new work starts; the report reads only the ledger and the artifact index (docs/costs.md).
"""

from civicml.costs.budgets import BudgetExceededError, check_budget
from civicml.costs.meter import Measurement, Usage, measure
from civicml.costs.schemas import Budget, BudgetState, BudgetStatus, CostLine, CostReport, RunUsage
from civicml.costs.service import CostService

__all__ = [
    "Budget",
    "BudgetExceededError",
    "BudgetState",
    "BudgetStatus",
    "CostLine",
    "CostReport",
    "CostService",
    "Measurement",
    "RunUsage",
    "Usage",
    "check_budget",
    "measure",
]
