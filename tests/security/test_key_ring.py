"""The key ring the server authenticates with: keys made elsewhere (offline, or by another
server on the same database) are picked up, revoked ones dropped, bad keys cost no query."""

from __future__ import annotations

from pathlib import Path

from open_autoglm.api.auth import KeyRing
from open_autoglm.spec.principal import STATIC_OWNER, Scope
from open_autoglm.storage.api_keys import ApiKeyRepo, hash_secret, split_key
from open_autoglm.storage.engine import create_storage_engine, migrate


def test_ring_follows_the_database_and_throttles_reloads(tmp_path: Path) -> None:
    engine = create_storage_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    migrate(engine)
    repo = ApiKeyRepo(engine)
    now = [100.0]
    ring = KeyRing(repo, ["static-secret"], reload_every_s=1.0, clock=lambda: now[0])
    assert not ring.loaded and ring.stale()
    ring.reload()
    assert ring.enabled and not ring.stale()  # the static key alone turns keys on

    record, key = repo.create("alice", ["read"], "laptop")  # as another server would
    assert split_key(key) == record["id"] and not ring.knows(key)
    assert ring.resolve(key) is None and not ring.stale()  # no reload within the second
    now[0] += 1.0
    assert ring.stale()
    ring.reload()
    alice = ring.resolve(key)
    assert alice is not None and alice.owner == "alice" and alice.key_id == record["id"]
    assert alice.scopes == frozenset({Scope.READ}) and not alice.can(Scope.SUBMIT)
    assert ring.resolve(key[:-1] + ("x" if key[-1] != "x" else "y")) is None

    admin = ring.resolve("static-secret")
    assert admin is not None and admin.owner == STATIC_OWNER and admin.is_admin
    assert admin.sees("alice") and alice.sees("alice") and not alice.sees("bob")
    assert ring.resolve("static-secre") is None and ring.resolve("") is None

    repo.revoke(record["id"])
    ring.reload()
    assert ring.resolve(key) is None
    stored = repo.list(include_revoked=True)
    assert [r["id"] for r in stored] == [record["id"]] and "secret_hash" not in stored[0]
    with engine.connect() as conn:
        (digest,) = conn.exec_driver_sql("SELECT secret_hash FROM api_keys").one()
    assert digest == hash_secret(key) and key not in digest
    engine.dispose()


def test_only_managed_keys_ever_created_turn_auth_on(tmp_path: Path) -> None:
    engine = create_storage_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    migrate(engine)
    repo = ApiKeyRepo(engine)
    ring = KeyRing(repo)
    ring.reload()
    assert not ring.enabled
    record, _ = repo.create("ops", [Scope.ADMIN])
    repo.revoke(record["id"])
    ring.reload()
    assert ring.enabled  # revoking the last key never opens the API
    engine.dispose()
