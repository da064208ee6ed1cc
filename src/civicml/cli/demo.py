"""``civicml demo``: the whole lifecycle, offline, on generated public-sector data.

Generate benefit applications → ingest → train two candidates → register the better → the
model risk officer sets an approval policy and a first approval is refused by its gate (no
evidence yet) → bias report on the protected attribute, SHAP explanations and the model card →
the approval passes the gate (by another user than the one who trained it) → deploy it → start
the real server on a loopback port and send requests to the live endpoint (the later, drifted
batch) → capture them → drift report of the captured inputs against the training data → then
the loop closes (``demo_loop``): a data-quality monitor finds violations → an alert fires → it
starts the retraining pipeline → the candidate passes the gate and is approved → a canary
rollout under live traffic promotes it, and a canary that misbehaves is rolled back by itself →
the model dashboard → verify the audit trail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from civicml.cli._common import STATE, console

ALGORITHMS = ("logistic", "lightgbm")
REQUESTS = 200
PROJECT = "benefits-eligibility"
SCIENTIST_DEFAULT = "demo-scientist"
OFFICER = "model-risk-officer"
POLICY = """\
description = "Housing benefit eligibility: evidence before approval"

[metrics]
val_roc_auc = { min = 0.80 }

[[bias]]               # the four-fifths rule on the protected attribute
metric = "DI"
facet = "sex"
min = 0.80
max = 1.25

[explanation]
required = true

[card]
complete = true

[data]
min_rows = 1000

