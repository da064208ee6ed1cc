"""Guarded updates: shift an endpoint's traffic to a new version in baked steps, and roll back by
itself when an alarm fires (SageMaker's deployment guardrails, anchors.md B4).

A rollout is a row of ``endpoint_rollouts`` and a small state machine:

* **Start** (:meth:`RolloutService.start`, what ``civicml endpoints update --strategy …`` runs):
  the new version is checked (Approved, its approved files, its signature) and loaded *before*
  anything is committed; then, in one unit of work, the new variant gets the traffic of step 0,
  the rollout row records the strategy, the steps (percent of traffic on the new variant:
  ``all_at_once`` = [100], ``canary`` 10 % = [10, 100], ``linear`` 4 = [25, 50, 75, 100]), the
  bake time, the alarms, the weights of the variants it replaces and the new variant's counters
  at the start; the audit event ``endpoint.rollout_started`` and the lineage (model version →
  rollout → endpoint) commit with it.
* **Tick** (:meth:`RolloutService.tick`; a background thread of ``civicml server`` calls
  :meth:`RolloutService.tick_all` every ``rollout_interval_s``): the alarms are evaluated on the
  new variant's counters since the start (every serving process flushes its per-variant counters,
  :mod:`civicml.serving.stats`). An alarm that fires sends all traffic back to the old variants
  (``rolled_back``, with the alarm and its value as the reason); otherwise, once the current step
  has baked for ``bake_s``, the next step's weights are applied — or, after the last step, the
  old variants are removed (``succeeded``). Every transition is a compare-and-set on the row
  (``status = in_progress and current_step = k``) in the same unit of work as the weights, its
  audit event and its lineage node, so any number of processes may tick one rollout: exactly one
  applies each step, and a restarted server simply continues from the row.
* **Cancel**: as a rollback, by a person, with status ``cancelled``.

A weight change never fails a request: the serving process swaps its route in one assignment and
requests in flight finish on the model they started with (:mod:`civicml.serving.runtime`).

Alarms are strings: ``error_rate>0.01`` (4xx and 5xx over all requests), ``4xx_rate>…``,
``5xx_rate>…`` (a rate 0-1, or a percent such as ``1%``), ``p99_ms>50`` (the model's 99th
percentile latency) with ``>`` or ``>=``, and ``monitor:NAME``: the named monitor's latest status
through the hook :func:`set_monitor_status`, which the monitoring stage (or an agency's own code)
installs. Nothing to judge yet (no request, no monitor result) never fires an alarm.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError
from civicml.core.identity import Principal
from civicml.core.ids import new_id, validate_name
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.serving._deploy import (
    Deployer,
    default_variant_name,
    spec_of,
    variant_state,
    write_variants,
)
from civicml.serving._queries import endpoint_row, refuse_multi_model, variant_rows
from civicml.serving._tables import endpoint_rollouts, endpoints
from civicml.serving.rollout_plan import (
    MonitorStatus,
    alarm_text,
    monitor_status,
    parse_alarm,
    parse_duration,
    parse_percent,
    rollout_steps,
    set_monitor_status,
    step_weights,
)
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import (
    AlarmReading,
    RolloutInfo,
    RolloutStatus,
    RolloutStrategy,
    VariantRole,
    VariantStats,
)
from civicml.serving.stats import Totals, read_totals
from civicml.store.context import Context

__all__ = [
    "MonitorStatus",
    "RolloutService",
    "RolloutTicker",
    "parse_alarm",
    "parse_duration",
    "parse_percent",
    "rollout_steps",
    "rollouts_in_progress",
    "set_monitor_status",
    "step_weights",
]

log = logging.getLogger("civicml.serving.rollout")

_IN_PROGRESS = RolloutStatus.IN_PROGRESS.value
_LIVE = VariantRole.LIVE.value


# The service -----------------------------------------------------------------------------------
class RolloutService:
    """Starts, advances, reads and cancels the guarded updates of endpoints.

    Args:
        ctx: The stores, principal and clock every call runs with.
        host: The process's model host: new models load into it before a rollout starts, its
            counters are flushed before alarms are read, and its routes follow each step.
        monitor_status: The hook for ``monitor:NAME`` alarms (default: the one installed with
            :func:`set_monitor_status`).

    Example:
        >>> svc = RolloutService(ctx, host)  # doctest: +SKIP
        >>> svc.start("benefits", "eligibility", "eligibility", 4, strategy="canary",
        ...           canary_percent=10, bake_s=600, alarms=["p99_ms>50"])  # doctest: +SKIP
    """

    def __init__(
        self,
        ctx: Context,
        host: ModelHost | None = None,
        *,
        monitor_status: MonitorStatus | None = None,
    ) -> None:
        self._ctx = ctx
        self._host = host
        self._monitor_status = monitor_status
        self._projects = ProjectService(ctx)
        self._deployer = Deployer(ctx, host)
        #: Per rollout id: the alarm readings and counters its last tick here decided on.
        self.decided: dict[str, tuple[builtins.list[AlarmReading], Totals]] = {}

    # Starting ---------------------------------------------------------------------------------
    def start(
        self,
        project: str,
        endpoint: str,
        model_name: str,
        version: int | str,
        *,
        strategy: RolloutStrategy | str,
        canary_percent: float | str | None = None,
        linear_steps: int | None = None,
        bake_s: float | str = 600.0,
        alarms: Sequence[str] = (),
        variant: str | None = None,
    ) -> RolloutInfo:
        """Start moving ``endpoint``'s traffic to ``model_name`` ``version``.

        Args:
            project: Project name.
            endpoint: The endpoint.
            model_name: Registered model of the new version.
            version: Version number or alias (Approved).
            strategy: ``all_at_once``, ``canary`` or ``linear``.
            canary_percent: Canary size (default 10 %).
            linear_steps: Number of equal linear steps (default 4).
            bake_s: How long each step is watched: seconds or ``"10m"``.
            alarms: E.g. ``["p99_ms>50", "error_rate>0.01", "monitor:income-drift"]``.
            variant: Name of the new variant (default ``v<N>``; an existing live variant that
                already serves the version is reused).

        Raises:
            InvalidInputError: A bad strategy, size, bake time or alarm.
            NotFoundError: The project, endpoint, model or version does not exist.
            ConflictError: Another rollout is in progress, the version is not Approved, or it
                already takes all the traffic.
        """
        plan = self._plan(strategy, canary_percent, linear_steps, bake_s, alarms)
        if variant is not None:
            validate_name("Variant", variant)
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            refuse_multi_model(row, proj.name, "a guarded rollout")
            _refuse_second(conn, row, proj)
        mv, signature = self._deployer.deployable(proj, model_name, version)
        self._deployer.prepare(mv)
        self._flush()
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        rollout_id = new_id()
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint, lock=True)
            _refuse_second(uow.conn, row, proj)
            rows = variant_rows(uow.conn, row.id)
            target = _target(rows, mv.id, variant)
            created = target is None
            if target is None:
                taken = {r.name.lower() for r in rows}
                name = variant or default_variant_name(mv, row.model_name, taken)
                if name.lower() in taken:
                    raise ConflictError(
                        f"Endpoint {row.name!r} already has a variant {name!r} serving another "
                        "version.",
                        hint="Name the new variant otherwise (--variant NAME), or leave it out.",
                    )
            else:
                name = target.name
            old = {
                r.name: float(r.weight)
                for r in rows
                if r.role == _LIVE and r.name != name and float(r.weight) > 0
            }
            if not old:
                raise ConflictError(
                    f"Endpoint {row.name!r} already sends all its traffic to {mv.name} "
                    f"v{mv.version} (variant {name!r}); there is nothing to roll out.",
                    hint="Roll out another approved version: civicml endpoints update "
                    f"{row.name} --version N --strategy canary --project {proj.name}",
                )
            baseline = Totals() if target is None else self._totals(uow.conn, target.id)
            desired = [spec_of(r) for r in rows if r.name != name]
            desired.append(
                {
                    "name": name,
                    "role": _LIVE,
                    "model_name": mv.name,
                    "model_version_id": mv.id,
                    "model_version": mv.version,
                    "weight": 0.0,
                    "shadow_percent": 0.0,
                }
            )
            desired = _weighted(desired, step_weights(old, name, plan["steps"][0]))
            before, after = write_variants(uow, self._ctx, row.id, desired)
            values = {
                "id": rollout_id,
                "project_id": proj.id,
                "endpoint_id": row.id,
                "strategy": plan["strategy"].value,
                "status": _IN_PROGRESS,
                "new_variant": name,
                "model_name": mv.name,
                "model_version_id": mv.id,
                "model_version": mv.version,
                "created_variant": created,
                "old_weights": old,
                "steps": plan["steps"],
                "bake_s": plan["bake_s"],
                "alarms": plan["alarms"],
                "baseline": baseline.to_json(),
                "current_step": 0,
                "step_started_at": now,
                "reason": None,
                "created_at": now,
                "created_by": user,
                "finished_at": None,
            }
            uow.conn.execute(insert(endpoint_rollouts).values(**values))
            lineage = LineageService(self._ctx)
            endpoint_node = self._deployer.link_version(uow, proj, mv, row.id, row.name)
            node = lineage.derived(
                uow,
                "rollout",
                rollout_id,
                name=f"{row.name}: {plan['strategy'].value} to {mv.name} v{mv.version}",
                project_id=proj.id,
                sources=[("model_version", mv.id, f"{mv.name} v{mv.version}")],
                properties={
                    "strategy": plan["strategy"].value,
                    "steps": plan["steps"],
                    "bake_s": plan["bake_s"],
                    "alarms": [alarm_text(a) for a in plan["alarms"]],
                },
            )
            lineage.link(uow, node, endpoint_node, "AssociatedWith")
            self._step_node(uow, proj.id, rollout_id, row.name, 0, plan["steps"][0])
            AuditTrail(self._ctx).record(
                uow,
                "endpoint.rollout_started",
                "endpoint",
                row.id,
                project=proj.name,
                before={"variants": variant_state(before)},
                after={
                    "rollout": rollout_id,
                    "strategy": plan["strategy"].value,
                    "steps": plan["steps"],
                    "bake_s": plan["bake_s"],
                    "alarms": [alarm_text(a) for a in plan["alarms"]],
                    "new_variant": name,
                    "model": f"{mv.name} v{mv.version}",
                    "model_version_id": mv.id,
                    "signature": signature,
                    "variants": variant_state(after),
                },
            )
        self._deployer.refresh(proj.name, endpoint)
        return self.get(project, endpoint)

    def _plan(
        self,
        strategy: RolloutStrategy | str,
        canary_percent: float | str | None,
        linear_steps: int | None,
        bake_s: float | str,
        alarms: Sequence[str],
    ) -> dict[str, Any]:
        try:
            chosen = RolloutStrategy(strategy)
        except ValueError as err:
            raise InvalidInputError(
                f"Rollout strategy {strategy!r} is not known.",
                hint="Use all_at_once, canary or linear.",
            ) from err
        if isinstance(alarms, str) or len(alarms) > 20:
            raise InvalidInputError(
                "Alarms are a list of at most 20, e.g. ['p99_ms>50', 'error_rate>0.01'].",
                hint="Repeat --alarm for each one.",
            )
        parsed = [parse_alarm(a) for a in alarms]
        if any(a["metric"] == "monitor" for a in parsed) and self._monitor_hook() is None:
            raise InvalidInputError(
                "A monitor alarm needs the monitor status hook, and none is installed here.",
                hint="Use the metric alarms (error_rate, 4xx_rate, 5xx_rate, p99_ms), or install "
                "the hook: civicml.serving.rollout.set_monitor_status(...).",
            )
        return {
            "strategy": chosen,
            "steps": rollout_steps(chosen, _percent_or_none(canary_percent), linear_steps),
            "bake_s": parse_duration(bake_s),
            "alarms": parsed,
        }

    # Reading ----------------------------------------------------------------------------------
    def get(self, project: str, endpoint: str) -> RolloutInfo:
        """The endpoint's latest rollout (in progress or not), with its alarms read now.

        Raises:
            NotFoundError: The project or endpoint does not exist, or it never had a rollout.
        """
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            found = conn.execute(
                select(endpoint_rollouts)
                .where(endpoint_rollouts.c.endpoint_id == row.id)
                .order_by(endpoint_rollouts.c.created_at.desc(), endpoint_rollouts.c.id.desc())
                .limit(1)
            ).first()
            if found is None:
                raise NotFoundError(
                    f"Endpoint {row.name!r} has had no guarded update.",
                    hint=f"Start one: civicml endpoints update {row.name} --version N "
                    f"--strategy canary --canary 10% --bake 10m --project {proj.name}",
                )
            return self._info(conn, found, proj.name, row.name, read=True)

    def list(self, project: str, endpoint: str) -> builtins.list[RolloutInfo]:
        """Every rollout of the endpoint, newest first."""
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            rows = conn.execute(
                select(endpoint_rollouts)
                .where(endpoint_rollouts.c.endpoint_id == row.id)
                .order_by(endpoint_rollouts.c.created_at.desc(), endpoint_rollouts.c.id.desc())
            ).all()
            return [self._info(conn, r, proj.name, row.name, read=False) for r in rows]

    def info(self, conn: Connection, row: Any, project: str, endpoint: str) -> RolloutInfo:
        """The schema of a rollout row (for the endpoint service)."""
        return self._info(conn, row, project, endpoint, read=False)

    # Advancing --------------------------------------------------------------------------------
    def tick(self, project: str, endpoint: str) -> RolloutInfo:
        """Advance the endpoint's rollout now: roll back on an alarm, else take the next step
        once the current one has baked (idempotent: a tick with nothing due changes nothing).

        Raises:
            NotFoundError: The project or endpoint does not exist, or it never had a rollout.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            found = conn.execute(
                select(endpoint_rollouts.c.id).where(
                    endpoint_rollouts.c.endpoint_id == row.id,
                    endpoint_rollouts.c.status == _IN_PROGRESS,
                )
            ).first()
        if found is None:
            return self.get(project, endpoint)
        self._flush()
        self._advance(found.id, self._ctx.principal)
        info = self.get(project, endpoint)
        decided = self.decided.get(found.id)
        if info.id != found.id or info.status is RolloutStatus.IN_PROGRESS or decided is None:
            return info
        readings, totals = decided  # what the rollout ended on (its variant may be gone)
        return info.model_copy(
            update={"readings": readings, "new_variant_stats": _variant_stats(totals)}
        )

    def tick_all(self) -> int:
        """Advance every rollout in progress (what ``civicml server``'s thread runs, acting for
        each rollout's creator); returns how many changed state."""
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(
                    endpoint_rollouts.c.id,
                    endpoint_rollouts.c.created_by,
                    endpoint_rollouts.c.endpoint_id,
                ).where(endpoint_rollouts.c.status == _IN_PROGRESS)
            ).all()
        if not rows:
            return 0
        self._flush()
        changed = 0
        for row in rows:
            actor = Principal(
                user=row.created_by,
                roles=frozenset({f"rollout:{row.id}"}),  # a label: no permission
                projects=frozenset(),
            )
            try:
                changed += self._advance(row.id, actor)
            except Exception:
                log.exception("advancing rollout %s failed; tried again at the next tick", row.id)
        return changed

    def cancel(self, project: str, endpoint: str, *, reason: str | None = None) -> RolloutInfo:
        """Stop the endpoint's rollout and send all traffic back to the old variants.

        Raises:
            NotFoundError: The project or endpoint does not exist.
            ConflictError: No rollout is in progress.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            found = rollouts_in_progress(conn, [row.id]).get(row.id)
        if found is None:
            raise ConflictError(
                f"Endpoint {row.name!r} has no rollout in progress to cancel.",
                hint=f"See the last one: civicml endpoints rollout status {row.name} "
                f"--project {proj.name}",
            )
        why = f"cancelled by {self._ctx.principal.user}" + (f": {reason[:500]}" if reason else "")
        self._finish(
            found.id, int(found.current_step), RolloutStatus.CANCELLED, why, [], self._ctx.principal
        )
        return self.get(project, endpoint)

    def _advance(self, rollout_id: str, actor: Principal) -> int:
        """One tick of one rollout; 1 when it changed state, 0 otherwise. The readings it
        decided on are kept in ``self.decided`` (a rollback removes the variant they read)."""
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(endpoint_rollouts).where(endpoint_rollouts.c.id == rollout_id)
            ).first()
            if row is None or row.status != _IN_PROGRESS:
                return 0
            readings, stats = self._read(conn, row)
        self.decided[rollout_id] = (readings, stats)
        fired = [r for r in readings if r.fired]
        step = int(row.current_step)
        steps = [float(s) for s in row.steps]
        if fired:
            why = (
                "; ".join(f"alarm {r.alarm} fired: {_value(r)}" for r in fired)
                + f" (step {step + 1} of {len(steps)}, {steps[step]:g}% on {row.new_variant}, "
            )
            why += f"{stats.requests} requests)"
            return self._finish(rollout_id, step, RolloutStatus.ROLLED_BACK, why, readings, actor)
        now = self._ctx.clock.now()
        if now - row.step_started_at < timedelta(seconds=float(row.bake_s)):
            return 0
        if step + 1 >= len(steps):
            why = (
                f"every step baked {float(row.bake_s):g}s without an alarm "
                f"({stats.requests} requests on {row.new_variant})"
            )
            return self._finish(rollout_id, step, RolloutStatus.SUCCEEDED, why, readings, actor)
        return self._step(row, step + 1, readings, actor)

    def _step(
        self, row: Any, step: int, readings: builtins.list[AlarmReading], actor: Principal
    ) -> int:
        ctx = self._ctx.as_principal(actor)
        percent = float(row.steps[step])
        with ctx.db.write() as uow:
            if not _claim(uow.conn, row.id, step - 1, {"current_step": step}, ctx):
                return 0
            proj, endpoint = _owner(uow.conn, row)
            rows = variant_rows(uow.conn, row.endpoint_id)
            desired = _weighted(
                [spec_of(r) for r in rows], step_weights(row.old_weights, row.new_variant, percent)
            )
            _, after = write_variants(uow, ctx, row.endpoint_id, desired)
            self._step_node(uow, proj.id, row.id, endpoint, step, percent, ctx=ctx)
            AuditTrail(ctx).record(
                uow,
                "endpoint.rollout_step",
                "endpoint",
                row.endpoint_id,
                project=proj.name,
                before={"step": step - 1, "percent": float(row.steps[step - 1])},
                after={
                    "rollout": row.id,
                    "step": step,
                    "percent": percent,
                    "readings": [r.model_dump() for r in readings],
                    "variants": variant_state(after),
                },
            )
        self._deployer.refresh(proj.name, endpoint)
        return 1

    def _finish(
        self,
        rollout_id: str,
        step: int,
        status: RolloutStatus,
        reason: str,
        readings: builtins.list[AlarmReading],
        actor: Principal,
    ) -> int:
        ctx = self._ctx.as_principal(actor)
        now = ctx.clock.now()
        with ctx.db.write() as uow:
            changes = {"status": status.value, "reason": reason[:1024], "finished_at": now}
            if not _claim(uow.conn, rollout_id, step, changes, ctx):
                return 0
            row = uow.conn.execute(
                select(endpoint_rollouts).where(endpoint_rollouts.c.id == rollout_id)
            ).one()
            proj, endpoint = _owner(uow.conn, row)
            rows = variant_rows(uow.conn, row.endpoint_id)
            new = row.new_variant
            old = {str(k): float(v) for k, v in row.old_weights.items()}
            if status is RolloutStatus.SUCCEEDED:
                desired = [spec_of(r) for r in rows if r.name not in old]
                desired = _weighted(desired, {new: 1.0})
            else:  # all traffic back to the old variants
                desired = [spec_of(r) for r in rows if not (r.name == new and row.created_variant)]
                restore = {n: w for n, w in old.items() if any(d["name"] == n for d in desired)}
                desired = _weighted(desired, restore | {new: 0.0})
                if not restore:  # the old variants are gone: keep serving the new one
                    desired = _weighted([spec_of(r) for r in rows], {new: 1.0})
            before, after = write_variants(uow, ctx, row.endpoint_id, desired)
            if status is RolloutStatus.SUCCEEDED:
                mv_id = row.model_version_id
                lineage = LineageService(ctx)
                src = lineage.node(uow, "model_version", mv_id, project_id=proj.id)
                dst = lineage.node(uow, "endpoint", row.endpoint_id, name=endpoint)
                lineage.link(uow, src, dst, "AssociatedWith")
            self._outcome_node(uow, proj.id, row.id, endpoint, status, reason, ctx=ctx)
            AuditTrail(ctx).record(
                uow,
                f"endpoint.rollout_{status.value}",
                "endpoint",
                row.endpoint_id,
                project=proj.name,
                before={"variants": variant_state(before), "step": step},
                after={
                    "rollout": row.id,
                    "status": status.value,
                    "reason": reason[:1024],
                    "readings": [r.model_dump() for r in readings],
                    "variants": variant_state(after),
                },
            )
        self._deployer.refresh(proj.name, endpoint)
        return 1

    # Internals --------------------------------------------------------------------------------
    def _monitor_hook(self) -> MonitorStatus | None:
        if self._monitor_status is not None:
            return self._monitor_status
        return monitor_status()

    def _flush(self) -> None:
        if self._host is not None:
            try:
                self._host.flush_variant_stats()
            except Exception:  # logged there; the alarms read what was flushed before
                log.warning("reading rollout alarms without this process's latest counters")

    def _totals(self, conn: Connection, variant_id: str) -> Totals:
        return read_totals(conn, [variant_id])[variant_id]

    def _read(self, conn: Connection, row: Any) -> tuple[builtins.list[AlarmReading], Totals]:
        """Each alarm on the new variant's counters since the rollout started."""
        variant = next(
            (r for r in variant_rows(conn, row.endpoint_id) if r.name == row.new_variant), None
        )
        if variant is None:
            stats = Totals()
        else:
            stats = self._totals(conn, variant.id).minus(Totals.from_json(row.baseline))
        readings = []
        for alarm in row.alarms:
            value = self._measure(conn, row, alarm, stats)
            fired = False
            if value is not None and alarm["metric"] == "monitor":
                fired = value >= 1
            elif value is not None:
                threshold = float(alarm["threshold"])
                fired = value > threshold if alarm["op"] == ">" else value >= threshold
            readings.append(AlarmReading(alarm=alarm_text(alarm), value=value, fired=fired))
        return readings, stats

    def _measure(
        self, conn: Connection, row: Any, alarm: Mapping[str, Any], stats: Totals
    ) -> float | None:
        metric = alarm["metric"]
        if metric == "monitor":
            hook = self._monitor_hook()
            if hook is None:
                return None
            name = _owner(conn, row)[0].name
            try:
                status = hook(self._ctx, name, str(alarm["monitor"]))
            except Exception:
                log.exception("the monitor status hook failed for %s", alarm["monitor"])
                return None
            return None if status is None else float(bool(status))
        if stats.requests == 0:
            return None
        if metric == "p99_ms":
            return stats.quantile_ms(0.99)
        return stats.rate(
            {"error_rate": "errors", "4xx_rate": "errors_4xx"}.get(metric, "errors_5xx")
        )

    def _info(
        self, conn: Connection, row: Any, project: str, endpoint: str, *, read: bool
    ) -> RolloutInfo:
        readings: builtins.list[AlarmReading] = []
        stats: VariantStats | None = None
        if read:
            readings, totals = self._read(conn, row)
            stats = _variant_stats(totals)
        steps = [float(s) for s in row.steps]
        step = int(row.current_step)
        status = RolloutStatus(row.status)
        if status is RolloutStatus.SUCCEEDED:
            percent = 100.0
        elif status is RolloutStatus.IN_PROGRESS:
            percent = steps[step]
        else:
            percent = 0.0
        return RolloutInfo(
            id=row.id,
            project=project,
            endpoint=endpoint,
            strategy=RolloutStrategy(row.strategy),
            status=status,
            new_variant=row.new_variant,
            model_name=row.model_name,
            model_version=row.model_version,
            old_weights={str(k): float(v) for k, v in row.old_weights.items()},
            steps=steps,
            current_step=step,
            current_percent=percent,
            bake_s=float(row.bake_s),
            alarms=[alarm_text(a) for a in row.alarms],
            step_started_at=row.step_started_at,
            reason=row.reason,
            created_at=row.created_at,
            created_by=row.created_by,
            finished_at=row.finished_at,
            new_variant_stats=stats,
            readings=readings,
        )

    def _step_node(
        self,
        uow: Any,
        project_id: str,
        rollout_id: str,
        endpoint: str,
        step: int,
        percent: float,
        *,
        ctx: Context | None = None,
    ) -> None:
        lineage = LineageService(ctx or self._ctx)
        node = lineage.node(uow, "rollout", rollout_id, project_id=project_id)
        stepped = lineage.new_node(
            uow,
            "rollout_step",
            f"{rollout_id}/{step}",
            name=f"{endpoint}: step {step + 1}, {percent:g}% on the new version",
            project_id=project_id,
            properties={"step": step, "percent": percent},
        )
        lineage.link(uow, node, stepped, "Produced")

    def _outcome_node(
        self,
        uow: Any,
        project_id: str,
        rollout_id: str,
        endpoint: str,
        status: RolloutStatus,
        reason: str,
        *,
        ctx: Context,
    ) -> None:
        lineage = LineageService(ctx)
        node = lineage.node(uow, "rollout", rollout_id, project_id=project_id)
        outcome = lineage.new_node(
            uow,
            "rollout_step",
            f"{rollout_id}/{status.value}",
            name=f"{endpoint}: rollout {status.value.replace('_', ' ')}",
            project_id=project_id,
            properties={"status": status.value, "reason": reason[:1024]},
        )
        lineage.link(uow, node, outcome, "Produced")


