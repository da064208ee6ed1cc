"""``ml.costs``: the cost report and budgets, embedded or remote; metering a run's work.

``ml.costs.report(project=..., by="pipeline")`` answers the :class:`CostReport` that
``civicml costs --json`` prints and ``GET /api/v1/projects/{project}/costs`` returns;
``ml.costs.set_budget(project, amount=...)`` sets a monthly budget (``members.write``).

:func:`metered` is how ``cm.train.*`` and tuning trials measure their work and record it on
their run (docs/costs.md): in this process, and sent to the server when remote.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from civicml.core.errors import CivicMLError
from civicml.costs.meter import METER, Measurement, Usage
from civicml.costs.schemas import BudgetStatus, CostReport, GroupBy, RunUsage

__all__ = ["CostsHandle", "metered", "metering", "metering_trial", "record_usage"]

log = logging.getLogger("civicml.costs")
_local = threading.local()
_ANY = object()  # an enclosing meter records the block's run once it knows it (a trial)
P = ParamSpec("P")
R = TypeVar("R")


class CostsHandle:
    """Cost reports and budgets (``ml.costs``)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def _service(self) -> Any:
        from civicml.costs.service import CostService

        return CostService(self._backend.ctx)

    def report(
        self,
        project: str | None = None,
        *,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
        by: GroupBy = "project",
    ) -> CostReport:
        """Usage and cost from ``since`` (default: the start of this month) to ``until``
        (default: now), one row per run, pipeline execution, endpoint or project.

        Example:
            >>> ml.costs.report("benefits", by="pipeline").total.cost  # doctest: +SKIP
            0.42
        """
        start, end = _moment(since), _moment(until)
        if self._backend.remote:
            params = _params(start, end, by)
            if project is None:
                return CostReport.model_validate(
                    self._backend._json("GET", "/api/v1/costs", params=params)
                )
            path = f"/api/v1/projects/{quote(project, safe='')}/costs"
            return CostReport.model_validate(self._backend._json("GET", path, params=params))
        return self._service().report(project, since=start, until=end, by=by)  # type: ignore[no-any-return]

    def report_html(
        self,
        project: str,
        *,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
        by: GroupBy = "project",
    ) -> str:
        """:meth:`report` as a self-contained HTML page with a bar chart."""
        start, end = _moment(since), _moment(until)
        if self._backend.remote:
            path = f"/api/v1/projects/{quote(project, safe='')}/costs.html"
            return str(self._backend.call("GET", path, params=_params(start, end, by)).text)
        return self._service().report_html(project, since=start, until=end, by=by)  # type: ignore[no-any-return]

    def budget(self, project: str) -> BudgetStatus | None:
        """The project's budget and this month's spend against it, or ``None``."""
        if self._backend.remote:
            data = self._backend._json("GET", _budget_path(project))
            return None if data is None else BudgetStatus.model_validate(data)
        return self._service().get_budget(project)  # type: ignore[no-any-return]

    def set_budget(
        self,
        project: str,
        *,
        amount: float,
        warn_fraction: float = 0.8,
        hard_stop: bool = False,
    ) -> BudgetStatus:
        """Set the project's monthly budget (in the settings' currency); past
        ``warn_fraction`` of it a warning is logged and audited once a month; with
        ``hard_stop`` new runs and pipeline executions are refused once it is spent."""
        if self._backend.remote:
            body = {"amount": amount, "warn_fraction": warn_fraction, "hard_stop": hard_stop}
            return BudgetStatus.model_validate(
                self._backend._json("PUT", _budget_path(project), json_body=body)
            )
        return self._service().set_budget(  # type: ignore[no-any-return]
            project, amount=amount, warn_fraction=warn_fraction, hard_stop=hard_stop
        )

    def clear_budget(self, project: str) -> None:
        """Remove the project's budget."""
        if self._backend.remote:
            self._backend.call("DELETE", _budget_path(project))
            return
        self._service().clear_budget(project)


def record_usage(backend: Any, run_id: str, usage: Usage) -> None:
    """Add measured ``usage`` to run ``run_id`` (embedded: the ledger; remote: the server).

    A failure to record is logged, never raised: the work it measured has been done.
    """
    body = RunUsage(
        wall_s=usage.wall_s,
        cpu_s=usage.cpu_s,
        peak_memory_bytes=usage.peak_memory_bytes,
        memory_gb_s=usage.memory_gb_s,
        gpu_s=usage.gpu_s,
    )
    try:
        if backend.remote:
            backend.call(
                "POST",
                f"/api/v1/runs/{quote(run_id, safe='')}/usage",
                json_body=body.model_dump(mode="json"),
            )
        else:
            from civicml.tracking.usage import record_run_usage

            record_run_usage(backend.ctx, run_id, body)
    except CivicMLError as err:
        log.warning("could not record the usage of run %s: %s", run_id, err.message)


@contextlib.contextmanager
def metered(backend: Any, run_id: str) -> Iterator[Measurement | None]:
    """Measure the block's work and record it on run ``run_id`` when it ends (raised or not).

    Inside a block already metering the same run (a tuning trial around ``cm.train.tabular``)
    it does nothing, so the run is recorded once.
    """
    if getattr(_local, "run_id", None) in (run_id, _ANY):
        yield METER.current()
        return
    outer = getattr(_local, "run_id", None)
    _local.run_id = run_id
    measurement = METER.start()
    try:
        yield measurement
    finally:
        usage = METER.end(measurement)
        _local.run_id = outer
        record_usage(backend, run_id, usage)


def metering(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function taking ``run=`` (a :class:`~civicml.sdk.client.RunHandle`) so its
    work is measured and recorded on that run (``cm.train.tabular``, ``cm.train.script``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        run: Any = kwargs.get("run")
        if run is None or not hasattr(run, "_backend"):
            return fn(*args, **kwargs)
        with metered(run._backend, run.id):
            return fn(*args, **kwargs)

    return wrapper


def metering_trial(fn: Callable[..., R]) -> Callable[..., R]:
    """Decorate a tuning trial ``(self, backend, frame, ctx)``: its whole work (the LightGBM
    probe included) is recorded on the run it starts (``ctx.run_id``), once."""

    @functools.wraps(fn)
    def wrapper(self: Any, backend: Any, frame: Any, ctx: Any) -> R:
        outer = getattr(_local, "run_id", None)
        _local.run_id = _ANY
        measurement = METER.start()
        try:
            return fn(self, backend, frame, ctx)
        finally:
            usage = METER.end(measurement)
            _local.run_id = outer
            if getattr(ctx, "run_id", None):
                record_usage(backend, ctx.run_id, usage)

    return wrapper


def _moment(value: date | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day)


def _params(since: datetime | None, until: datetime | None, by: str) -> dict[str, str]:
    params = {"by": by}
    if since is not None:
        params["since"] = since.isoformat()
    if until is not None:
        params["until"] = until.isoformat()
    return params


def _budget_path(project: str) -> str:
    return f"/api/v1/projects/{quote(project, safe='')}/budget"
