"""``civicml endpoints``: deploy approved model versions, switch versions (at once or in a guarded
rollout), manage variants and the shadow, multi-model endpoints and their models, invoke them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import (
    JsonOpt,
    ProjectOpt,
    client,
    console,
    fmt_time,
    print_json,
    table,
    version_ref,
)
from civicml.core.errors import InvalidInputError

if TYPE_CHECKING:  # imported lazily: `civicml endpoints --help` stays fast
    from civicml.evaluation.explain_schemas import LocalExplanation
    from civicml.sdk.endpoints import EndpointsHandle
    from civicml.serving.schemas import EndpointInfo, RolloutInfo

endpoints_app = typer.Typer(
    help="Real-time endpoints: serve Approved model versions.", no_args_is_help=True
)
variants_app = typer.Typer(
    help="An endpoint's variants: several versions with traffic weights.", no_args_is_help=True
)
shadow_app = typer.Typer(
    help="An endpoint's shadow: a sampled copy of live requests, answers never returned.",
    no_args_is_help=True,
)
rollout_app = typer.Typer(
    help="Guarded updates: follow, advance or cancel an endpoint's rollout.",
    no_args_is_help=True,
)
models_app = typer.Typer(
    help="A multi-model endpoint's models: each request names one; loaded on first use.",
    no_args_is_help=True,
)
endpoints_app.add_typer(variants_app, name="variants")
endpoints_app.add_typer(models_app, name="models")
endpoints_app.add_typer(shadow_app, name="shadow")
endpoints_app.add_typer(rollout_app, name="rollout")
CaptureOpt = Annotated[
    float | None,
    typer.Option("--capture-percent", min=0, max=100, help="Share of requests captured, 0-100."),
]


def _handle(ml: Any, project: str) -> EndpointsHandle:
    return ml.project(project).endpoints  # type: ignore[no-any-return]


def _print(info: EndpointInfo, json_: bool, verb: str = "") -> None:
    if json_:
        print_json(info)
        return
    capture = f"{info.capture.percent:g}%" if info.capture.enabled else "off"
    if info.mode.value == "multi-model":
        limit = "server default" if info.model_cache_mb is None else f"{info.model_cache_mb:g} MB"
        console.print(
            f"{verb}{info.name}: multi-model, {len(info.models)} models ({info.status.value}), "
            f"cache {limit}, capture {capture}",
            markup=False,
        )
        for m in info.models:
            console.print(f"  model {m.target} (added as {m.ref})", markup=False)
        if info.model_cache is not None:  # counted by the process that serves it
            c = info.model_cache
            console.print(
                f"  cache: {len(c.loaded)} loaded ({c.used_bytes:,} of {c.limit_bytes:,} "
                f"bytes), {c.hits} hits, {c.loads} loads, {c.evictions} evictions, "
                f"{c.load_failures} refused loads",
                markup=False,
            )
    else:
        console.print(
            f"{verb}{info.name}: {info.model_name} v{info.model_version} "
            f"({info.status.value}), capture {capture}",
            markup=False,
        )
    if len(info.variants) > 1 or any(v.role.value == "shadow" for v in info.variants):
        for v in info.variants:
            share = (
                f"shadow {v.shadow_percent:g}% of live requests"
                if v.role.value == "shadow"
                else f"weight {v.weight:g} ({v.share:.1%})"
            )
            console.print(
                f"  variant {v.name}: {v.model_name} v{v.model_version}, {share}", markup=False
            )
    if info.stats is not None:  # counted by the process that serves it (a server)
        stats = info.stats
        console.print(
            f"  since {fmt_time(stats.since)}: {stats.invocations} answered, "
            f"{stats.input_errors} refused input, {stats.output_errors} model output errors",
            markup=False,
        )
    if info.rollout is not None:
        _print_rollout(info.rollout, prefix="  ")


def _print_rollout(r: RolloutInfo, prefix: str = "") -> None:
    steps = ", ".join(f"{s:g}%" for s in r.steps)
    console.print(
        f"{prefix}rollout {r.id} ({r.strategy.value}): {r.status.value}, "
        f"{r.current_percent:g}% on {r.new_variant} ({r.model_name} v{r.model_version}); "
        f"step {r.current_step + 1} of {len(r.steps)} [{steps}], bake {r.bake_s:g}s",
        markup=False,
    )
    if r.alarms:
        console.print(f"{prefix}  alarms: {', '.join(r.alarms)}", markup=False)
    for reading in r.readings:
        value = "—" if reading.value is None else f"{reading.value:g}"
        fired = " FIRED" if reading.fired else ""
        console.print(f"{prefix}  {reading.alarm}: {value}{fired}", markup=False)
    if r.reason:
        console.print(f"{prefix}  reason: {r.reason}", markup=False)


@endpoints_app.command("deploy")
def deploy(
    name: str,
    model: str,
    version: Annotated[str, typer.Argument(help="Version number or alias (Approved).")],
    project: ProjectOpt = "default",
    capture_percent: CaptureOpt = 100.0,
    variant: Annotated[
        str | None, typer.Option("--variant", help="Name of its variant (default vN).")
    ] = None,
    multi_model: Annotated[
        bool,
        typer.Option(
            "--multi-model",
            help="A multi-model endpoint: requests name their model (X-Civicml-Target-Model).",
        ),
    ] = False,
    add_model: Annotated[
        list[str] | None,
        typer.Option(
            "--add-model",
            help="Another model of a multi-model endpoint, MODEL:VERSION (repeatable).",
        ),
    ] = None,
    cache_mb: Annotated[
        float | None,
        typer.Option(
            "--cache-mb",
            help="A multi-model endpoint's cache limit in MB (default: the server's "
            "serving_model_cache_mb).",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Serve VERSION of MODEL as endpoint NAME (with --multi-model: and --add-model ones)."""
    models = [_model_ref(item) for item in add_model or []]
    with client() as ml:
        endpoint = _handle(ml, project).deploy(
            name,
            model=model,
            version=version_ref(version) if multi_model else version,
            capture_percent=capture_percent or 0.0,
            variant=variant,
            mode="multi-model" if multi_model else "single-model",
            models=models,
            model_cache_mb=cache_mb,
        )
    _print(endpoint.info, json_, "Deployed ")