def rollouts_in_progress(conn: Connection, endpoint_ids: Sequence[str]) -> dict[str, Any]:
    """The in-progress rollout rows of these endpoints, by endpoint id (no permission check:
    for services that already checked one)."""
    if not endpoint_ids:
        return {}
    rows = conn.execute(
        select(endpoint_rollouts).where(
            endpoint_rollouts.c.endpoint_id.in_(list(endpoint_ids)),
            endpoint_rollouts.c.status == _IN_PROGRESS,
        )
    ).all()
    return {r.endpoint_id: r for r in rows}


def _variant_stats(totals: Totals) -> VariantStats:
    return VariantStats(
        requests=totals.requests,
        invocations=totals.invocations,
        errors_4xx=totals.errors_4xx,
        errors_5xx=totals.errors_5xx,
        p50_ms=totals.quantile_ms(0.5),
        p99_ms=totals.quantile_ms(0.99),
    )


def _value(reading: AlarmReading) -> str:
    if reading.value is None:
        return "no value"
    if reading.alarm.startswith("monitor:"):
        return "the monitor reports a violation"
    if reading.alarm.startswith("p99_ms"):
        return f"p99 {reading.value:g} ms"
    return f"{reading.value:.4g}"


def _percent_or_none(value: float | str | None) -> float | None:
    return None if value is None else parse_percent(value)


