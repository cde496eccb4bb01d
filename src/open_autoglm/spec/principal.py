"""Who is asking: an API key's owner and scopes, the value every layer checks access with."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ANONYMOUS", "STATIC_OWNER", "Principal", "Scope"]

STATIC_OWNER = "admin"  # the owner of the static keys (api.api_keys) and of what they submit


class Scope(StrEnum):
    """What an API key may do: ``read`` (GET routes) and ``submit`` (the routes that change
    state) apply to its owner's work; ``admin`` implies both, sees every owner's work and may
    change the platform itself (models, rulesets, keys)."""

    READ = "read"  # read and list its owner's tasks, runs, artifacts; the model catalogue
    SUBMIT = "submit"  # submit, infer, start runs, upload artifacts, cancel its own work
    ADMIN = "admin"  # everyone's work, the model registry, rulesets, keys, pruning


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Args:
        owner: whose work it sees and creates (tasks, runs, artifacts carry it); None only
            for :data:`ANONYMOUS`.
        scopes: what it may do.
        key_id: the managed key it used (None for a static key or no key).
    """

    owner: str | None
    scopes: frozenset[Scope]
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def can(self, scope: Scope) -> bool:
        return self.is_admin or scope in self.scopes

    def sees(self, owner: str | None) -> bool:
        """Whether work owned by ``owner`` is visible to this caller."""
        return self.is_admin or (self.owner is not None and owner == self.owner)

    @property
    def only_owner(self) -> str | None:
        """The owner to filter lists by: None (everything) for an admin."""
        return None if self.is_admin else self.owner


# The caller when no API key is configured: the local, single-user setup sees everything.
ANONYMOUS = Principal(owner=None, scopes=frozenset(Scope))
