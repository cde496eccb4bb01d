"""Content-addressed artifact files: ``<root>/<sha[:2]>/<sha>``, written atomically."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from open_autoglm.errors import NotFoundError, ValidationError

__all__ = ["ArtifactFiles"]

_SHA = re.compile(r"^[0-9a-f]{64}$")


class ArtifactFiles:
    """The file half of the artifact store (the row half lives in the ``artifacts`` table)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        if not _SHA.match(sha):
            raise ValidationError(
                f"invalid artifact id {sha!r}",
                details=[{"loc": ["artifact_id"], "msg": "expected 64 lowercase hex characters"}],
            )
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; returns (sha256, size). Storing the same bytes twice is a no-op."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return sha, len(data)

    def get(self, sha: str) -> bytes:
        target = self.path(sha)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"artifact {sha} not found") from None

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()
