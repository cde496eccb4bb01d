"""Authentication and scopes: which API key is asking, whose work it sees, what it may do.

Keys come from two places: the static keys in ``api.api_keys`` (admin keys, owner
``admin``) and the managed keys in the database (``autoglm keys create``, ``/v1/keys``).
While neither exists the API needs no key and every caller is :data:`ANONYMOUS`, which sees
everything: the local, single-user setup. Once one exists, every route but the health checks
needs a valid key; GET routes need ``read``, routes that change state ``submit``, and the
routes that change the platform (models, rulesets, keys) ``admin`` (:func:`require_admin`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Iterable

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from open_autoglm.api.middleware import _reject
from open_autoglm.errors import PermissionDeniedError
from open_autoglm.spec.principal import ANONYMOUS, STATIC_OWNER, Principal
from open_autoglm.spec.principal import Scope as KeyScope
from open_autoglm.storage.api_keys import ApiKeyRepo, StoredKey, split_key

__all__ = [
    "AuthMiddleware",
    "KeyRing",
    "principal_of",
    "require_admin",
    "scope_for_method",
]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def scope_for_method(method: str) -> KeyScope:
    """What a request needs by its method: reading needs ``read``, anything else ``submit``."""
    return KeyScope.READ if method in _READ_METHODS else KeyScope.SUBMIT


class KeyRing:
    """The keys the server accepts, with the managed ones cached from the database.

    The cache is reloaded when a key it does not know is presented (at most once per
    ``reload_every_s``, so a flood of bad keys costs no queries), when a key is created or
    revoked here, and on every lease renewal (keys created or revoked by another server
    sharing the database, or offline).

    Args:
        repo: the managed keys' storage; None: static keys only.
        static_keys: the admin keys from ``api.api_keys``.
    """

    def __init__(
        self,
        repo: ApiKeyRepo | None,
        static_keys: Iterable[str] = (),
        *,
        reload_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self._static = [k.encode() for k in static_keys]
        self._static_principal = Principal(owner=STATIC_OWNER, scopes=frozenset(KeyScope))
        self._managed: dict[str, StoredKey] = {}
        self._any_managed = False
        self._loaded_at = -math.inf
        self._reload_every_s = reload_every_s
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.repo is None or self._loaded_at > -math.inf

    @property
    def enabled(self) -> bool:
        """Whether keys are required: a static key is set, or a managed key was ever created."""
        return bool(self._static) or self._any_managed

    def stale(self) -> bool:
        return self.repo is not None and self._clock() - self._loaded_at >= self._reload_every_s

    def reload(self) -> None:
        """Read the managed keys again (blocking: call it off the event loop)."""
        if self.repo is None:
            return
        with self._lock:
            any_managed, active = self.repo.load()
            self._managed, self._any_managed = active, any_managed
            self._loaded_at = self._clock()

    def resolve(self, key: str) -> Principal | None:
        """Who ``key`` stands for, or None if it is not a valid key."""
        if not key:
            return None
        key_id = split_key(key)
        if key_id is not None:
            stored = self._managed.get(key_id)
            return stored.principal if stored is not None and stored.matches(key) else None
        given = key.encode()
        # Every static key is compared (no early exit): the time does not tell which matched.
        matched = False
        for static in self._static:
            matched |= hmac.compare_digest(given, static)
        return self._static_principal if matched else None

    def active(self, principal: Principal) -> bool:
        """Whether the managed key ``principal`` came with is still valid (static: always)."""
        return principal.key_id is None or principal.key_id in self._managed

    def knows(self, key: str) -> bool:
        """Whether ``key`` names a managed key id in the cache (revoked ones are gone)."""
        key_id = split_key(key)
        return key_id is not None and key_id in self._managed


class AuthMiddleware:
    """401 without a valid key, 403 without the scope the method needs, once keys exist.

    Sets ``scope["state"]["principal"]`` (a :class:`Principal`) for the routes, and the
    rate-limit client id ``key:<id>`` (``key:<fingerprint>`` for a static key).
    """

    OPEN_PATHS = frozenset({"/healthz", "/readyz"})

    def __init__(self, app: ASGIApp, ring: KeyRing) -> None:
        self.app = app
        self.ring = ring
        # Client ids of the static keys seen so far (only valid keys get here: bounded).
        self._static_ids: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        ring = self.ring
        key = _presented_key(scope)
        if not ring.loaded or (key and not ring.knows(key) and ring.stale()):
            await run_in_threadpool(ring.reload)
        state = scope.setdefault("state", {})
        if not ring.enabled:
            state["principal"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        principal = ring.resolve(key)
        if principal is None:
            await _reject(send, 401, "unauthorized", "missing or invalid API key")
            return
        needed = scope_for_method(scope["method"])
        if not principal.can(needed):
            await _reject(
                send,
                403,
                "forbidden",
                f"this API key lacks the {needed.value!r} scope that {scope['method']} "
                "requests need",
                details=[{"loc": ["header", "authorization"], "msg": f"needs {needed.value}"}],
            )
            return
        state["principal"] = principal
        if principal.key_id is not None:
            state["client_id"] = "key:" + principal.key_id
        else:
            client = self._static_ids.get(key)
            if client is None:
                client = "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
                self._static_ids[key] = client
            state["client_id"] = client
        await self.app(scope, receive, send)


def _presented_key(scope: Scope) -> str:
    value: bytes
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    return ""


def principal_of(request: Request) -> Principal:
    """The caller of a request (:data:`ANONYMOUS` when the API needs no key)."""
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else ANONYMOUS


async def require_admin(request: Request) -> None:
    """A route dependency: 403 unless the caller's key has the ``admin`` scope."""
    if not principal_of(request).is_admin:
        raise PermissionDeniedError(
            "this route needs an API key with the 'admin' scope",
            details=[{"loc": ["header", "authorization"], "msg": "needs admin"}],
        )
