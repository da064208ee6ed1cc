"""``civicml server`` and ``civicml demo``."""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from civicml.cli._common import STATE, console


def server(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json) on the configured stores."""
    from civicml.core.settings import Settings
    from civicml.server.app import serve

    settings = Settings.load(home=STATE.home, user=STATE.user)
    console.print(f"civicml server on http://{host}:{port}  (home {settings.home})")
    serve(settings, host=host, port=port, log_level=log_level)


def demo(
    home: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its data (default: a new temporary directory)."),
    ] = None,
) -> None:
    """Run the end-to-end tour offline: tracking, registry, approval, aliases, lineage, audit."""
    from civicml.sdk.client import connect

    where = home or Path(tempfile.mkdtemp(prefix="civicml-demo-"))
    rng = random.Random(7)  # noqa: S311 - demo data, not security
    with connect(home=where, user=STATE.user or "demo-scientist") as ml:
        _step(1, f"Platform at {where} (SQLite + content-addressed artifacts)")
        proj = ml.project("benefits-eligibility")
        _step(2, f"Project {proj.name}")
        best = None
        for lr in (0.3, 0.1, 0.03):
            with proj.start_run(
                experiment="baseline", params={"learning_rate": lr, "algorithm": "gbm"}
            ) as run:
                for epoch in range(50):
                    loss = math.exp(-lr * epoch / 3) + rng.uniform(0, 0.02)
                    run.log_metric("train_loss", loss, step=epoch)
                auc = 0.80 + lr / 3 + rng.uniform(0, 0.01)
                run.log_metrics({"val_auc": auc, "val_accuracy": auc - 0.07})
                run.log_text(json.dumps({"weights": [lr, auc]}), "model/model.json")
            _step(3, f"Run {run.id[:12]}… lr={lr}: 50 losses logged, val_auc={auc:.3f}")
            if best is None or auc > best[1]:
                best = (run, auc)
        assert best is not None  # noqa: S101 - three runs above
        top = proj.runs.search("metrics.val_auc > 0.8", order_by=["metrics.val_auc DESC"])
        _step(
            4,
            f"Search 'metrics.val_auc > 0.8' ordered by val_auc: {len(top)} runs, "
            f"best {top[0].id[:12]}…",
        )
        mv = proj.models.register(
            "eligibility",
            run=best[0],
            signature=[
                {"name": "income", "type": "float64"},
                {"name": "household_size", "type": "int64"},
            ],
        )
        _step(5, f"Registered {mv.name} v{mv.version}: {mv.approval_status.value}")
    with connect(home=where, user="model-risk-officer") as ml:
        proj = ml.project("benefits-eligibility")
        mv = proj.models.approve(mv, note="Evaluation meets the agreed KPI (AUC > 0.85).")
        _step(6, f"Approved by {mv.approval_by}: {mv.approval_note}")
        mv = proj.models.set_alias("eligibility", "production", mv.version)
        _step(7, f"Alias production → v{mv.version}")
        graph = ml.lineage("model_version", mv.id, direction="upstream")
        _step(
            8,
            "Lineage upstream of the version: "
            + ", ".join(f"{n.kind} {n.name}" for n in graph.nodes),
        )
        report = ml.verify_audit()
        _step(
            9,
            f"Audit chain: {report.events_checked} events verified, "
            f"ok={report.ok}, signed head at {report.witness.seq if report.witness else '-'}",
        )
    console.print(
        f"\nDone. Data is in {where}.\n"
        f"  Serve the API:  civicml --home {where} server --port 8080\n"
        f"  Look around:    civicml --home {where} runs list -p benefits-eligibility\n"
        f"  Verify audit:   civicml --home {where} audit verify"
    )
    if not report.ok:
        raise typer.Exit(1)


def _step(number: int, text: str) -> None:
    console.print(f"[bold green]✓[/] [bold]{number}.[/] {text}")