[override]
roles = ["risk_officer"]
"""
CARD = {
    "model_overview.model_description": "Scores housing benefit applications by how likely "
    "they are to be eligible, so that caseworkers review the likely-eligible first.",
    "model_overview.model_owner": "Benefits analytics unit (demo)",
    "business_details.business_problem": "Shorten the time eligible residents wait for a decision.",
    "business_details.kpis": "Validation ROC AUC >= 0.80; median waiting time -20%.",
    "business_details.acceptable_error": "A missed eligible applicant costs more than an extra "
    "review: recall of eligible applicants must stay >= 0.80.",
    "intended_uses.purpose_of_model": "Order the review queue. Never to refuse a claim.",
    "intended_uses.intended_uses": "Caseworkers see the score; every decision stays theirs.",
    "intended_uses.risk_rating": "High",
    "intended_uses.explanations_for_risk_rating": "It affects access to a public benefit.",
    "additional_information.ethical_considerations": "Disparate impact by sex is checked "
    "before approval (four-fifths rule) and monitored after deployment.",
    "additional_information.caveats_and_recommendations": "Trained on generated data; retrain "
    "when the drift report says the applicant population changed.",
}


def demo(
    home: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its data (default: a new temporary directory)."),
    ] = None,
    rows: Annotated[
        int, typer.Option(min=500, max=200_000, help="Training rows to generate.")
    ] = 5_000,
) -> None:
    """Run the lifecycle end to end, offline: data → training → registry → endpoint → drift."""
    import civicml as cm
    from civicml.data.samples import benefit_applications

    where = home or Path(tempfile.mkdtemp(prefix="civicml-demo-"))
    scientist = STATE.user or SCIENTIST_DEFAULT
    started = time.perf_counter()
    with _connect(where, scientist) as ml:
        _step(f"Platform at {where} (SQLite + content-addressed artifacts), as {scientist}")
        proj = ml.project(PROJECT)
        applications = benefit_applications(rows, seed=7)
        raw = proj.datasets.ingest("applications", applications)
        _step(
            f"Ingested {raw.name} v{raw.version}: {raw.row_count} rows, "
            f"{len(raw.columns)} columns, sha256:{raw.digest[:12]}…"
        )
        candidates = []
        for algorithm in ALGORITHMS:
            with proj.start_run(experiment="candidates", name=algorithm) as run:
                trained = cm.train.tabular(raw, target="eligible", algorithm=algorithm, run=run)
            auc = trained.metrics["val_roc_auc"]
            candidates.append((auc, trained, run))
            _step(
                f"Trained {algorithm}: validation ROC AUC {auc:.3f}, accuracy "
                f"{trained.metrics['val_accuracy']:.3f} (run {run.id[:12]}…)"
            )
        auc, best, best_run = max(candidates, key=lambda c: c[0])
        mv = proj.models.register(
            "eligibility", best, run=best_run, description="Eligibility for the housing benefit"
        )
        _step(
            f"Registered {mv.name} v{mv.version} ({best.model.algorithm}, AUC {auc:.3f}): "
            f"{mv.approval_status.value}"
        )
    reports = where / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    with _connect(where, OFFICER) as ml:
        proj = ml.project(PROJECT)
        policy = proj.models.set_policy("eligibility", POLICY)
        _step(f"{OFFICER} set approval policy v{policy.version} of {mv.name}")
        from civicml.oversight import GateFailedError  # heavy: not at start-up

        try:
            proj.models.approve(mv, note="First look.")
        except GateFailedError as refused:
            failed = [d["name"] for d in refused.details]
            _step(
                f"Approval refused by the gate: {len(failed)} check(s) failed ({', '.join(failed)})"
            )
        else:  # pragma: no cover - the policy asks for evidence that does not exist yet
            raise RuntimeError("the approval gate should have refused the first approval")
    with _connect(where, scientist) as ml:
        proj = ml.project(PROJECT)
        bias = proj.evaluations.bias(
            raw, label="eligible", positive_label=1, facets="sex", model=mv
        )
        values = bias.summary.values["sex"]
        bias_html = reports / f"bias-{bias.id[:12]}.html"
        bias_html.write_text(proj.evaluations.html(bias), encoding="utf-8")
        _step(
            "Bias report on sex: "
            + ", ".join(
                f"{value}: DI {m['DI']:.2f}, DPPL {m['DPPL']:+.3f}"
                for value, m in values.items()
                if m.get("DI") is not None and m.get("DPPL") is not None
            )
        )
        explanation = proj.evaluations.explain(mv, raw, rows=500)
        top = explanation.summary.top_features[:3]
        explain_html = reports / f"explanation-{explanation.id[:12]}.html"
        explain_html.write_text(proj.evaluations.html(explanation), encoding="utf-8")
        _step("SHAP explanation: top features " + ", ".join(f.column for f in top))
        card = proj.cards.edit(mv, fields=CARD, note="Written with the service owner.")
        card = proj.cards.set_status(mv, status="PendingReview", note="Ready for review.")
        _step(f"Model card v{card.card_version}: complete={card.complete}, {card.status}")
    with _connect(where, OFFICER) as ml:
        proj = ml.project(PROJECT)
        proj.cards.set_status(mv, status="Approved", note="Card reviewed.")
        card_html = reports / f"card-{mv.name}-v{mv.version}.html"
        card_html.write_text(proj.cards.export(mv), encoding="utf-8")
        gate = proj.models.gate(mv)
        mv = proj.models.approve(
            mv, note=f"Validation ROC AUC {auc:.3f}; bias, explanation and card reviewed."
        )
        _step(
            f"Approved by {mv.approval_by}: gate passed {len(gate.checks)}/{len(gate.checks)} "
            "checks of the policy"
        )
    with cm.connect(home=where, user="ml-engineer") as ml:
        proj = ml.project(PROJECT)
        endpoint = proj.endpoints.deploy("eligibility", mv)
        _step(f"Deployed endpoint {endpoint.name} → {mv.name} v{mv.version}, capture on")
    later = benefit_applications(REQUESTS, seed=7, drifted=True).drop(columns=["eligible"])
    with _live_server(where) as url:
        report, captured, approved_share = _capture_and_compare(url, raw, later)
        _step(
            f"Sent {REQUESTS} requests to the live endpoint over HTTP; "
            f"{approved_share:.0%} predicted eligible"
        )
        _step(f"Captured {captured.row_count} requests as {captured.name} v{captured.version}")
        summary = report.summary
        _step(
            f"Drift report: {summary.verdict} — {summary.n_drifted} of {summary.n_columns} "
            f"columns drifted ({', '.join(summary.drifted_columns[:5])}), "
            f"{summary.violations} Model Monitor violation(s)"
        )
        mv = _close_the_loop(where, url, scientist, mv, later)
    with cm.connect(home=where) as ml:
        html = reports / f"drift-{report.id[:12]}.html"
        html.write_text(ml.project(PROJECT).monitoring.html(report.id), encoding="utf-8")
        board = ml.project(PROJECT).models.dashboard().rows
        row = next((r for r in board if r.version == mv.version), board[0])
        _step(
            f"Dashboard: {row.model} v{row.version} {row.approval_status}, deployed to "
            f"{', '.join(row.endpoints)}, gate {row.gate}, card {row.card_status} "
            f"({'complete' if row.card_complete else 'incomplete'}), risk {row.risk_rating}"
        )
        audit = ml.verify_audit()
    _step(f"Audit chain: {audit.events_checked} events verified, ok={audit.ok}")
    civicml = f"{civicml_command()} --home {shlex.quote(str(where))}"
    record = example_record(applications, [c.name for c in mv.signature or []])
    console.print(
        f"\nDone in {time.perf_counter() - started:.1f} s. Data is in {where}.\n"
        f"  Bias report:    {bias_html}\n"
        f"  Explanations:   {explain_html}\n"
        f"  Model card:     {card_html}\n"
        f"  Drift report:   {html}\n"
        f"  Serve the API:  {civicml} server --port 8080   "
        f"(OpenAPI at http://127.0.0.1:8080/openapi.json)\n"
        f"  Predict:        {civicml} endpoints invoke eligibility -p {PROJECT} "
        f"--record {shlex.quote(json.dumps(record))}\n"
        f"  Record fields:  {_describe_inputs(mv.signature or [])}\n"
        f"  Verify audit:   {civicml} audit verify",
        markup=False,
    )
    if not audit.ok:
        raise typer.Exit(1)


def civicml_command() -> str:
    """How to run this ``civicml`` again from the user's shell.

    ``civicml`` when that name finds this very program on ``PATH``; else its path (relative to
    the current directory when it lies below it, e.g. ``.venv/bin/civicml`` in a clone whose
    virtual environment is not activated); else ``python -m civicml.cli.main`` with this
    interpreter.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    script = Path(argv0)
    if script.stem != "civicml":  # started another way (python -m, a test runner)
        script = Path(sys.executable).with_name("civicml" + Path(sys.executable).suffix)
        if not script.is_file():
            return f"{shlex.quote(sys.executable)} -m civicml.cli.main"
    found = shutil.which("civicml")
    if found and _same_file(Path(found), script):
        return "civicml"
    absolute = Path(os.path.abspath(script))
    try:
        shown = absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return shlex.quote(str(absolute))
    return shlex.quote(shown if "/" in shown else f"./{shown}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def example_record(frame: Any, columns: list[str]) -> dict[str, Any]:
    """The first complete row of ``frame`` as a JSON-ready record of ``columns`` (the model's
    inputs, in its signature's order)."""
    row = frame[columns].dropna().iloc[0]
    return {name: value.item() if hasattr(value, "item") else value for name, value in row.items()}


def _describe_inputs(signature: Any) -> str:
    """``income (double, may be null), household_size (integer), …``: what --record needs."""
    parts = [f"{c.name} ({c.type}{', may be null' if c.nullable else ''})" for c in signature]
    return ", ".join(parts) + "; all required (null only where it may be null)"


@contextlib.contextmanager
def _live_server(where: Path) -> Iterator[str]:
    """The real server on a free loopback port, for as long as the block runs; its URL. Its
    scheduler and rollout ticker are off: the demo ticks them itself, so each step shows."""
    import socket

    import uvicorn

    from civicml.core.settings import Settings
    from civicml.server.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    settings = Settings.load(
        home=where, user="ml-engineer", scheduler_enabled=False, rollout_enabled=False
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _capture_and_compare(url: str, raw: Any, later: Any) -> tuple[Any, Any, float]:
    """Call the endpoint over HTTP, then turn the captured requests into a dataset and compare
    it with the training data."""
    import civicml as cm

    with cm.connect(url, user="caseworker-app") as remote:
        proj = remote.project(PROJECT)
        endpoint = proj.endpoints.get("eligibility")
        positive = 0
        records = later.astype(object).where(later.notna(), None).to_dict("records")
        for record in records:
            result = endpoint.predict(record)
            positive += int(result.predictions[0] == 1)
        captured = endpoint.capture_to_dataset("eligibility-requests")
        report = proj.monitoring.drift(
            captured,
            baseline=raw,
            columns=list(later.columns),
            title="Requests to the eligibility endpoint vs training data",
        )
    return report, captured, positive / max(1, len(records))


def _close_the_loop(where: Path, url: str, scientist: str, old: Any, later: Any) -> Any:
    """Monitor → alert → retraining pipeline → gate and approval → canary promoted, and a
    misbehaving canary rolled back; the version the endpoint serves at the end."""
    import civicml as cm
    from civicml.cli import demo_loop
    from civicml.core.settings import Settings
    from civicml.pipelines.scheduler import Scheduler
    from civicml.sdk.embedded import open_context

    records = later.astype(object).where(later.notna(), None).to_dict("records")
    with _connect(where, scientist, pipeline_modules=[demo_loop.MODULE]) as ml:
        ml.schedules.create(
            demo_loop.SCHEDULE,
            project=PROJECT,
            pipeline=demo_loop.PIPELINE,
            event="alert.fired",
            match={"rule": demo_loop.RULE},
            params={"alert": "{event.alert_id}"},
        )
    settings = Settings.load(
        home=where,
        user=scientist,
        pipeline_modules=[demo_loop.MODULE],
        alerts_enabled=False,
        monitors_enabled=False,
    )
    ctx = open_context(settings)
    scheduler = Scheduler(ctx)
    try:
        with cm.connect(url, user="ml-engineer") as remote:
            candidate = demo_loop.watch_and_retrain(remote.project(PROJECT), scheduler, _step)
    finally:
        scheduler.stop(wait=True)
        ctx.db.close()
    with _connect(where, scientist) as ml:
        proj = ml.project(PROJECT)
        proj.cards.edit(candidate, fields=CARD, note="Same service, retrained on recent data.")
        proj.cards.set_status(candidate, status="PendingReview", note="Ready for review.")
    with _connect(where, OFFICER) as ml:
        proj = ml.project(PROJECT)
        proj.cards.set_status(candidate, status="Approved", note="Card reviewed.")
        gate = proj.models.gate(candidate)
        candidate = proj.models.approve(candidate, note="Retrained candidate: evidence reviewed.")
        _step(
            f"{OFFICER} approved v{candidate.version}: gate passed {len(gate.checks)}/"
            f"{len(gate.checks)} checks (bias and explanation made by the pipeline)"
        )
    with cm.connect(url, user="ml-engineer") as remote:
        endpoint = remote.project(PROJECT).endpoints.get("eligibility")

        def send(n: int) -> None:
            for i in range(n):
                endpoint.predict(records[i % len(records)])

        demo_loop.canary(endpoint, send, candidate, _step)
        demo_loop.misbehaving_canary(endpoint, send, old, _step)
    return candidate


def _connect(where: Path, user: str, **settings: Any) -> Any:
    """The demo's platform as ``user``; the model risk officer holds the override role."""
    import civicml as cm
    from civicml.core.settings import Settings

    roles = {OFFICER: ["risk_officer", "reviewer"]}
    loaded = Settings.load(home=where, user=user, roles=roles, **settings)
    return cm.connect(settings=loaded, user=user)


def _step(text: str) -> None:
    _step.n = getattr(_step, "n", 0) + 1  # type: ignore[attr-defined]
    console.print(f"[bold green]✓[/] [bold]{_step.n}.[/] ", end="")  # type: ignore[attr-defined]
    console.print(text, markup=False)
