"""Where a source connects: a named connection from the settings, or an inline URL without a
password — and the only form of either that is ever shown.

**Credentials stay in the settings.** A source stores either the *name* of a connection of the
``source_connections`` setting (whose URL carries the user and password, as the operator set it
in the environment or ``civicml.toml``) or an inline URL that carries no password (refused
otherwise, with the hint to use a named connection). What a source shows — in its metadata,
lineage, audit events, logs and error messages — is :func:`redact`: the URL with the password
removed, or ``connection:<name>``. Driver errors are scrubbed of the real URL before they are
shown (:func:`scrub`).

**Inline URLs are limited** to the schemes of the source's kind, to network databases (never a
SQLite file on the server) and to the hosts of ``sources_allowed_hosts`` when it is set, since
a caller with ``sources.write`` makes the server connect where the URL points.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from civicml.core.errors import ConfigurationError, InvalidInputError
from civicml.core.settings import Settings
from civicml.sources.schemas import SourceKind

__all__ = ["Target", "check_target", "redact", "resolve", "scrub"]

#: URL schemes each stream kind accepts.
STREAM_SCHEMES: dict[SourceKind, tuple[str, ...]] = {
    SourceKind.NATS: ("nats", "tls"),
    SourceKind.REDIS: ("redis", "rediss"),
    SourceKind.MQTT: ("mqtt", "mqtts"),
    SourceKind.RABBITMQ: ("amqp", "amqps"),
}
#: Database backends an inline URL may name (files such as SQLite only via a named connection).
NETWORK_DATABASES = ("postgresql", "mysql", "mariadb", "mssql", "oracle")
#: Words that mark a credential in a URL's query string (``?password=…``, ``?sslkey=…``).
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "credential")


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved connection: the real URL (with credentials; never shown) and its shown form."""

    url: str
    shown: str


def _host_allowed(host: str, allowed: list[str]) -> bool:
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        pattern = entry.lower().rstrip(".")
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if host == pattern:
            return True
    return False


def redact(url: str) -> str:
    """``url`` without its password (and without a query, which may carry one)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"
    return str(parsed.set(password=None, query={}).render_as_string(hide_password=True))


def _parse_db_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as err:
        raise InvalidInputError(
            "The URL is not a database URL.",
            hint="Write it as SQLAlchemy does: postgresql+psycopg://user@host:5432/dbname or "
            "mysql+pymysql://user@host:3306/dbname.",
        ) from err


def check_target(kind: SourceKind, url: str | None, connection: str | None, s: Settings) -> str:
    """What a new source will show as its target; checks the inline URL or connection name.

    Raises:
        InvalidInputError: Both or neither given; an unsupported scheme; a password in an
            inline URL; a host outside ``sources_allowed_hosts``.
        ConfigurationError: No connection of that name in the settings.
    """
    if (url is None) == (connection is None):
        raise InvalidInputError(
            "A source needs a url or a connection (exactly one).",
            hint="Give --url postgresql+psycopg://etl@db/agency, or --connection NAME of the "
            "source_connections setting (with its credentials).",
        )
    if connection is not None:
        resolve(kind, None, connection, s)
        return f"connection:{connection}"
    assert url is not None  # noqa: S101 - narrowed above
    if any(ord(c) < 32 for c in url):
        raise InvalidInputError("The URL holds control characters.", hint="Check the URL.")
    if kind is SourceKind.DATABASE:
        parsed = _parse_db_url(url)
        if parsed.get_backend_name() not in NETWORK_DATABASES:
            raise InvalidInputError(
                f"Database scheme {parsed.get_backend_name()!r} is not supported for an inline "
                "URL.",
                hint=f"Use one of {', '.join(NETWORK_DATABASES)}; a file database (SQLite) only "
                "through a named connection of the source_connections setting.",
            )
        password, host = parsed.password, parsed.host or ""
    else:
        parts = urlsplit(url)
        schemes = STREAM_SCHEMES[kind]
        if parts.scheme.lower() not in schemes:
            raise InvalidInputError(
                f"Scheme {parts.scheme!r} is not a {kind.value} URL.",
                hint=f"Use {' or '.join(s + '://' for s in schemes)}host:port.",
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as err:
            raise InvalidInputError("The URL has a bad port.", hint="Check it.") from err
        password, host = parts.password, parts.hostname or ""
    query = urlsplit(url).query.lower()
    if password or any(word in query for word in _SECRET_WORDS):
        raise InvalidInputError(
            "An inline source URL may not carry a password: it would be stored with the source.",
            hint="Put the URL in the source_connections setting on the server and give "
            "--connection NAME (docs/sources.md, Credentials).",
        )
    if not host:
        raise InvalidInputError(f"{redact(url)!r} names no host.", hint="Add host[:port].")
    if not _host_allowed(host, s.sources_allowed_hosts):
        raise InvalidInputError(
            f"Host {host!r} is not in the sources_allowed_hosts setting.",
            hint="Use an allowed host or a named connection, or ask the operator to allow it.",
        )
    return redact(url)


def resolve(kind: SourceKind, url: str | None, connection: str | None, s: Settings) -> Target:
    """The URL to connect with (credentials included) and how it is shown.

    Raises:
        ConfigurationError: The named connection is not in the settings, or its URL does not
            fit the source's kind.
    """
    if connection is None:
        if url is None:  # pragma: no cover - checked at creation
            raise InvalidInputError("The source has no URL.", hint="Re-create it.")
        return Target(url=url, shown=redact(url))
    secret = s.source_connections.get(connection)
    if secret is None:
        raise ConfigurationError(
            f"No source connection named {connection!r} is configured.",
            hint="Set it on the server: CIVICML_SOURCE_CONNECTIONS='{\""
            f'{connection}": "<url with credentials>"}}\' (docs/sources.md, Credentials).',
        )
    real = secret.get_secret_value()
    if kind is not SourceKind.DATABASE:
        scheme = urlsplit(real).scheme.lower()
        if scheme not in STREAM_SCHEMES[kind]:
            raise ConfigurationError(
                f"Source connection {connection!r} is not a {kind.value} URL.",
                hint=f"Its scheme must be {' or '.join(STREAM_SCHEMES[kind])}.",
            )
    return Target(url=real, shown=f"connection:{connection}")


def scrub(text: str, target: Target) -> str:
    """``text`` (a driver's error) without the real URL, its password or its user name."""
    out = text.replace(target.url, target.shown)
    try:
        secrets = [make_url(target.url).password]
    except ArgumentError:
        secrets = [urlsplit(target.url).password]
    for secret in secrets:
        if secret:
            out = out.replace(str(secret), "********")
    return out
