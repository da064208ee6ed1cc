"""The token service: who may create, list and revoke which tokens; verification, expiry,
revocation through the cache; secrets never stored or audited."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import select

from civicml.core.clock import FrozenClock
from civicml.core.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.core.identity import Principal
from civicml.governance._tables import api_tokens
from civicml.governance.audit import AuditTrail
from civicml.governance.schemas import TokenCreate
from civicml.governance.tokens import TOKEN_CACHE, TokenService, hash_secret, well_formed
from civicml.store.context import Context

ALICE = Principal(user="alice", roles=frozenset({"data-scientist"}))
BOB = Principal(user="bob", roles=frozenset({"viewer"}))
ADMIN = Principal(user="ops", roles=frozenset({"admin"}))


def as_(ctx: Context, who: Principal) -> TokenService:
    return TokenService(ctx.as_principal(who))


def test_a_token_is_random_shown_once_and_stored_only_as_its_hash(any_ctx: Context) -> None:
    made = as_(any_ctx, ALICE).create(TokenCreate(name="laptop"))
    other = as_(any_ctx, ALICE).create(TokenCreate(name="laptop2"))
    assert well_formed(made.secret) and made.secret != other.secret
    assert made.token.owner == "alice" and made.token.roles == ["data-scientist"]
    assert made.token.kind == "personal" and made.token.projects == ["*"]
    with any_ctx.db.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(api_tokens))]
    stored = json.dumps(rows, default=str)
    assert made.secret not in stored and made.secret[8:] not in stored
    assert hash_secret(made.secret) in stored
    listed = as_(any_ctx, ALICE).list()
    assert {t.name for t in listed} == {"laptop", "laptop2"}
    assert made.secret not in json.dumps([t.model_dump(mode="json") for t in listed])
    assert as_(any_ctx, ALICE).authenticate(made.secret).principal == ALICE


def test_create_and_revoke_are_audited_without_the_secret(ctx: Context) -> None:
    made = as_(ctx, ALICE).create(TokenCreate(name="laptop"))
    as_(ctx, ALICE).revoke(made.token.id)
    events = AuditTrail(ctx).list(entity_kind="api_token")
    assert [e.action for e in events] == ["token.created", "token.revoked"]
    assert all(e.actor == "alice" for e in events)
    text = json.dumps([e.model_dump(mode="json") for e in events])
    assert made.secret not in text and hash_secret(made.secret) not in text
    assert events[1].after is not None and events[1].after["status"] == "revoked"


def test_a_personal_token_carries_at_most_its_creators_roles(ctx: Context) -> None:
    with pytest.raises(PermissionDeniedError, match=r"at most your own roles.*'reviewer'"):
        as_(ctx, ALICE).create(TokenCreate(name="x", roles=["data-scientist", "reviewer"]))
    with pytest.raises(PermissionDeniedError, match="acts as its creator"):
        as_(ctx, ALICE).create(TokenCreate(name="x", owner="bob"))
    fewer = as_(ctx, ALICE).create(TokenCreate(name="none", roles=[]))
    assert fewer.token.roles == []


def test_only_a_platform_admin_creates_service_tokens(ctx: Context) -> None:
    with pytest.raises(PermissionDeniedError, match=r"service-account tokens.*'admin'"):
        as_(ctx, ALICE).create(TokenCreate(name="ci", kind="service", owner="ci-bot"))
    with pytest.raises(InvalidInputError, match="needs the account's name"):
        as_(ctx, ADMIN).create(TokenCreate(name="ci", kind="service"))
    made = as_(ctx, ADMIN).create(
        TokenCreate(name="ci", kind="service", owner="ci-bot", roles=["ml-engineer"])
    )
    assert made.token.owner == "ci-bot" and made.token.created_by == "ops"
    token = as_(ctx, BOB).authenticate(made.secret)
    assert token.principal == Principal(user="ci-bot", roles=frozenset({"ml-engineer"}))


def test_each_user_sees_and_revokes_only_their_own_tokens(ctx: Context) -> None:
    alices = as_(ctx, ALICE).create(TokenCreate(name="a"))
    bobs = as_(ctx, BOB).create(TokenCreate(name="b"))
    assert [t.name for t in as_(ctx, BOB).list()] == ["b"]
    with pytest.raises(PermissionDeniedError, match="everyone's tokens"):
        as_(ctx, BOB).list(all_users=True)
    with pytest.raises(NotFoundError, match="does not exist"):
        as_(ctx, BOB).revoke(alices.token.id)
    with pytest.raises(NotFoundError):
        as_(ctx, BOB).get(alices.token.id)
    assert {t.name for t in as_(ctx, ADMIN).list(all_users=True)} == {"a", "b"}
    revoked = as_(ctx, ADMIN).revoke(bobs.token.id)
    assert revoked.status == "revoked" and revoked.revoked_by == "ops"
    assert as_(ctx, BOB).revoke(bobs.token.id).revoked_by == "ops"  # again: unchanged


def test_revocation_is_effective_at_once_despite_the_cache(ctx: Context) -> None:
    made = as_(ctx, ALICE).create(TokenCreate(name="a"))
    service = as_(ctx, ALICE)
    assert service.authenticate(made.secret).owner == "alice"
    assert service.verify_cached(made.secret) is not None  # now cached
    service.revoke(made.token.id)
    assert service.verify_cached(made.secret) is None
    with pytest.raises(AuthenticationError, match="revoked"):
        service.authenticate(made.secret)


def test_an_expired_token_is_refused_even_from_the_cache(ctx: Context) -> None:
    clock = FrozenClock()
    timed = replace(ctx, clock=clock)
    made = as_(timed, ALICE).create(TokenCreate(name="a", expires_in_days=1))
    assert as_(timed, ALICE).authenticate(made.secret).owner == "alice"
    clock.advance(days=1)
    with pytest.raises(AuthenticationError, match="expired"):
        as_(timed, ALICE).authenticate(made.secret)
    assert as_(timed, ALICE).list()[0].status == "expired"
    never = as_(timed, ALICE).create(TokenCreate(name="b", expires_in_days=None))
    clock.advance(days=10_000)
    assert as_(timed, ALICE).authenticate(never.secret).owner == "alice"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "malformed"),
        ("password1234", "malformed"),
        ("cml_" + "A" * 42, "malformed"),
        ("cml_" + "A" * 42 + "!", "malformed"),
        ("cml_" + "A" * 43, "not known"),
    ],
)
def test_unknown_and_malformed_tokens_are_refused(ctx: Context, secret: str, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message) as caught:
        as_(ctx, ALICE).authenticate(secret)
    assert secret == "" or secret not in str(caught.value)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (TokenCreate(name="x", endpoint="no-slash"), "is not 'project/endpoint'"),
        (TokenCreate(name="x", endpoint="p/bad name"), "Endpoint"),
        (TokenCreate(name="x", projects=[]), "at least one project"),
        (TokenCreate(name="bad name"), "Token"),
        (TokenCreate(name="x", roles=["a b"]), "Role"),
    ],
)
def test_malformed_requests_are_422s(ctx: Context, request_: TokenCreate, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        as_(ctx, ALICE).create(request_)


def test_scopes_are_kept(ctx: Context) -> None:
    made = as_(ctx, ADMIN).create(
        TokenCreate(name="portal", kind="service", owner="portal", endpoint="Benefits/elig")
    )
    token = as_(ctx, ALICE).authenticate(made.secret)
    assert token.endpoint == "Benefits/elig" and token.roles == frozenset({"invoker"})
    scoped = as_(ctx, ALICE).create(TokenCreate(name="one", projects=["Benefits", "tax"]))
    token = as_(ctx, ALICE).authenticate(scoped.secret)
    assert token.may_reach("benefits") and token.may_reach("TAX") and not token.may_reach("x")


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    TOKEN_CACHE.clear()
