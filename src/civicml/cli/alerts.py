"""``civicml alerts``: rules (add, list, show, enable, disable, remove), alerts (list, show),
a test notification, and an evaluation now.

Rules watch endpoint metrics (``--source endpoint``: requests, error rates, latency over a
window) or monitoring reports (``--source monitoring``: a report's verdict, or a column's drift
score); channels are webhooks, e-mail and message brokers. Everything works embedded and
against a server (``--url``); the scheduler evaluates rules by itself.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

if TYPE_CHECKING:
    from civicml.alerts.schemas import Notification, Rule

alerts_app = typer.Typer(
    help="Alerts: rules on endpoint metrics and monitoring reports, sent to webhooks, e-mail "
    "and message brokers.",
    no_args_is_help=True,
)
rules_app = typer.Typer(
    help="Alert rules: what to watch, the condition, where to send.", no_args_is_help=True
)
alerts_app.add_typer(rules_app, name="rules")

NameArg = Annotated[str, typer.Argument(help="The rule's name.", show_default=False)]


def _channels(
    webhook: list[str] | None,
    key_name: str,
    email: list[str] | None,
    nats: list[str] | None,
    redis: list[str] | None,
    redis_stream: list[str] | None,
    mqtt: list[str] | None,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"type": "webhook", "url": url, "secret": key_name} for url in webhook or []
    ]
    if email:
        found.append({"type": "email", "to": list(email)})
    found += [{"type": "nats", "subject": s} for s in nats or []]
    found += [{"type": "redis", "channel": c, "mode": "pubsub"} for c in redis or []]
    found += [{"type": "redis", "channel": c, "mode": "stream"} for c in redis_stream or []]
    found += [{"type": "mqtt", "topic": t} for t in mqtt or []]
    return found


def _watching(rule: Rule) -> str:
    if rule.source.value == "endpoint":
        where = rule.endpoint or "every endpoint"
        return where + (f" (variant {rule.variant})" if rule.variant else "")
    where = rule.dataset or "every dataset"
    kind = f"{rule.report_kind} reports" if rule.report_kind else "reports"
    return f"{kind} on {where}" + (f", column {rule.column}" if rule.column else "")


def _show(rule: Rule) -> None:
    table(
        f"Alert rule {rule.name}",
        ["field", "value"],
        [
            ["project", rule.project],
            ["source", rule.source.value],
            ["watches", _watching(rule)],
            ["condition", rule.condition],
            ["window", f"{rule.window_s} s"],
            ["severity", rule.severity.value],
            ["cool-down", f"{rule.cooldown_s} s"],
            ["channels", "; ".join(json.dumps(c.model_dump()) for c in rule.channels) or "none"],
            ["enabled", "yes" if rule.enabled else "disabled"],
            ["last evaluated", fmt_time(rule.evaluated_at)],
            ["created", f"{fmt_time(rule.created_at)} by {rule.created_by}"],
            ["description", rule.description],
        ],
    )


def _deliveries(found: list[Notification], title: str) -> None:
    table(
        title,
        ["event", "channel", "target", "status", "tries", "error"],
        [
            [n.event, n.channel_type, n.target, n.status, len(n.attempts), n.error or ""]
            for n in found
        ],
    )


@rules_app.command("add")
def add(
    name: NameArg,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="endpoint (serving metrics) or monitoring (reports).",
            show_default=False,
        ),
    ],
    when: Annotated[
        str,
        typer.Option(
            "--when",
            help="Condition '<metric> <op> <value>', e.g. 'p99_ms > 50', 'error_rate > 0.01', "
            "'verdict == drift'.",
            show_default=False,
        ),
    ],
    project: ProjectOpt = "default",
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint.")] = None,
    variant: Annotated[str | None, typer.Option(help="Only this variant of --endpoint.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Monitoring: only reports on this dataset.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Monitoring: only reports of this kind (e.g. drift).")
    ] = None,
    column: Annotated[
        str | None, typer.Option(help="Monitoring: a column metric (drift_score, psi) of it.")
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=86_400,
            help="Seconds: traffic counted (endpoint, default 300) or report age (monitoring, "
            "default 86400).",
        ),
    ] = None,
    min_requests: Annotated[
        int, typer.Option(min=1, help="Endpoint: fewer requests in the window is no data.")
    ] = 1,
    severity: Annotated[str, typer.Option(help="info, warning or critical.")] = "warning",
    cooldown: Annotated[
        int, typer.Option(min=0, help="Seconds after resolving before it fires again.")
    ] = 300,
    webhook: Annotated[
        list[str] | None, typer.Option("--webhook", help="POST signed JSON to this URL.")
    ] = None,
    key_name: Annotated[
        str,
        typer.Option(
            "--secret", help="Name of the webhooks' HMAC secret (setting alerts_webhook_secrets)."
        ),
    ] = "default",
    email: Annotated[list[str] | None, typer.Option("--email", help="E-mail recipient.")] = None,
    nats: Annotated[list[str] | None, typer.Option("--nats", help="NATS subject.")] = None,
    redis: Annotated[
        list[str] | None, typer.Option("--redis", help="Redis pub/sub channel.")
    ] = None,
    redis_stream: Annotated[
        list[str] | None, typer.Option("--redis-stream", help="Redis stream key (XADD).")
    ] = None,
    mqtt: Annotated[list[str] | None, typer.Option("--mqtt", help="MQTT topic.")] = None,
    description: Annotated[str, typer.Option(help="What the rule is for.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Add an alert rule: --source, --when, and where to send (--webhook, --email, --nats,
    --redis, --redis-stream, --mqtt; none: alerts are only recorded)."""
    with client() as ml:
        rule = ml.project(project).alerts.create_rule(
            name,
            source=source,
            condition=when,
            endpoint=endpoint,
            variant=variant,
            dataset=dataset,
            report_kind=kind,
            column=column,
            window_s=window,
            min_requests=min_requests,
            severity=severity,
            cooldown_s=cooldown,
            channels=_channels(webhook, key_name, email, nats, redis, redis_stream, mqtt),
            description=description,
            enabled=not disabled,
        )
    if json_:
        print_json(rule)
        return
    console.print(
        f"Added alert rule {rule.name} ({rule.condition} on {_watching(rule)}, "
        f"{len(rule.channels)} channel(s)) in {rule.project}."
    )


