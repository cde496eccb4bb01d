"""Managed API keys at rest: only a hash of each key is stored, and the key is shown once.

A key is ``agk_<id>_<secret>``: the id is public (lists, revocation, logs) and the secret is
32 random bytes. Keys are not passwords: a high-entropy random token cannot be guessed from
its hash, so one SHA-256 (fast, no salt, no stretching) is the right hash; the lookup is by
id and the hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.spec.principal import STATIC_OWNER, Principal, Scope
from open_autoglm.storage.tables import JSONText, metadata

__all__ = [
    "KEY_PREFIX",
    "ApiKeyRepo",
    "StoredKey",
    "api_keys",
    "hash_secret",
    "new_key",
    "split_key",
]

KEY_PREFIX = "agk"

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # sha256 hex of the whole key
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("scopes", JSONText, nullable=False),  # ["read", "submit", ...]
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)


def new_key() -> tuple[str, str]:
    """A fresh ``(id, key)``."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def split_key(key: str) -> str | None:
    """The id of a managed key, or None if ``key`` is not shaped like one."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 16:
        return None
    return parts[1]


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredKey:
    """An active key as the server checks it: its hash and who it stands for."""

    secret_hash: str
    principal: Principal

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(key))


class ApiKeyRepo:
    """Create, list and revoke managed keys; connections never leave this class."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self, owner: str, scopes: Iterable[Scope | str], name: str = ""
    ) -> tuple[dict[str, Any], str]:
        """Store a new key; returns its public record and the key itself (never stored)."""
        owner = owner.strip()
        if not owner or len(owner) > 200:
            raise ValidationError(
                "owner must be 1 to 200 characters",
                details=[{"loc": ["owner"], "msg": "1 to 200 characters"}],
            )
        chosen = _scopes(scopes)
        if owner == STATIC_OWNER and Scope.ADMIN.value not in chosen:
            # The static keys' owner: a non-admin key of that name would see their work.
            raise ValidationError(
                f"owner {STATIC_OWNER!r} is reserved for admin keys",
                details=[{"loc": ["owner"], "msg": "reserved for admin keys"}],
            )
        key_id, key = new_key()
        row = {
            "id": key_id,
            "secret_hash": hash_secret(key),
            "owner": owner,
            "scopes": chosen,
            "name": name[:200],
            "created_at": time.time(),
            "revoked_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(row))
        return _public(row), key

    def list(self, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        """Every key's public record (never its hash), oldest first."""
        stmt = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            stmt = stmt.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_public(dict(r._mapping)) for r in conn.execute(stmt)]

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke a key (kept, marked revoked: it still counts as a configured key)."""
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFoundError(f"API key {key_id} not found")
        return _public(dict(row._mapping))

    def load(self) -> tuple[bool, dict[str, StoredKey]]:
        """``(any key ever created, {id: active key})``: what the server authenticates with.

        A revoked key still counts as created: revoking the last key must not open the API.
        """
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(api_keys))]
        active = {
            r["id"]: StoredKey(
                r["secret_hash"],
                Principal(
                    owner=r["owner"],
                    scopes=frozenset(Scope(s) for s in r["scopes"]),
                    key_id=r["id"],
                ),
            )
            for r in rows
            if r["revoked_at"] is None
        }
        return bool(rows), active


def _scopes(scopes: Iterable[Scope | str]) -> list[str]:
    chosen: set[str] = set()
    for s in scopes:
        try:
            chosen.add(Scope(s).value)
        except ValueError:
            allowed = ", ".join(x.value for x in Scope)
            raise ValidationError(
                f"unknown scope {s!r}; expected some of {allowed}",
                details=[{"loc": ["scopes"], "msg": f"unknown scope {s!r}"}],
            ) from None
    if not chosen:
        raise ValidationError(
            "a key needs at least one scope", details=[{"loc": ["scopes"], "msg": "empty"}]
        )
    return sorted(chosen)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "owner": row["owner"],
        "scopes": row["scopes"],
        "name": row["name"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }
