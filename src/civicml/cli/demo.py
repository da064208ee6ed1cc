"""``civicml demo``: the whole lifecycle, offline, on generated public-sector data.

Generate benefit applications → ingest → train two candidates → register the better →
approve it (as another user) → deploy it → start the real server on a loopback port and send
requests to the live endpoint (the later, drifted batch) → capture them → drift report of the
captured inputs against the training data → verify the audit trail.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from civicml.cli._common import STATE, console

ALGORITHMS = ("logistic", "lightgbm")
REQUESTS = 200


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
    scientist = STATE.user or "demo-scientist"
    started = time.perf_counter()
    with cm.connect(home=where, user=scientist) as ml:
        _step(f"Platform at {where} (SQLite + content-addressed artifacts), as {scientist}")
        proj = ml.project("benefits-eligibility")
        raw = proj.datasets.ingest("applications", benefit_applications(rows, seed=7))
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
    with cm.connect(home=where, user="model-risk-officer") as ml:
        proj = ml.project("benefits-eligibility")
        mv = proj.models.approve(mv, note=f"Validation ROC AUC {auc:.3f} meets the agreed 0.80.")
        _step(f"Approved by {mv.approval_by}: {mv.approval_note}")
    with cm.connect(home=where, user="ml-engineer") as ml:
        proj = ml.project("benefits-eligibility")
        endpoint = proj.endpoints.deploy("eligibility", mv)
        _step(f"Deployed endpoint {endpoint.name} → {mv.name} v{mv.version}, capture on")
    later = benefit_applications(REQUESTS, seed=7, drifted=True).drop(columns=["eligible"])
    report, captured, approved_share = _serve_and_monitor(where, raw, later)
    _step(
        f"Sent {REQUESTS} requests to the live endpoint over HTTP; "
        f"{approved_share:.0%} predicted eligible"
    )
    _step(f"Captured {captured.row_count} requests as {captured.name} v{captured.version}")
    summary = report.summary
    _step(
        f"Drift report: {summary.verdict} — {summary.n_drifted} of {summary.n_columns} columns "
        f"drifted ({', '.join(summary.drifted_columns[:5])}), {summary.violations} "
        "Model Monitor violation(s)"
    )
    with cm.connect(home=where) as ml:
        html = where / "reports" / f"drift-{report.id[:12]}.html"
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(
            ml.project("benefits-eligibility").monitoring.html(report.id), encoding="utf-8"
        )
        audit = ml.verify_audit()
    _step(f"Audit chain: {audit.events_checked} events verified, ok={audit.ok}")
    console.print(
        f"\nDone in {time.perf_counter() - started:.1f} s. Data is in {where}.\n"
        f"  Drift report:   {html}\n"
        f"  Serve the API:  civicml --home {where} server --port 8080   "
        f"(OpenAPI at http://127.0.0.1:8080/openapi.json)\n"
        f"  Predict:        civicml --home {where} endpoints invoke eligibility "
        "-p benefits-eligibility --record '{...}'\n"
        f"  Verify audit:   civicml --home {where} audit verify",
        markup=False,
    )
    if not audit.ok:
        raise typer.Exit(1)


def _serve_and_monitor(where: Path, raw: Any, later: Any) -> tuple[Any, Any, float]:
    """Start the real server on a free loopback port, call the endpoint over HTTP, then turn
    the captured requests into a dataset and compare it with the training data."""
    import socket

    import uvicorn

    import civicml as cm
    from civicml.core.settings import Settings
    from civicml.server.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(Settings.load(home=where, user="ml-engineer"))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with cm.connect(f"http://127.0.0.1:{port}", user="caseworker-app") as remote:
            proj = remote.project("benefits-eligibility")
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
                columns=[c for c in later.columns],
                title="Requests to the eligibility endpoint vs training data",
            )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return report, captured, positive / max(1, len(records))


def _step(text: str) -> None:
    _step.n = getattr(_step, "n", 0) + 1  # type: ignore[attr-defined]
    console.print(f"[bold green]✓[/] [bold]{_step.n}.[/] ", end="")  # type: ignore[attr-defined]
    console.print(text, markup=False)
