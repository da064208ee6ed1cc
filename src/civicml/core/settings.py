"""One settings object for the whole platform.

Precedence: explicit arguments > environment (``CIVICML_*``) > ``civicml.toml`` > defaults. The
TOML file is ``$CIVICML_CONFIG`` when set, else ``./civicml.toml``, else
``$CIVICML_HOME/civicml.toml``. Unknown keys and wrong types fail at start with a hint.

Settings are passed in (``Settings.load()`` once, at the edge), never imported as a global.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from civicml.core.compute import check_compute
from civicml.core.errors import CivicMLError, ConfigurationError
from civicml.core.names import validate_user_name
from civicml.core.permissions import role_table

__all__ = ["RateCard", "Settings", "check_identity_url", "config_file"]

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_s3_url(value: str) -> str:
    """``s3://bucket[/prefix]`` normalised (``s3://`` lower-case, no trailing ``/``)."""
    parts = urlsplit(value)
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        raise ValueError(
            f"{value!r} is not an s3://bucket/prefix URL: it carries a query, fragment, port "
            "or credentials (set the endpoint with s3_endpoint_url; credentials come from the "
            "AWS credential chain)"
        )
    bucket = parts.netloc
    if not _S3_BUCKET.match(bucket):
        raise ValueError(
            f"{value!r}: {bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, "
            "dots and hyphens), e.g. s3://civicml-artifacts/prod"
        )
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"{value!r}: the prefix has an empty, '.' or '..' part")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _default_home() -> Path:
    return Path(os.environ.get("CIVICML_HOME") or Path.home() / ".civicml").expanduser()


def config_file() -> Path | None:
    """The TOML file that applies, if any."""
    explicit = os.environ.get("CIVICML_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    for candidate in (Path.cwd() / "civicml.toml", _default_home() / "civicml.toml"):
        if candidate.is_file():
            return candidate
    return None


def check_identity_url(value: str, what: str) -> str:
    """``value`` if it is an identity-provider URL civicml may talk to: https://, or http://
    only on a loopback address; raises ValueError naming ``what`` otherwise."""
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(
            f"{what} {value!r} must be an https:// URL (http:// only on a loopback address)"
        )
    if not host or parts.fragment or (what == "oidc_issuer" and parts.query):
        raise ValueError(f"{what} {value!r} is not an issuer URL")
    return value


#: Signature algorithms oidc_algorithms may name: asymmetric only (never "none" nor HMAC).
_OIDC_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)


