"""Model directories as artifacts: a registry entry's artifact source made a local directory
(linked file by file, or unpacked from one archive, once), and a local directory stored as
artifacts without reading large files into memory."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.ml.text.loading import written_whole  # imports no torch
from open_autoglm.spec.model import ArtifactFilesSource, ArtifactSource, ModelSpec

__all__ = ["materialise", "store_directory", "store_file"]


def materialise(storage: Any, cache_dir: Path, spec: ModelSpec) -> Path:
    """A local model directory for an artifact source (built once, reused afterwards)."""
    src = spec.source
    if isinstance(src, ArtifactFilesSource):
        digest = hashlib.sha256(repr(sorted(src.artifacts.items())).encode()).hexdigest()
        target = cache_dir / "artifacts" / f"files-{digest[:24]}"
        build: Callable[[Path], None] = lambda tmp: _link_files(storage, src.artifacts, tmp)  # noqa: E731
    elif isinstance(src, ArtifactSource):
        target = cache_dir / "artifacts" / f"archive-{src.artifact[:24]}"
        build = lambda tmp: _unpack(storage, src.artifact, tmp)  # noqa: E731
    else:
        raise ValidationError(f"model {spec.name!r} has no artifact source")
    with written_whole(target, complete=lambda d: (d / ".complete").exists()) as tmp:
        if tmp is not None:
            build(tmp)
            (tmp / ".complete").touch()
    return _model_root(target)


def _link_files(storage: Any, files: dict[str, str], out: Path) -> None:
    for file_name, artifact_id in files.items():
        storage.get_artifact(artifact_id)  # NotFoundError names a missing one
        (out / file_name).parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(storage.files.path(artifact_id), out / file_name)


def _unpack(storage: Any, artifact_id: str, out: Path) -> None:
    storage.get_artifact(artifact_id)
    path = storage.files.path(artifact_id)
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            tar.extractall(out, filter="data")  # refuses absolute paths, .., links out
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                dest = (out / member).resolve()
                if not dest.is_relative_to(out.resolve()):
                    raise ValidationError(f"zip member {member!r} escapes the model directory")
            zf.extractall(out)
    else:
        raise ValidationError(
            f"artifact {artifact_id} is neither a tar nor a zip archive of a model directory"
        )


def store_directory(storage: Any, directory: Path) -> dict[str, str]:
    """Store each file of a model directory as an artifact; ``{file name: id}``."""
    root = Path(directory)
    files: dict[str, str] = {}
    for path in sorted([*root.glob("*"), *root.glob("*/*")]):
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(root).parts):
            files[path.relative_to(root).as_posix()] = store_file(storage, path)
    return files


def store_file(storage: Any, path: Path) -> str:
    """Put a (possibly large) file into the artifact store without reading it into memory."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    target = storage.files.path(digest)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(path, target)
    media = "application/json" if path.suffix == ".json" else "application/octet-stream"
    storage.record_artifact(digest, path.stat().st_size, media_type=media, name=path.name)
    return digest


def _model_root(directory: Path) -> Path:
    """The directory holding config.json: the target itself or its single subdirectory."""
    if (directory / "config.json").exists():
        return directory
    subdirs = [p for p in directory.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / "config.json").exists():
        return subdirs[0]
    raise NotFoundError(f"no config.json in the materialised model at {directory}")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no copy, no extra disk) or, across file systems, an atomic copy."""
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
