"""Bearer tokens and web sessions: random, shown once, stored as HMAC-SHA256 digests; roles admin | worker |
merchant. A web session is a second random secret (cookie) bound to a token; CSRF tokens derive from it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import Connection

from api import repo
from core import actionlink
from core import repo as core_repo
from core.errors import AuthError, ConfigError, NotFoundError

Role = Literal["admin", "worker", "merchant"]
ROLES: tuple[Role, ...] = ("admin", "worker", "merchant")
TOKEN_PREFIX = "gw_"  # noqa: S105 - a prefix, not a secret
SESSION_TTL = timedelta(hours=12)
# Every token expires (issue 23): a lost phone's or a departed worker's token must not work for ever because
# nobody thought of giving it a lifetime. A longer-lived integration gets a new token before this runs out.
DEFAULT_TOKEN_TTL = timedelta(days=90)
MAX_TOKEN_TTL = timedelta(days=3660)


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is calling and what they may see."""

    token_id: int
    role: Role
    worker_id: str | None = None
    merchant_id: str | None = None
    session_id: int | None = None
    # Filled by with_scope: the registry role of a worker, and the communities an admin token is limited to
    # (None: every community, a street office).
    worker_role: str | None = None
    communities: tuple[str, ...] | None = None

    @property
    def actor(self) -> str:
        return self.worker_id or self.merchant_id or f"admin:{self.token_id}"

    @property
    def worker_scope(self) -> str | None:
        """The worker whose micro-grids bound what this caller sees (None: not a worker)."""
        return self.worker_id if self.role == "worker" else None

    @property
    def merchant_scope(self) -> str | None:
        """The merchant whose sites bound what this caller sees (None: not a merchant)."""
        return self.merchant_id if self.role == "merchant" else None

    @property
    def community_scope(self) -> list[str] | None:
        """The communities an admin is limited to (None: not limited, or not an admin)."""
        return list(self.communities) if self.role == "admin" and self.communities is not None else None

    @property
    def tier(self) -> str | None:
        """The ladder tier this caller is on (notify/policy.yaml), for the board's order; None for admins."""
        return WORKER_TIERS.get(self.worker_role or "") if self.role == "worker" else None


# A worker's registry role -> the escalation ladder's tier it is reached on.
WORKER_TIERS = {
    "micro_grid_worker": "worker",
    "grid_leader": "leader",
    "community_duty": "community",
    "fire_station": "fire_station",
}


def with_scope(conn: Connection[Any], who: Principal) -> Principal:
    """The principal with what bounds its scope beyond its token: a worker's registry role (a grid leader sees
    their grids, community duty and the fire station their community) and an admin token's communities."""
    if who.role == "worker" and who.worker_id:
        return replace(who, worker_role=repo.get_worker_role(conn, worker_id=who.worker_id))
    if who.role == "admin":
        communities = repo.get_token_communities(conn, token_id=who.token_id)
        return replace(who, communities=tuple(communities) if communities else None)
    return who


def hash_token(secret_key: str, token: str) -> bytes:
    """The stored form of a token."""
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).digest()


def create_token(
    conn: Connection[Any],
    *,
    secret_key: str,
    role: Role,
    worker_id: str | None = None,
    merchant_id: str | None = None,
    label: str = "",
    ttl: timedelta | None = None,
    communities: Sequence[str] | None = None,
) -> str:
    """Create a token and return it; only its hash is kept."""
    return create_token_row(
        conn,
        secret_key=secret_key,
        role=role,
        worker_id=worker_id,
        merchant_id=merchant_id,
        label=label,
        ttl=ttl,
        communities=communities,
    )[1]


