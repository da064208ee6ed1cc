"""The demo's closed loop: drifted traffic → a monitor's violation → an alert → the retraining
pipeline it triggers → the approval gate → a canary rollout that is promoted, and a canary that
misbehaves and is rolled back by itself.

The retraining pipeline lives here so the demo's scheduler may import it (setting
``pipeline_modules``); everything else goes through the live server over HTTP, as an agency's
services would, except the scheduler tick, which the demo drives itself (``civicml scheduler
--once``) so that each step shows in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from civicml.data.schemas import DatasetVersion
from civicml.pipelines import pipeline, step
from civicml.pipelines.steps import condition, evaluate_bias, explain, ingest, register, train, when

MODULE = "civicml.cli.demo_loop"
PIPELINE = f"{MODULE}:retrain"
MONITOR = "eligibility-inputs"
RULE = "eligibility-inputs-broke"
SCHEDULE = "retrain-on-alert"
CANARY_REQUESTS = 120


@step(cache=False)
def decided_applications(rows: int, seed: int) -> Any:
    """The applications decided since the population changed: the drifted intake with the
    caseworkers' decisions as labels (generated, like all the demo's data)."""
    from civicml.data.samples import benefit_applications

    return benefit_applications(rows, seed=seed, drifted=True)


@step
def why(alert: str) -> str:
    """The candidate's description: the alert that asked for it."""
    return f"Retrained on recent decisions after alert {alert}" if alert else "Retrained by hand"


@pipeline(name="eligibility-retrain")
def retrain(rows: int = 3_000, seed: int = 11, alert: str = "") -> None:
    """Retrain the eligibility model on recent decisions; register it only when its validation
    ROC AUC is at least 0.80, then measure its bias and explain it (the policy's evidence)."""
    recent: DatasetVersion = ingest("applications-recent", decided_applications(rows, seed))
    trained = train(recent, "eligible", "lightgbm")
    good = condition(trained, ">=", 0.80, key="metrics.val_roc_auc", otherwise="fail")
    candidate = register("eligibility", when(trained, good), why(alert))
    evaluate_bias(recent, candidate, "eligible", 1, "sex")
    explain(candidate, recent, 500)


def watch_and_retrain(proj: Any, scheduler: Any, say: Callable[[str], None]) -> Any:
    """Monitor the captured traffic, alert on its violations, let the alert start the retraining
    pipeline; the candidate version it registered (``PendingManualApproval``)."""
    monitor = proj.monitors.add(MONITOR, endpoint="eligibility", type="data_quality", every="1h")
    execution = proj.monitors.run(MONITOR)
    checks = sorted({v.constraint_check_type for v in execution.violations})
    say(
        f"Monitor {monitor.name} ({monitor.type.value}, baseline: the training data): "
        f"{execution.status.value}, {len(execution.violations)} violation(s) "
        f"({', '.join(checks) or 'none'})"
    )
    proj.alerts.create_rule(
        RULE,
        source="monitoring",
        condition="status == completed_with_violations",
        dataset=MONITOR,
        report_kind="data_quality",
        severity="critical",
    )
    fired = [o for o in proj.alerts.evaluate().outcomes if o.rule == RULE]
    if not fired or fired[0].action != "fired":  # pragma: no cover - the traffic is drifted
        raise RuntimeError(f"alert {RULE} should have fired: {fired}")
    (alert,) = proj.alerts.list(firing=True)
    say(f"Alert fired ({alert.severity}): {alert.message}")
    firings = scheduler.outcomes(scheduler.run_once(timeout_s=300))
    (firing,) = [f for f in firings if f.schedule == SCHEDULE]
    if firing.status.value != "succeeded":  # pragma: no cover - shown to the user
        raise RuntimeError(f"the retraining pipeline {firing.status.value}: {firing.error}")
    candidate = max(proj.models.versions("eligibility"), key=lambda v: v.version)
    say(
        f"The alert started pipeline eligibility-retrain (schedule {SCHEDULE}, execution "
        f"{firing.execution_id[:12] if firing.execution_id else '?'}…): registered "
        f"{candidate.name} v{candidate.version}, "
        f"validation ROC AUC {candidate.metrics.get('val_roc_auc', float('nan')):.3f}, "
        f"{candidate.approval_status.value}"
    )
    return candidate


def canary(
    endpoint: Any, send: Callable[[int], None], candidate: Any, say: Callable[[str], None]
) -> None:
    """Roll ``candidate`` out as a guarded canary under live traffic until it is promoted."""
    endpoint.update(
        candidate,
        strategy="canary",
        canary="20%",
        bake="0s",
        alarms=["error_rate>0.01", "p99_ms>500"],
    )
    send(CANARY_REQUESTS)
    first = endpoint.rollout.tick()
    send(CANARY_REQUESTS)
    done = endpoint.rollout.tick()
    if done.status.value != "succeeded":  # pragma: no cover - shown to the user
        raise RuntimeError(f"the canary of v{candidate.version} ended {done.status.value}")
    say(
        f"Canary of v{candidate.version}: 20% of live traffic, alarms "
        f"{', '.join(done.alarms)} quiet → {first.current_percent:.0f}% → promoted "
        f"({done.status.value}); {CANARY_REQUESTS * 2} requests served meanwhile"
    )


def misbehaving_canary(
    endpoint: Any, send: Callable[[int], None], old: Any, say: Callable[[str], None]
) -> None:
    """A canary whose alarm fires is rolled back by itself and the endpoint keeps serving."""
    endpoint.update(old, strategy="canary", canary="50%", bake="0s", alarms=["p99_ms>0.01"])
    send(CANARY_REQUESTS)
    ended = endpoint.rollout.tick()
    if ended.status.value != "rolled_back":  # pragma: no cover - p99 is never under 10 µs
        raise RuntimeError(f"the misbehaving canary ended {ended.status.value}")
    say(
        f"A canary of v{old.version} guarded by a latency alarm it cannot meet (p99_ms>0.01) "
        f"was rolled back by itself ({ended.reason}); the endpoint kept serving "
        + ", ".join(f"v{v.model_version} ({v.name})" for v in endpoint.variants())
    )
