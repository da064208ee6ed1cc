"""``civicml server`` and ``civicml demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from civicml.cli._common import STATE, console, err_console


def server(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Serving processes on the port (setting server_workers, default 1): a "
            "supervisor restarts a worker that dies; SIGTERM stops all.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="CIVICML_SERVER_TLS_CERT",
            help="PEM certificate (chain): serve HTTPS only, with HSTS. Needs --tls-key.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            envvar="CIVICML_SERVER_TLS_KEY",
            help="PEM private key of --tls-cert (unencrypted, mode 0600).",
        ),
    ] = None,
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json) on the configured stores."""
    from civicml.core.settings import Settings
    from civicml.server.app import serve, tls_files

    settings = Settings.load(
        home=STATE.home,
        user=STATE.user,
        server_tls_cert=tls_cert,
        server_tls_key=tls_key,
        server_workers=workers,
    )
    tls = tls_files(settings)  # a wrong file is one Error: line here, before anything starts
    for warning in tls.warnings if tls is not None else []:
        err_console.print(f"Warning: {warning}", markup=False)
    scheme = "https" if tls is not None else "http"
    processes = f", {settings.server_workers} workers" if settings.server_workers > 1 else ""
    console.print(f"civicml server on {scheme}://{host}:{port}  (home {settings.home}{processes})")
    serve(settings, host=host, port=port, log_level=log_level)