class RateCard(BaseModel):
    """Prices of resources for the cost report and budgets (docs/costs.md), in ``currency``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_hour: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="Per CPU-hour.")
    gpu_hour: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="Per GPU-hour.")
    memory_gb_hour: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="Per GB of memory held for an hour."
    )
    storage_gb_month: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="Per GB stored for a 30-day month."
    )


class Settings(BaseSettings):
    """civicml settings (environment variables are ``CIVICML_`` + the upper-case field name)."""

    model_config = SettingsConfigDict(env_prefix="CIVICML_", extra="forbid", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Where civicml keeps its embedded database, artifacts, keys and reports.",
    )
    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; default SQLite at "
        "$CIVICML_HOME/civicml.db. PostgreSQL: 'postgresql+psycopg://user@host:5432/db'.",
    )
    artifacts: str | None = Field(
        default=None,
        description="Where artifacts are stored: a directory, a file:// URL, or an "
        "S3-compatible bucket 's3://bucket/prefix' (AWS S3, MinIO, Ceph; see s3_endpoint_url; "
        "needs the 's3' extra). Default $CIVICML_HOME/artifacts. Other URLs (gs://, ...) are "
        "refused at start.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible object store for an s3:// artifacts URL, "
        "e.g. 'https://minio.agency.internal:9000' (MinIO, Ceph, an agency object store); "
        "default AWS S3. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role), never from civicml settings.",
    )
    s3_region: str | None = Field(
        default=None,
        description="Region of the s3:// artifacts bucket (default boto3's: AWS_REGION or "
        "~/.aws/config).",
    )
    compute: str = Field(
        default="local",
        description="Where pipeline steps, tuning trials and batch-prediction chunks run: "
        "'local' (threads in this process), 'ray' (a Ray cluster on this machine, or a new "
        "local one) or 'ray://host:port' (a Ray cluster through the Ray client); Ray needs "
        "the 'ray' extra.",
    )
    user: str | None = Field(
        default=None,
        description="The user name recorded for calls from this process (default: the OS user).",
    )
    roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Roles per user on every project, e.g. rosa = ['reviewer', 'risk_officer'] "
        "under [roles] in civicml.toml (or CIVICML_ROLES as JSON); names compare case-blind. In "
        "embedded use and with auth = 'none', users not listed act as 'admin'; with auth = "
        "'token' roles come from the token, and per-project grants from 'civicml projects "
        "grant' (docs/security.md). The server reads this; clients cannot claim roles.",
    )
    custom_roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Roles of your own as sets of permissions, e.g. invoker-and-reader = "
        "['projects.read', 'endpoints.invoke'] under [custom_roles]; an empty list makes a "
        "label a policy can name (risk_officer = []). Built-in role names cannot be redefined; "
        "the permissions are listed in docs/security.md.",
    )
    url: str | None = Field(
        default=None,
        description="URL of a civicml server; when set, the CLI and cm.connect() talk to it.",
    )
    auth: Literal["none", "token"] = Field(
        default="none",
        description="How the server knows who calls: 'token' (an API token in "
        "'Authorization: Bearer ...' on every request but health) or 'none' (the "
        "X-CivicML-User header is believed; allowed only on a loopback address).",
    )
    token: SecretStr | None = Field(
        default=None,
        description="API token the CLI and SDK send to the server (CIVICML_TOKEN); default the "
        "one 'civicml login' stored. Shown as ********.",
    )
    auth_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a server process trusts a verified token before reading it "
        "again; a token revoked through another server process stops working within this "
        "window (at once in the process that revoked it).",
    )
    auth_max_failures: int = Field(
        default=20,
        ge=1,
        description="Failed authentications one client address may make per "
        "auth_failure_window_s; beyond it the server answers 429 with Retry-After.",
    )
    auth_failure_window_s: int = Field(
        default=60,
        ge=1,
        le=86_400,
        description="The window (seconds) of auth_max_failures.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (https://, or http:// on a loopback address); "
        "when set, a bearer JWT is verified against its keys as a second way to authenticate "
        "besides API tokens (docs/security.md, 'Single sign-on').",
    )
    oidc_audience: str | None = Field(
        default=None,
        description="The 'aud' a JWT must carry (the client id civicml has at the identity "
        "provider); required with oidc_issuer.",
    )
    oidc_client_id: str | None = Field(
        default=None,
        description="The public client 'civicml login --oidc' signs in as (OAuth 2.0 device "
        "grant); default: oidc_audience. Served to clients at GET /api/v1/auth/oidc.",
    )
    oidc_scopes: list[str] = Field(
        default_factory=list,
        description="Scopes 'civicml login --oidc' asks for besides 'openid', e.g. "
        "['offline_access'] for a refresh token.",
    )
    oidc_roles_claim: str | None = Field(
        default="groups",
        description="Claim holding the user's groups or roles; a dotted path such as "
        "'realm_access.roles' (Keycloak) reaches into nested objects.",
    )
    oidc_role_map: dict[str, list[str]] = Field(
        default_factory=dict,
        description="civicml roles per value of oidc_roles_claim, e.g. "
        "{'ml-reviewers' = ['reviewer'], 'benefits-analysts' = ['benefits:data-scientist']}: "
        "a plain role holds on every project, 'project:role' on that project only; values "
        "not listed give no role.",
    )
    oidc_user_claim: str = Field(
        default="preferred_username",
        description="Claim naming the civicml user ('sub' when the token lacks it).",
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "PS256"],
        description="Signature algorithms a JWT may use (RS*, PS*, ES*, EdDSA); 'none' and "
        "HMAC (HS*) are refused at start-up.",
    )
    oidc_jwks_cache_s: float = Field(
        default=3600.0,
        ge=0,
        le=86_400,
        description="How long the issuer's keys (JWKS) are used before being fetched again.",
    )
    oidc_jwks_refetch_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Fewest seconds between two fetches of the JWKS for an unknown key id "
        "(key rotation), so forged key ids cannot make the server hammer the issuer.",
    )
    oidc_leeway_s: float = Field(
        default=60.0,
        ge=0,
        le=600,
        description="Clock skew (seconds) allowed on exp, nbf and iat.",
    )
    audit_key: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs the audit chain head; default "
        "audit-ed25519.pem in keys_dir (a key already in $CIVICML_HOME/keys is used while "
        "keys_dir holds none), created on first use. Keep it outside the database.",
    )
    audit_witness: Literal["home", "database"] = Field(
        default="home",
        description="Where signed chain heads (witnesses) are kept: 'home' (the file "
        "audit/witness.json in $CIVICML_HOME) or 'database' (also a signed-head row per commit "
        "in the database, so several servers on one PostgreSQL database sharing keys_dir keep "
        "one verifiable chain).",
    )
    audit_witness_interval_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description="Group commit for the audit witness: a writer signs the newest chain head "
        "it committed at most this long after the commit, once for all its commits in between "
        "(verify, export and a normal exit sign at once). 0 signs after every commit (an fsync "
        "each). A process killed within the interval leaves its newest events unsigned until "
        "the next write; verify reports them as an unsigned tail.",
    )
    run_heartbeat_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A running run with no heartbeat for this long is marked killed.",
    )
    metrics_flush_interval_ms: int = Field(
        default=200,
        ge=1,
        le=60_000,
        description="Longest time a buffered metric waits before its group commit.",
    )
    rates: RateCard = Field(
        default_factory=RateCard,
        description="The rate card that prices measured usage (docs/costs.md): cpu_hour, "
        "gpu_hour, memory_gb_hour, storage_gb_month under [rates]; 0 reports quantities only.",
    )
    currency: str = Field(
        default="EUR",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code of the rate card's and the budgets' amounts, e.g. 'EUR'.",
    )
    drift_min_rows: int = Field(
        default=30,
        ge=1,
        description="Fewest rows each side of a drift report needs for a verdict; below it the "
        "report says 'insufficient data' and judges no column (docs/monitoring.md).",
    )
    pickle_models: Literal["refuse", "sandbox"] = Field(
        default="refuse",
        description="'refuse': a pickled model bundle (format civicml.pickle/1) is never loaded "
        "(422). 'sandbox': endpoints serve signed ones from an isolated worker process (no "
        "network, read-only files, limits below); the server itself never unpickles "
        "(docs/security.md).",
    )
    sandbox_memory_mb: int = Field(
        default=2048,
        ge=256,
        description="Address space one sandboxed model worker may use (MiB); past it "
        "allocations fail.",
    )
    sandbox_cpu_s: int = Field(
        default=3600,
        ge=1,
        description="CPU seconds one sandboxed model worker may use in its life; a worker near "
        "it is replaced by a fresh one before the next call.",
    )
    sandbox_call_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest one prediction call to a sandboxed model may take; past it the "
        "worker is killed and the call answered 504.",
    )
    server_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1", "[::1]"],
        description="Host header values the server accepts (DNS-rebinding protection); "
        "add the server's public name when it is exposed.",
    )
    server_max_body_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Largest JSON request body the server reads (bytes); larger ones are "
        "refused with 413 before they are read whole.",
    )
    server_max_invocation_bytes: int = Field(
        default=6 << 20,
        ge=1024,
        description="Largest body of an endpoint invocation (bytes); larger ones get 413.",
    )
    server_max_upload_bytes: int = Field(
        default=1 << 30,
        ge=1024,
        description="Largest dataset, artifact or blob upload (bytes); larger ones get 413. "
        "Uploads are streamed to a temporary file, never held whole in memory.",
    )
    server_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest wait for the next piece of a request body; a client that stalls "
        "or trickles its body longer is answered 408 and the connection closed.",
    )
    server_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A connection whose request line and headers are not complete this many "
        "seconds after it opened (or after its next request began) is closed.",
    )
    server_keep_alive_timeout_s: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="An idle keep-alive connection is closed after this many seconds.",
    )
    server_limit_concurrency: int = Field(
        default=1000,
        ge=1,
        description="Most connections (and requests in progress) the server holds at once; "
        "beyond it new requests are answered 503.",
    )
    server_tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) the server presents; with server_tls_key the "
        "server speaks HTTPS only and sends Strict-Transport-Security (docs/security.md).",
    )
    server_tls_key: Path | None = Field(
        default=None,
        description="PEM private key of server_tls_cert; keep it readable by the server's user "
        "only (mode 0600).",
    )
    server_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Serving processes 'civicml server' runs on its port (--workers); above 1 a "
        "supervisor binds the port, restarts a worker that dies and stops all on SIGTERM "
        "(docs/serving.md#several-serving-processes).",
    )
    server_metrics: Literal["off", "loopback", "token"] = Field(
        default="token",
        description="GET /metrics (Prometheus): 'token' needs a caller with the metrics.read "
        "permission, 'loopback' answers loopback clients without a token (never behind a proxy "
        "on the same host), 'off' serves no /metrics.",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM file of the certificate authorities the CLI and SDK trust for an "
        "https:// server (an agency's own CA); default: the public CAs. Verification is never "
        "off.",
    )
    db_busy_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How long a write waits for a database lock held by someone else before "
        "the request is answered 503 with Retry-After.",
    )
    encrypt_artifacts: bool = Field(
        default=True,
        description="Encrypt every artifact written to the artifact store (AES-256-GCM, a data "
        "key per artifact wrapped by a key-encryption key from keys_dir). Plaintext artifacts "
        "written before still read; 'civicml keys encrypt-existing' converts them.",
    )
    trusted_signers: list[str] = Field(
        default_factory=list,
        description="Signers whose model packages 'civicml models import' accepts: Ed25519 "
        "public key files (PEM, e.g. another installation's keys_dir/model-signing-ed25519.pub) "
        "or base64 raw keys. This installation's own key is not trusted unless listed.",
    )
    keys_dir: Path | None = Field(
        default=None,
        description="Directory of the key-encryption keys that protect the artifacts (default "
        "$CIVICML_HOME/keys; created with mode 0700, each key file 0600, the first key on "
        "first write). Keep it outside the artifact store and back it up apart from it.",
    )
    pipeline_modules: list[str] = Field(
        default_factory=list,
        description="Python modules (dotted prefixes, e.g. 'agency_pipelines') whose "
        "@cm.pipeline functions schedules may run; a schedule naming any other module is "
        "refused when created and when it fires. Empty: no schedule can be created.",
    )
    rollout_enabled: bool = Field(
        default=True,
        description="Advance guarded endpoint rollouts (bake, next step, automatic rollback) in "
        "a background thread of 'civicml server'; off: run 'civicml endpoints rollout tick' "
        "instead (docs/serving.md).",
    )
    rollout_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often 'civicml server' ticks the rollouts in progress (seconds).",
    )
    serving_stats_flush_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often a serving process writes its per-variant counters (requests, "
        "4xx, 5xx, latency) to the database, where rollout alarms read them (seconds).",
    )
    serving_shadow_queue: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Copies of live requests waiting for an endpoint's shadow variant, per "
        "serving process; beyond it copies are dropped and counted (stats.shadow_dropped).",
    )
    serving_capture_format: Literal["auto", "process", "thread"] = Field(
        default="auto",
        description="Where captured requests are formatted as JSON lines and written to the "
        "capture spool: 'process', a spool process per capture writer, handed batches from the "
        "event loop (formatting and writing never take the interpreter lock from live "
        "requests); 'thread', the capture writer's thread in the serving process; 'auto', "
        "process in `civicml server`, thread elsewhere (the SDK, the CLI).",
    )
    serving_shadow_mode: Literal["auto", "process", "thread"] = Field(
        default="auto",
        description="Where a shadow variant's model predicts: 'process', a worker process per "
        "shadow model (its work never takes the interpreter lock from live requests); "
        "'thread', in the serving process (no extra process): on the server's event loop for "
        "copies a fast-path shadow answers in microseconds, else its shadow thread; 'auto', "
        "process on a machine with at least 3 CPUs for this process, else thread.",
    )
    serving_model_cache_mb: float = Field(
        default=1024.0,
        gt=0,
        le=10_000_000,
        description="Memory limit of each multi-model endpoint's cache of loaded models, per "
        "serving process (MB, estimated from the model files' size): a model is loaded on first "
        "use and the least recently used ones are unloaded beyond it; an endpoint's own "
        "model_cache_mb wins (docs/serving.md).",
    )
    scheduler_enabled: bool = Field(
        default=True,
        description="Run the pipeline scheduler (cron schedules and event triggers) in a "
        "background thread of 'civicml server'; off: run 'civicml scheduler' instead.",
    )
    scheduler_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often the scheduler looks for due schedules and new events (seconds).",
    )
    scheduler_lease_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="How long a scheduler's claim on a firing lasts without renewal; a firing "
        "whose scheduler stopped is taken over (or, if it had started, marked failed) after it. "
        "At least twice scheduler_interval_s.",
    )
    scheduler_max_concurrent: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Most pipeline executions one scheduler runs at once; more wait their turn.",
    )
    datasets_pii_scan: bool = Field(
        default=True,
        description="Scan every new dataset version for personal data at ingestion "
        "(docs/datasets.md, 'Personal data'); off: only 'civicml datasets pii scan'.",
    )
    datasets_pii_scan_rows: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description="Most rows a personal-data scan looks at, evenly spread over the version: "
        "every s-th row from the first, s the smallest power of two that keeps within this "
        "(so more than half of it on a large version).",
    )
    datasets_pii_scan_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Time budget of one personal-data scan (seconds); columns not reached are "
        "left out and the report says it is incomplete.",
    )
    datasets_check_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="Longest one quality expectation may run over a version (seconds); past it "
        "the expectation is reported as an error.",
    )
    datasets_personal_training: Literal["allow", "redacted_or_justified"] = Field(
        default="allow",
        description="Policy on training with dataset versions classified personal: 'allow', or "
        "'redacted_or_justified' (training runs and pipelines refuse them until redacted or a "
        "holder of datasets.override_quarantine records a justification).",
    )
    monitors_enabled: bool = Field(
        default=True,
        description="Run due monitors in the scheduler's loop ('civicml server' with "
        "scheduler_enabled, or 'civicml scheduler'); off: only 'civicml monitors run'.",
    )
    monitors_stale_s: float = Field(
        default=3600.0,
        ge=60,
        le=7 * 86_400,
        description="A monitor execution still running after this many seconds is taken for "
        "dead (its process stopped) and marked failed.",
    )
    monitors_shap_rows: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Rows an attribution-drift monitor explains per side (baseline and window; "
        "a seeded sample beyond).",
    )
    retention_enabled: bool = Field(
        default=True,
        description="Enforce retention periods in the scheduler's loop ('civicml server' with "
        "scheduler_enabled, or 'civicml scheduler'); off: only 'civicml privacy retention "
        "enforce'.",
    )
    retention_interval_s: float = Field(
        default=3600.0,
        ge=60,
        le=7 * 86_400,
        description="How often the scheduled retention pass runs (once per interval across "
        "every scheduler of the database).",
    )
    alerts_enabled: bool = Field(
        default=True,
        description="Evaluate alert rules in the scheduler's loop ('civicml server' with "
        "scheduler_enabled, or 'civicml scheduler'); off: only 'civicml alerts evaluate'.",
    )
    alerts_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="How often the scheduler's loop evaluates each alert rule (seconds); a rule "
        "on monitoring reports is also evaluated at the next tick after a report is stored.",
    )
    alerts_delivery_attempts: int = Field(
        default=3, ge=1, le=10, description="Tries per alert notification and channel."
    )
    alerts_delivery_backoff_s: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="Wait before the second try of a notification; doubled for each further one.",
    )
    alerts_delivery_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Connect and answer timeout of one delivery try (webhook, SMTP, brokers).",
    )
    alerts_webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HMAC-SHA256 secrets that sign webhook bodies, by name (a webhook channel "
        "names one; 'default' when it names none), e.g. CIVICML_ALERTS_WEBHOOK_SECRETS="
        '\'{"default": "..."}\'. Shown as ********.',
    )
    alerts_webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (or '*.suffix') webhook channels may post to; empty: any host.",
    )
    alerts_smtp_host: str | None = Field(
        default=None, description="SMTP server for e-mail alert channels."
    )
    alerts_smtp_port: int = Field(default=25, ge=1, le=65_535, description="SMTP port.")
    alerts_smtp_from: str | None = Field(
        default=None, description="Sender address of alert e-mails, e.g. civicml@agency.example."
    )
    alerts_smtp_username: str | None = Field(
        default=None, description="SMTP login user (none: no login)."
    )
    alerts_smtp_password: SecretStr | None = Field(
        default=None, description="SMTP login password. Shown as ********."
    )
    alerts_smtp_starttls: bool = Field(
        default=False, description="Upgrade the SMTP connection with STARTTLS before login."
    )
    alerts_nats_url: SecretStr | None = Field(
        default=None,
        description="NATS server of 'nats' alert channels, e.g. nats://127.0.0.1:4222 "
        "(credentials may be in it; shown as ********).",
    )
    alerts_redis_url: SecretStr | None = Field(
        default=None,
        description="Redis server of 'redis' alert channels, e.g. redis://127.0.0.1:6379/0 "
        "(shown as ********).",
    )
    alerts_mqtt_url: SecretStr | None = Field(
        default=None,
        description="MQTT broker of 'mqtt' alert channels, e.g. mqtt://127.0.0.1:1883 or "
        "mqtts://user:password@broker:8883 (shown as ********).",
    )
    source_connections: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Named connections of database and stream sources, with their credentials, "
        'e.g. CIVICML_SOURCE_CONNECTIONS=\'{"warehouse": "postgresql+psycopg://etl:pw@db/'
        'agency", "events": "amqp://user:pw@mq:5672/"}\'. A source names one; its URL '
        "never leaves the settings (shown as ********).",
    )
    sources_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (or '*.suffix') a source given an inline URL may connect to; "
        "empty: any host. Named connections are not limited.",
    )
    sources_enabled: bool = Field(
        default=True,
        description="Run scheduled sources in the scheduler's loop ('civicml server' with "
        "scheduler_enabled, or 'civicml scheduler'); off: only 'civicml sources run'.",
    )
    sources_lease_s: float = Field(
        default=600.0,
        ge=30,
        le=86_400,
        description="How long a run holds its source without renewing (it renews every chunk "
        "or batch); a source whose run stopped is free again after it.",
    )

    @field_validator("pipeline_modules", mode="after")
    @classmethod
    def _dotted_modules(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item or not all(part.isidentifier() for part in item.split(".")):
                raise ValueError(
                    f"pipeline_modules entry {item!r} is not a dotted Python module name, "
                    "e.g. 'agency_pipelines' or 'agency_pipelines.nightly'"
                )
        return value

    @model_validator(mode="after")
    def _lease_outlasts_ticks(self) -> Settings:
        if self.scheduler_lease_s < 2 * self.scheduler_interval_s:
            raise ValueError(
                f"scheduler_lease_s ({self.scheduler_lease_s:g}) must be at least twice "
                f"scheduler_interval_s ({self.scheduler_interval_s:g}): a live scheduler renews "
                "its claims once per interval"
            )
        return self

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("artifacts", mode="after")
    @classmethod
    def _local_artifacts(cls, value: str | None) -> str | None:
        """A directory, a ``file://`` URL turned into one, or ``s3://bucket[/prefix]``; any other
        URL is refused here, at start, rather than becoming a relative directory named
        ``gs:/bucket/...``."""
        if value is None:
            return None
        match = _URL_SCHEME.match(value)
        if match is None:
            return value
        scheme = match.group(1).lower()
        if scheme == "s3":
            return _check_s3_url(value)
        if scheme != "file":
            raise ValueError(
                f"{value!r}: {scheme}:// artifact stores are not supported; the artifact store "
                "must be a local or mounted directory (a path or a file:// URL) or an "
                "S3-compatible bucket (s3://bucket/prefix)"
            )
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(
                f"{value!r} is not a local file:// URL; write it as file:///absolute/path"
            )
        return unquote(parts.path)

    @field_validator("compute", mode="after")
    @classmethod
    def _compute(cls, value: str) -> str:
        return check_compute(value)

    @field_validator("s3_endpoint_url", mode="after")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        """An http(s) URL with a host and no user name or password in it."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an object store endpoint; write it as "
                "https://host[:port] (http:// for a store on a trusted network)"
            )
        if parts.username or parts.password:
            raise ValueError(
                "the S3 endpoint URL carries credentials; remove them and set "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials) instead"
            )
        return value.rstrip("/")

    @field_validator("oidc_algorithms", mode="after")
    @classmethod
    def _asymmetric_algorithms(cls, value: list[str]) -> list[str]:
        allowed = _OIDC_ALGORITHMS
        for alg in value:
            if alg not in allowed:
                raise ValueError(
                    f"{alg!r} is not an allowed OpenID Connect signature algorithm; use "
                    f"{', '.join(allowed)} ('none' and HMAC algorithms are never accepted)"
                )
        if not value:
            raise ValueError("oidc_algorithms names no algorithm")
        return value

    @field_validator("custom_roles", mode="after")
    @classmethod
    def _known_permissions(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        role_table(value)  # raises ValueError naming the bad role or permission
        return value

    @field_validator("oidc_issuer", mode="after")
    @classmethod
    def _issuer_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        return check_identity_url(value, "oidc_issuer")

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer is not None and not self.oidc_audience:
            raise ValueError("oidc_issuer is set but oidc_audience is not; set both")
        return self

    @field_validator("user", mode="after")
    @classmethod
    def _printable_user(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return validate_user_name(value, source="user name (CIVICML_USER or --user)")
        except CivicMLError as err:
            raise ValueError(err.message.rstrip(".")) from err

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the settings, turning any problem into one readable :class:`ConfigurationError`."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**clean)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in err.errors()
            )
            source = config_file()
            raise ConfigurationError(
                f"Invalid civicml settings: {problems}.",
                hint="Check CIVICML_* environment variables"
                + (f" and {source}" if source else "")
                + "; every setting is listed in docs/configuration.md.",
            ) from err
        except (OSError, ValueError) as err:  # unreadable or malformed TOML
            raise ConfigurationError(
                f"Could not read civicml settings: {err}.",
                hint="Fix or remove the civicml.toml file named above.",
            ) from err

    # Derived locations -------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'civicml.db'}"

    @property
    def artifacts_root(self) -> Path:
        """The local artifact directory; for an ``s3://`` store, the local working directory
        (temp files of uploads and downloads in progress)."""
        if self.artifacts_s3:
            return self.home / "s3-scratch"
        return Path(self.artifacts).expanduser() if self.artifacts else self.home / "artifacts"

    @property
    def artifacts_s3(self) -> bool:
        """Whether the artifacts live in an S3-compatible bucket."""
        return bool(self.artifacts and self.artifacts.startswith("s3://"))

    @property
    def keys_root(self) -> Path:
        return Path(self.keys_dir).expanduser() if self.keys_dir else self.home / "keys"

    @property
    def audit_key_path(self) -> Path:
        if self.audit_key:
            return self.audit_key
        shared = self.keys_root / "audit-ed25519.pem"
        legacy = self.home / "keys" / "audit-ed25519.pem"
        # A home created before the key moved beside keys_dir keeps signing with its own key
        # until the operator copies it into keys_dir.
        return legacy if not shared.is_file() and legacy.is_file() else shared

    @property
    def witness_path(self) -> Path:
        return self.home / "audit" / "witness.json"