@rules_app.command("list")
def list_rules(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List a project's alert rules."""
    with client() as ml:
        found = ml.project(project).alerts.rules()
    if json_:
        print_json(found)
        return
    table(
        f"Alert rules of {project}",
        ["name", "source", "watches", "condition", "severity", "channels", "enabled"],
        [
            [
                r.name,
                r.source.value,
                _watching(r),
                r.condition,
                r.severity.value,
                len(r.channels),
                "yes" if r.enabled else "disabled",
            ]
            for r in found
        ],
    )


@rules_app.command("show")
def show(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show an alert rule."""
    with client() as ml:
        rule = ml.project(project).alerts.rule(name)
    if json_:
        print_json(rule)
    else:
        _show(rule)


def _done(rule: Rule, json_: bool, what: str) -> None:
    if json_:
        print_json(rule)
    else:
        console.print(f"{what} alert rule {rule.name} of project {rule.project}.")


@rules_app.command("enable")
def enable(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Evaluate a disabled rule again."""
    with client() as ml:
        rule = ml.project(project).alerts.enable_rule(name)
    _done(rule, json_, "Enabled")


@rules_app.command("disable")
def disable(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Stop evaluating a rule."""
    with client() as ml:
        rule = ml.project(project).alerts.disable_rule(name)
    _done(rule, json_, "Disabled")


@rules_app.command("remove")
def remove(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Remove a rule (its alerts and deliveries stay listed)."""
    with client() as ml:
        rule = ml.project(project).alerts.delete_rule(name)
    _done(rule, json_, "Removed")


@alerts_app.command("list")
def list_alerts(
    project: ProjectOpt = "default",
    firing: Annotated[bool, typer.Option("--firing", help="Only alerts still firing.")] = False,
    rule: Annotated[str | None, typer.Option(help="Only this rule's alerts.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most recent alerts.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """List a project's alerts, newest first."""
    with client() as ml:
        found = ml.project(project).alerts.list(firing=firing, rule=rule, limit=limit)
    if json_:
        print_json(found)
        return
    table(
        f"Alerts of {project}",
        ["id", "rule", "subject", "severity", "status", "value", "fired", "resolved"],
        [
            [
                a.id,
                a.rule,
                a.subject,
                a.severity.value,
                a.status.value,
                a.value,
                fmt_time(a.fired_at),
                fmt_time(a.resolved_at),
            ]
            for a in found
        ],
    )


@alerts_app.command("show")
def show_alert(
    alert_id: Annotated[str, typer.Argument(help="The alert's id.", show_default=False)],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Show an alert and its deliveries."""
    with client() as ml:
        handle = ml.project(project).alerts
        alert = handle.get(alert_id)
        found = handle.deliveries(alert_id)
    if json_:
        print_json({"alert": alert, "deliveries": found})
        return
    console.print(alert.message)
    console.print(
        f"{alert.status.value} since {fmt_time(alert.fired_at)}"
        + (f", resolved {fmt_time(alert.resolved_at)}" if alert.resolved_at else "")
    )
    _deliveries(found, f"Deliveries of {alert.id}")


@alerts_app.command("test")
def test(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Send a test notification of RULE to each of its channels (exit 1 if one failed)."""
    with client() as ml:
        result = ml.project(project).alerts.test(name)
    if json_:
        print_json(result)
    else:
        _deliveries(result.notifications, f"Test of {result.rule}")
    if not result.ok:
        raise typer.Exit(1)


@alerts_app.command("evaluate")
def evaluate(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Evaluate a project's enabled rules now and send what fired or resolved."""
    with client() as ml:
        result = ml.project(project).alerts.evaluate()
    if json_:
        print_json(result)
        return
    table(
        f"Alert rules of {project} at {fmt_time(result.evaluated_at)}",
        ["rule", "subject", "value", "action", "alert"],
        [[o.rule, o.subject, o.value, o.action, o.alert_id or ""] for o in result.outcomes],
    )
    failed = [n for n in result.notifications if n.status != "sent"]
    if failed:
        _deliveries(failed, "Deliveries that failed")
