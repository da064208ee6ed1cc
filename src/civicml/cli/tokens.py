"""``civicml tokens``, ``civicml login`` and ``civicml logout``."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from civicml.cli._common import (
    STATE,
    JsonOpt,
    client,
    console,
    err_console,
    fmt_time,
    print_json,
    table,
)

tokens_app = typer.Typer(
    help='API tokens for a server with auth = "token": create, list, revoke.',
    no_args_is_help=True,
)


@tokens_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A label for the token, e.g. laptop or ci-nightly.")],
    service: Annotated[
        bool,
        typer.Option("--service", help="A service-account token (CI, endpoint callers; admins)."),
    ] = False,
    owner: Annotated[
        str | None, typer.Option(help="The service account's name (with --service).")
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="A role the token acts in (repeat); default your roles."),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option("--project", "-p", help="A project it may reach (repeat); default all."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="PROJECT/ENDPOINT: the token may only invoke that endpoint."),
    ] = None,
    expires_in_days: Annotated[
        int, typer.Option(min=1, max=3650, help="Days until it expires.")
    ] = 90,
    no_expiry: Annotated[
        bool, typer.Option("--no-expiry", help="A token that never expires.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Create an API token and print it once (to stdout); only its hash is kept."""
    with client() as ml:
        made = ml.tokens.create(
            name,
            kind="service" if service else "personal",
            owner=owner,
            roles=role or None,
            projects=project or None,
            endpoint=endpoint,
            expires_in_days=None if no_expiry else expires_in_days,
        )
    if json_:
        print_json(made)
        return
    info = made.token
    expiry = fmt_time(info.expires_at) or "never"
    err_console.print(
        f"Token {info.name!r} ({info.id}) for {info.owner}, roles "
        f"{', '.join(info.roles) or 'none'}, expires {expiry}. It is shown once; store it now "
        "(civicml login --url URL reads it from stdin).",
        markup=False,
    )
    typer.echo(made.secret)


@tokens_app.command("list")
def list_(
    all_: Annotated[
        bool, typer.Option("--all", help="Every user's tokens (platform admins).")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Your API tokens (never their secrets)."""
    with client() as ml:
        tokens = ml.tokens.list(all=all_)
    if json_:
        print_json(tokens)
        return
    table(
        "API tokens",
        [
            "id",
            "name",
            "owner",
            "kind",
            "prefix",
            "roles",
            "projects",
            "status",
            "expires",
            "last used",
        ],
        [
            [
                t.id,
                t.name,
                t.owner,
                t.kind,
                t.prefix,
                ",".join(t.roles),
                t.endpoint or ",".join(t.projects),
                t.status,
                fmt_time(t.expires_at) or "never",
                fmt_time(t.last_used_at),
            ]
            for t in tokens
        ],
    )


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (civicml tokens list).")],
    json_: JsonOpt = False,
) -> None:
    """Revoke a token: the server refuses it from its next request on."""
    with client() as ml:
        info = ml.tokens.revoke(token_id)
    if json_:
        print_json(info)
        return
    console.print(f"Revoked token {info.name!r} ({info.id}) of {info.owner}.", markup=False)


def login(
    url: Annotated[
        str | None, typer.Option(help="The server's URL (default --url / CIVICML_URL).")
    ] = None,
    oidc: Annotated[
        bool,
        typer.Option(
            "--oidc",
            help="Sign in with the organisation's identity provider (OpenID Connect device "
            "login) instead of an API token.",
        ),
    ] = False,
) -> None:
    """Store an API token for a server (file mode 0600) for the CLI and SDK to send.

    The token is read from the terminal without echo, or from stdin when it is piped
    (civicml tokens create ... | civicml login --url URL). It is checked with the server first.
    With --oidc, sign in at the identity provider instead: open the address shown, enter the
    code, and the single sign-on session is stored (and refreshed when it expires).
    """
    from civicml.core.errors import InvalidInputError
    from civicml.core.settings import Settings
    from civicml.sdk.client import connect
    from civicml.sdk.credentials import save_token

    target = url or STATE.url
    if not target:
        raise InvalidInputError(
            "civicml login needs the server's URL.",
            hint="civicml login --url https://ml.example.org",
        )
    if oidc:
        _login_oidc(target)
        return
    if sys.stdin.isatty():
        secret = typer.prompt("API token", hide_input=True, err=True)
    else:
        secret = sys.stdin.readline()
    secret = secret.strip()
    if not secret:
        raise InvalidInputError(
            "No token was given.", hint="Create one: civicml tokens create NAME"
        )
    settings = Settings.load(home=STATE.home, url=target, ca_bundle=STATE.ca_bundle)
    with connect(target, settings=settings, token=secret) as ml:
        me = ml.tokens.whoami()
    path = save_token(target, secret, settings.home)
    console.print(
        f"Logged in to {target} as {me.user} ({', '.join(me.roles) or 'no roles'}); the token "
        f"is in {path}.",
        markup=False,
    )


def _login_oidc(target: str) -> None:
    """``civicml login --oidc``: the device grant, a spinner while the user approves."""
    from civicml.core.settings import Settings
    from civicml.sdk.client import connect
    from civicml.sdk.credentials import forget_token
    from civicml.sdk.sso import DeviceCode, device_login

    settings = Settings.load(home=STATE.home, url=target, ca_bundle=STATE.ca_bundle)
    with contextlib.ExitStack() as stack:

        def show(code: DeviceCode) -> None:
            where = code.verification_uri_complete or code.verification_uri
            err_console.print(
                f"To sign in, open {where} and enter the code {code.user_code}.", markup=False
            )
            stack.enter_context(
                err_console.status("Waiting for the sign-in to be approved…", spinner="dots")
            )

        _, path = device_login(
            target, home=settings.home, ca_bundle=settings.ca_bundle, on_code=show
        )
    try:
        with connect(target, settings=settings) as ml:
            me = ml.tokens.whoami()
    except Exception:
        forget_token(target, settings.home)  # a session the server refuses is not kept
        raise
    console.print(
        f"Logged in to {target} as {me.user} ({', '.join(me.roles) or 'no roles'}) through "
        f"single sign-on; the session is in {path}.",
        markup=False,
    )


def logout(
    url: Annotated[
        str | None, typer.Option(help="The server's URL (default --url / CIVICML_URL).")
    ] = None,
) -> None:
    """Forget the API token stored for a server (it stays valid: revoke it to end it).

    A single sign-on session (civicml login --oidc) is forgotten the same way.
    """
    from civicml.core.errors import InvalidInputError
    from civicml.core.settings import Settings
    from civicml.sdk.credentials import forget_token

    target = url or STATE.url
    if not target:
        raise InvalidInputError(
            "civicml logout needs the server's URL.", hint="civicml logout --url URL"
        )
    home = Settings.load(home=STATE.home).home
    if forget_token(target, home):
        console.print(f"Logged out of {target}.", markup=False)
    else:
        console.print(f"No token was stored for {target}.", markup=False)