def _model_ref(item: str) -> tuple[str, int | str]:
    model, sep, version = item.partition(":")
    if not sep or not model or not version:
        raise InvalidInputError(
            f"Model {item!r} is not MODEL:VERSION.",
            hint="E.g. --add-model fraud:3 or --add-model fraud:production",
        )
    return model, version_ref(version)


@endpoints_app.command("list")
def list_endpoints(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List the endpoints of a project."""
    with client() as ml:
        found = [e.info for e in _handle(ml, project).list()]
    if json_:
        print_json(found)
        return
    table(
        f"Endpoints of {project}",
        ["name", "model", "version", "status", "capture", "updated", "by"],
        [
            [
                e.name,
                e.model_name,
                e.model_version,
                e.status.value,
                f"{e.capture.percent:g}%" if e.capture.enabled else "off",
                fmt_time(e.updated_at),
                e.updated_by,
            ]
            for e in found
        ],
    )


@endpoints_app.command("show")
def show(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show an endpoint."""
    with client() as ml:
        info = _handle(ml, project).get(name).info
    _print(info, json_)


@endpoints_app.command("update")
def update(
    name: str,
    version: Annotated[
        str | None, typer.Option("--version", help="Approved version to serve.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Another model to serve.")] = None,
    project: ProjectOpt = "default",
    capture_percent: CaptureOpt = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            help="A guarded update: all_at_once, canary or linear (each step baked; an alarm "
            "rolls back by itself).",
        ),
    ] = None,
    canary: Annotated[
        str | None, typer.Option("--canary", help="Canary size, e.g. 10% (default 10%).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Equal steps of a linear rollout (default 4).")
    ] = None,
    bake: Annotated[
        str | None,
        typer.Option("--bake", help="How long each step is watched: 30s, 10m, 1h (default 10m)."),
    ] = None,
    alarm: Annotated[
        list[str] | None,
        typer.Option(
            "--alarm",
            help="An alarm on the new version (repeatable): error_rate>0.01, 4xx_rate>1%, "
            "5xx_rate>0, p99_ms>50, monitor:NAME.",
        ),
    ] = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="Name of the new version's variant.")
    ] = None,
    cache_mb: Annotated[
        float | None,
        typer.Option("--cache-mb", help="A multi-model endpoint's new cache limit in MB."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Switch an endpoint to another version (no request fails) or change its capture (or a
    multi-model endpoint's cache limit).

    With --strategy the switch is a guarded rollout: e.g. --strategy canary --canary 10%
    --bake 10m --alarm p99_ms>50 --alarm error_rate>0.01.
    """
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.update(
            None if version is None else version_ref(version),
            model=model,
            capture_percent=capture_percent,
            strategy=strategy,
            canary=canary,
            steps=steps,
            bake=bake,
            alarms=alarm or [],
            variant=variant,
            model_cache_mb=cache_mb,
        )
    _print(endpoint.info, json_, "Updated ")


@endpoints_app.command("delete")
def delete(name: str, project: ProjectOpt = "default") -> None:
    """Stop serving and remove an endpoint (its capture files stay)."""
    with client() as ml:
        _handle(ml, project).get(name).delete()
    console.print(f"Deleted endpoint {name}", markup=False)


@endpoints_app.command("capture-dataset")
def capture_dataset(
    name: str,
    project: ProjectOpt = "default",
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name (default NAME-capture).")
    ] = None,
    metadata: Annotated[
        bool,
        typer.Option(
            "--metadata",
            help="Add inference_id, inference_time, model_version and caller columns.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Store the requests captured so far as a dataset version (for a drift report)."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        version = endpoint.capture_to_dataset(dataset, metadata=metadata)
    if json_:
        print_json(version)
    else:
        console.print(
            f"{version.name} v{version.version}: {version.row_count} captured rows", markup=False
        )


@endpoints_app.command("invoke")
def invoke(
    name: str,
    file: Annotated[
        Path | None, typer.Argument(help='JSON file: {"records": [...]}, [...] or {...}.')
    ] = None,
    record: Annotated[
        str | None, typer.Option("--record", help="One record as JSON: '{\"age\": 41}'.")
    ] = None,
    project: ProjectOpt = "default",
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Also show why: SHAP attributions of each record's raw input columns.",
        ),
    ] = False,
    variant: Annotated[
        str | None,
        typer.Option("--variant", help="Pin the request to this variant (else the weights)."),
    ] = None,
    target_model: Annotated[
        str | None,
        typer.Option(
            "--target-model", help="A multi-model endpoint's model: MODEL or MODEL/VERSION."
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Predict with an endpoint for the records of FILE or one --record."""
    rows = _records(file, record)
    with client() as ml:
        result = (
            _handle(ml, project)
            .get(name)
            .invoke(rows, explain=explain, variant=variant, target_model=target_model)
        )
    if json_:
        print_json(result)
        return
    columns = ["#", "prediction"] + [f"p({c})" for c in result.classes]
    probabilities = result.probabilities or [[] for _ in result.predictions]
    answered = (
        f"model {result.target_model}"
        if result.target_model
        else f"model version {result.model_version}, variant {result.variant}"
    )
    table(
        f"{name} ({answered})",
        columns,
        [
            [i, p, *(f"{x:.4f}" for x in probs)]
            for i, (p, probs) in enumerate(zip(result.predictions, probabilities, strict=True))
        ],
    )
    if result.explanations:
        _print_explanations(result.explanations)


#: Attributions shown per record and output in the table (all of them are in --json).
TOP_ATTRIBUTIONS = 5


def _print_explanations(explanations: list[LocalExplanation]) -> None:
    space = explanations[0].output_space
    rows = []
    for i, found in enumerate(explanations):
        for output in found.outputs:
            ranked = sorted(output.attributions.items(), key=lambda kv: -abs(kv[1]))
            top = ", ".join(f"{c} {v:+.4f}" for c, v in ranked[:TOP_ATTRIBUTIONS])
            label = "value" if output.label is None else str(output.label)
            rows.append([i, label, f"{output.base_value:.4f}", f"{output.output:.4f}", top])
    table(
        f"Why ({explanations[0].explainer} SHAP, {space}: base + attributions = output)",
        ["#", "output", "base", "output value", "largest attributions"],
        rows,
    )


def _records(file: Path | None, record: str | None) -> Any:
    if (file is None) == (record is None):
        raise InvalidInputError(
            "Give the records as a JSON file or one --record, not both or neither.",
            hint='civicml endpoints invoke NAME --record \'{"age": 41, "region": "north"}\'',
        )
    source = f"--record {record!r}" if record is not None else str(file)
    try:
        text = record if record is not None else Path(str(file)).read_text(encoding="utf-8")
        value = json.loads(text)
    except (OSError, ValueError) as err:
        raise InvalidInputError(
            f"Cannot read records from {source}: {err}.",
            hint='Write JSON such as {"records": [{"age": 41}]} or one record {"age": 41}.',
        ) from err
    if isinstance(value, dict) and set(value) == {"records"}:
        value = value["records"]
    return value


# Variants ----------------------------------------------------------------------------------------
VersionOpt = Annotated[str, typer.Option("--version", help="Approved version (number or alias).")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Registered model (default: the endpoint's).")
]


@variants_app.command("list")
def variants_list(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List an endpoint's variants with their weights and traffic shares."""
    with client() as ml:
        found = _handle(ml, project).get(name).variants()
    if json_:
        print_json(found)
        return
    table(
        f"Variants of {name}",
        ["variant", "role", "model", "version", "weight", "share", "shadow %"],
        [
            [
                v.name,
                v.role.value,
                v.model_name,
                v.model_version,
                f"{v.weight:g}",
                f"{v.share:.1%}",
                f"{v.shadow_percent:g}" if v.role.value == "shadow" else "",
            ]
            for v in found
        ],
    )


@variants_app.command("set")
def variants_set(
    name: str,
    variant: Annotated[str, typer.Argument(help="Variant name, e.g. green.")],
    version: VersionOpt,
    model: ModelOpt = None,
    weight: Annotated[
        float, typer.Option("--weight", min=0, help="Traffic weight; 0: pinned requests only.")
    ] = 0.0,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Add VARIANT serving VERSION to endpoint NAME (or switch VARIANT to it)."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.set_variant(variant, version_ref(version), model=model, weight=weight)
    _print(endpoint.info, json_, "Updated ")


@variants_app.command("weights")
def variants_weights(
    name: str,
    weights: Annotated[list[str], typer.Argument(help="VARIANT=WEIGHT pairs: blue=90 green=10.")],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Change traffic weights (share = weight / sum); no redeploy, no failed request."""
    parsed: dict[str, float] = {}
    for item in weights:
        key, sep, value = item.partition("=")
        try:
            parsed[key] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key:
            raise InvalidInputError(
                f"Weight {item!r} is not VARIANT=WEIGHT.",
                hint=f"civicml endpoints variants weights {name} blue=90 green=10",
            )
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.set_traffic(parsed)
    _print(endpoint.info, json_, "Updated ")


@variants_app.command("remove")
def variants_remove(
    name: str,
    variant: Annotated[str, typer.Argument(help="The variant to remove.")],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Remove a variant from an endpoint."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.remove_variant(variant)
    _print(endpoint.info, json_, "Updated ")


# Shadow ------------------------------------------------------------------------------------------
@shadow_app.command("set")
def shadow_set(
    name: str,
    version: VersionOpt,
    model: ModelOpt = None,
    percent: Annotated[
        float,
        typer.Option("--percent", min=0, max=100, help="Share of live requests copied, 0-100."),
    ] = 100.0,
    variant: Annotated[
        str | None, typer.Option("--name", help="Shadow variant name (default vN-shadow).")
    ] = None,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Shadow-test VERSION on endpoint NAME: copies of live requests, answers never returned."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.set_shadow(version_ref(version), model=model, percent=percent, name=variant)
    _print(endpoint.info, json_, "Updated ")


@shadow_app.command("remove")
def shadow_remove(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Stop shadowing and remove the shadow variant."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.remove_shadow()
    _print(endpoint.info, json_, "Updated ")


@shadow_app.command("report")
def shadow_report(
    name: str,
    shadow: Annotated[
        str | None, typer.Option("--shadow", help="Shadow variant (default: the current one).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="Regression: agree within tolerance * max(1, |live|).")
    ] = 0.01,
    min_pairs: Annotated[int, typer.Option(min=1, help="Fewest pairs to promote.")] = 100,
    min_agreement: Annotated[
        float, typer.Option(min=0, max=1, help="Lowest agreement rate to promote.")
    ] = 0.95,
    max_latency_increase: Annotated[
        float, typer.Option(min=0, help="Highest p99 latency increase to promote (0.2: 20%).")
    ] = 0.2,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML report to this file.")
    ] = None,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Compare the shadow's answers with the live ones; say whether to promote it."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        report = endpoint.shadow_report(
            shadow=shadow,
            tolerance=tolerance,
            min_pairs=min_pairs,
            min_agreement=min_agreement,
            max_latency_increase=max_latency_increase,
        )
        if html is not None:
            from civicml.serving.comparison_html import render_html

            page = render_html(endpoint.read_shadow_report(report), title=report.title)
            html.write_text(page, encoding="utf-8")
    if json_:
        print_json(report)
        return
    s = report.summary
    verdict = "PROMOTE" if s.recommendation == "promote" else "DO NOT PROMOTE"
    console.print(f"{report.title}: {verdict} (report {report.id})", markup=False)
    for reason in s.reasons:
        console.print(f"  {reason}", markup=False)


@shadow_app.command("reports")
def shadow_reports(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List an endpoint's shadow comparison reports."""
    with client() as ml:
        found = _handle(ml, project).get(name).shadow_reports()
    if json_:
        print_json(found)
        return
    table(
        f"Shadow reports of {name}",
        ["id", "shadow", "live", "pairs", "agreement", "recommendation", "created"],
        [
            [
                r.id,
                r.shadow_variant,
                r.live_variant,
                r.summary.pairs,
                "" if r.summary.agreement_rate is None else f"{r.summary.agreement_rate:.2%}",
                r.summary.recommendation,
                fmt_time(r.created_at),
            ]
            for r in found
        ],
    )


# Rollouts ----------------------------------------------------------------------------------------
@rollout_app.command("status")
def rollout_status(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show the endpoint's latest rollout with its alarms read now."""
    with client() as ml:
        found = _handle(ml, project).get(name).rollout.status()
    if json_:
        print_json(found)
    else:
        _print_rollout(found)


@rollout_app.command("list")
def rollout_list(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List every rollout of an endpoint, newest first."""
    with client() as ml:
        found = _handle(ml, project).get(name).rollout.list()
    if json_:
        print_json(found)
        return
    table(
        f"Rollouts of {name}",
        ["id", "strategy", "status", "variant", "version", "steps", "started", "reason"],
        [
            [
                r.id,
                r.strategy.value,
                r.status.value,
                r.new_variant,
                r.model_version,
                ", ".join(f"{s:g}%" for s in r.steps),
                fmt_time(r.created_at),
                r.reason or "",
            ]
            for r in found
        ],
    )


@rollout_app.command("tick")
def rollout_tick(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Advance the rollout now: roll back on an alarm, else the next step once baked."""
    with client() as ml:
        found = _handle(ml, project).get(name).rollout.tick()
    if json_:
        print_json(found)
    else:
        _print_rollout(found)


@rollout_app.command("cancel")
def rollout_cancel(
    name: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (for the audit).")] = None,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Stop the rollout and send all traffic back to the old version."""
    with client() as ml:
        found = _handle(ml, project).get(name).rollout.cancel(reason)
    if json_:
        print_json(found)
    else:
        _print_rollout(found)


# Multi-model endpoints -------------------------------------------------------------------------
@models_app.command("list")
def models_list(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List a multi-model endpoint's models (and, from a server, which are loaded)."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        found = endpoint.models()
    if json_:
        print_json(found)
        return
    cache = endpoint.info.model_cache
    loaded = set() if cache is None else set(cache.loaded)
    table(
        f"Models of {name}",
        ["target", "model", "version", "added as", "size", "loaded", "added", "by"],
        [
            [
                m.target,
                m.model_name,
                m.model_version,
                m.ref,
                f"{m.size_bytes:,}",
                "yes" if m.target in loaded else ("no" if cache is not None else "?"),
                fmt_time(m.created_at),
                m.created_by,
            ]
            for m in found
        ],
    )


@models_app.command("add")
def models_add(
    name: str,
    model: str,
    version: Annotated[str, typer.Argument(help="Version number or alias (Approved).")],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Serve VERSION of MODEL from multi-model endpoint NAME too (no redeploy)."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.add_model(model, version_ref(version))
    _print(endpoint.info, json_, "Updated ")


@models_app.command("remove")
def models_remove(
    name: str,
    model: str,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Only this version (default: every version held)."),
    ] = None,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Stop serving MODEL from multi-model endpoint NAME (requests in flight finish)."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.remove_model(model, None if version is None else version_ref(version))
    _print(endpoint.info, json_, "Updated ")