def _claim(
    conn: Connection, rollout_id: str, step: int, changes: Mapping[str, Any], ctx: Context
) -> bool:
    """Compare-and-set: apply ``changes`` only while the rollout is in progress at ``step``."""
    values = dict(changes)
    if "current_step" in values:
        values["step_started_at"] = ctx.clock.now()
    done = conn.execute(
        update(endpoint_rollouts)
        .where(
            endpoint_rollouts.c.id == rollout_id,
            endpoint_rollouts.c.status == _IN_PROGRESS,
            endpoint_rollouts.c.current_step == step,
        )
        .values(**values)
    )
    return done.rowcount == 1


@dataclass(frozen=True, slots=True)
class _Owner:
    """The project of a rollout, as its writes need it."""

    id: str
    name: str


def _owner(conn: Connection, row: Any) -> tuple[_Owner, str]:
    """The project and endpoint name of a rollout row."""
    found = conn.execute(
        select(endpoints.c.name, projects.c.name.label("project"), projects.c.id)
        .join(projects, projects.c.id == endpoints.c.project_id)
        .where(endpoints.c.id == row.endpoint_id)
    ).one()
    return _Owner(id=found.id, name=found.project), found.name


def _refuse_second(conn: Connection, row: Any, proj: Project) -> None:
    found = conn.execute(
        select(endpoint_rollouts.c.id).where(
            endpoint_rollouts.c.endpoint_id == row.id,
            endpoint_rollouts.c.status == _IN_PROGRESS,
        )
    ).first()
    if found is not None:
        raise ConflictError(
            f"Endpoint {row.name!r} has a rollout in progress; its variants change only "
            "through it until it ends.",
            hint=f"Wait for it, or cancel it: civicml endpoints rollout cancel {row.name} "
            f"--project {proj.name}",
        )


