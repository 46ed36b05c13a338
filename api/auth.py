"""Bearer tokens: random, shown once, stored as HMAC-SHA256 digests; roles admin | worker | merchant."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import Connection

from api import repo
from core.errors import AuthError, ConfigError

Role = Literal["admin", "worker", "merchant"]
TOKEN_PREFIX = "gw_"


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is calling and what they may see."""

    token_id: int
    role: Role
    worker_id: str | None = None
    merchant_id: str | None = None

    @property
    def actor(self) -> str:
        return self.worker_id or self.merchant_id or f"admin:{self.token_id}"


def hash_token(secret_key: str, token: str) -> bytes:
    """The stored form of a token."""
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).digest()


def create_token(conn: Connection[Any], *, secret_key: str, role: Role, worker_id: str | None = None,
                 merchant_id: str | None = None, label: str = "", ttl: timedelta | None = None) -> str:
    """Create a token and return it; only its hash is kept."""
    if role == "worker" and not worker_id:
        raise ConfigError("a worker token needs --worker ID")
    if role == "merchant" and not merchant_id:
        raise ConfigError("a merchant token needs --merchant ID")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl if ttl else None
    repo.insert_token(conn, token_hash=hash_token(secret_key, token), role=role,
                      worker_id=worker_id if role == "worker" else None,
                      merchant_id=merchant_id if role == "merchant" else None, label=label, expires_at=expires)
    return token


def authenticate(conn: Connection[Any], *, secret_key: str, token: str) -> Principal:
    """The principal behind a bearer token, or AuthError saying why not."""
    row = repo.find_token(conn, token_hash=hash_token(secret_key, token))
    if row is None:
        raise AuthError("unknown token")
    if row.revoked_at is not None:
        raise AuthError("token revoked")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        raise AuthError("token expired")
    role: Role = row.role  # type: ignore[assignment]
    return Principal(row.id, role, row.worker_id, row.merchant_id)