def create_token_row(
    conn: Connection[Any],
    *,
    secret_key: str,
    role: Role,
    worker_id: str | None = None,
    merchant_id: str | None = None,
    label: str = "",
    ttl: timedelta | None = None,
    communities: Sequence[str] | None = None,
) -> tuple[int, str, datetime]:
    """Create a token; returns (id, token, expires_at). The token itself is never stored. Without a lifetime it
    expires after DEFAULT_TOKEN_TTL; there are no tokens that never expire. An admin token may be limited to some
    communities (none given: every community)."""
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not admin, worker or merchant")
    if role == "worker" and not worker_id:
        raise ConfigError("a worker token needs --worker ID")
    if role == "merchant" and not merchant_id:
        raise ConfigError("a merchant token needs --merchant ID")
    if role == "worker" and worker_id and not core_repo.exists(conn, table="worker", id=worker_id):
        raise NotFoundError(f"worker {worker_id!r} is not in the registry")
    if role == "merchant" and merchant_id and not core_repo.exists(conn, table="merchant", id=merchant_id):
        raise NotFoundError(f"merchant {merchant_id!r} is not in the registry")
    if communities and role != "admin":
        raise ConfigError("only an admin token is limited to communities (a worker's or merchant's scope is theirs)")
    for community in communities or ():
        if not core_repo.exists(conn, table="community", id=community):
            raise NotFoundError(f"community {community!r} is not in the registry")
    if ttl is not None and ttl > MAX_TOKEN_TTL:
        raise ConfigError(f"a token lives at most {MAX_TOKEN_TTL.days} days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + (DEFAULT_TOKEN_TTL if ttl is None else ttl)
    token_id = repo.insert_token(
        conn,
        token_hash=hash_token(secret_key, token),
        role=role,
        worker_id=worker_id if role == "worker" else None,
        merchant_id=merchant_id if role == "merchant" else None,
        label=label,
        expires_at=expires,
    )
    if role == "admin" and communities:
        repo.insert_token_communities(conn, token_id=token_id, communities=sorted(set(communities)))
    return token_id, token, expires


def _check(row: repo.TokenRow) -> Principal:
    if row.revoked_at is not None:
        raise AuthError("token revoked")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        raise AuthError("token expired")
    if row.role == "worker" and not row.worker_active:
        raise AuthError("this worker is no longer active in the registry: ask an admin")
    role: Role = row.role  # type: ignore[assignment]
    return Principal(row.id, role, row.worker_id, row.merchant_id)


def authenticate(conn: Connection[Any], *, secret_key: str, token: str) -> Principal:
    """The principal behind a bearer token, or AuthError saying why not."""
    row = repo.find_token(conn, token_hash=hash_token(secret_key, token), now=datetime.now(UTC))
    if row is None:
        raise AuthError("unknown token")
    return _check(row)


def create_session(
    conn: Connection[Any], *, secret_key: str, token: str, ttl: timedelta = SESSION_TTL
) -> tuple[str, Principal]:
    """Log in with a token: returns the session secret for the cookie and who it is."""
    who = authenticate(conn, secret_key=secret_key, token=token)
    session = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl
    token_expiry = repo.get_token_expiry(conn, token_id=who.token_id)
    if token_expiry is not None:
        expires = min(expires, token_expiry)
    session_id = repo.insert_session(
        conn, session_hash=hash_token(secret_key, "session:" + session), token_id=who.token_id, expires_at=expires
    )
    return session, Principal(who.token_id, who.role, who.worker_id, who.merchant_id, session_id)


def authenticate_session(conn: Connection[Any], *, secret_key: str, session: str) -> Principal:
    """The principal behind a session cookie; the token's own revocation and expiry apply too."""
    row = repo.find_session(conn, session_hash=hash_token(secret_key, "session:" + session))
    if row is None:
        raise AuthError("unknown session: log in again")
    if row.session_revoked_at is not None:
        raise AuthError("logged out: log in again")
    if row.session_expires_at <= datetime.now(UTC):
        raise AuthError("session expired: log in again")
    who = _check(row.token)
    return Principal(who.token_id, who.role, who.worker_id, who.merchant_id, row.session_id)


def end_session(conn: Connection[Any], *, secret_key: str, session: str) -> None:
    """Log out."""
    repo.revoke_session(conn, session_hash=hash_token(secret_key, "session:" + session))


def csrf_token(secret_key: str, session: str) -> str:
    """The CSRF token bound to a session (synchroniser token, derived so nothing more is stored)."""
    return hmac.new(secret_key.encode(), ("csrf:" + session).encode(), hashlib.sha256).hexdigest()


def check_csrf(secret_key: str, session: str, presented: str | None) -> bool:
    """Whether a form's or header's CSRF token belongs to this session."""
    # Compared as bytes: compare_digest raises TypeError on non-ASCII text, which a forged token may be.
    return bool(presented) and hmac.compare_digest(csrf_token(secret_key, session).encode(), (presented or "").encode())


# -- signed action links (alarms, resident reports, drills, work orders) ---------------------------------------


def verify_link(
    conn: Connection[Any],
    *,
    secret_key: str,
    subject: actionlink.Subject,
    subject_id: int,
    key: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> actionlink.LinkClaim:
    """Who a message link was sent to, if it may still be used: signed for this item (its kind and id) and this
    recipient, not expired, its recipient still active, and issued after their links were last revoked (LinkError
    otherwise)."""
    at = now or datetime.now(UTC)
    claim = actionlink.verify(secret_key, subject=subject, subject_id=subject_id, key=key, now=at, ttl=ttl)
    recipient = repo.get_link_recipient(conn, kind=claim.recipient_kind, recipient_id=claim.recipient_id)
    if recipient is None or not recipient.active:
        raise actionlink.LinkError(
            f"this link was sent to {claim.recipient_id}, who is no longer active: ask your admin or log in"
        )
    if recipient.not_before is not None and claim.issued_at < recipient.not_before:
        raise actionlink.LinkError(
            f"this link was revoked: open a newer message about the {actionlink.NOUNS[subject]}, or log in"
        )
    return claim


def revoke_links(conn: Connection[Any], *, kind: actionlink.RecipientKind, recipient_id: str, by: str) -> datetime:
    """Refuse every link sent to this recipient until now (a lost phone); later messages carry working links."""
    return repo.revoke_links(conn, kind=kind, recipient_id=recipient_id, at=datetime.now(UTC), by=by)


def link_csrf(secret_key: str, key: str) -> str:
    """The CSRF token of the forms on a link's page (derived from the link, as a session's is from the session)."""
    return csrf_token(secret_key, "link:" + key)
