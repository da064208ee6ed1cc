"""``civicml server`` and ``civicml demo``."""

from __future__ import annotations

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