def _target(rows: Sequence[Any], model_version_id: str, name: str | None) -> Any | None:
    """The live variant the new version goes to: the one named ``name`` when it serves that
    version, else one already serving it; None when a new variant is needed."""
    for row in rows:
        if row.role != _LIVE or row.model_version_id != model_version_id:
            continue
        if name is None or row.name.lower() == name.lower():
            return row
    return None


def _weighted(desired: list[dict[str, Any]], weights: Mapping[str, float]) -> list[dict[str, Any]]:
    return [d | {"weight": weights[d["name"]]} if d["name"] in weights else d for d in desired]


class RolloutTicker:
    """Calls :meth:`RolloutService.tick_all` every ``interval_s`` in a daemon thread (what
    ``civicml server`` starts when ``rollout_enabled`` is on).

    Args:
        ctx: The server's stores.
        host: The server's model host (its counters are flushed before each tick).
        interval_s: Seconds between ticks (default setting ``rollout_interval_s``).
    """

    def __init__(
        self, ctx: Context, host: ModelHost | None, interval_s: float | None = None
    ) -> None:
        self._service = RolloutService(ctx, host)
        self.interval_s = ctx.settings.rollout_interval_s if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start ticking in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="civicml-rollouts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop ticking (a rollout in progress continues at the next server's tick)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s))
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._service.tick_all()
            except Exception:
                log.exception("the rollout tick failed; tried again in %gs", self.interval_s)
