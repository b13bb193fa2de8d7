"""Atomic file writes: a finished output is never half-written (write a temp file, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

UMASK = os.umask(0)  # read once, at import: os.umask can only be read by setting it
os.umask(UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder; the rename commits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; the user's umask decides
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str | os.PathLike):
    """Parsed JSON of ``path``, or None when it is missing or does not parse (an unfinished item)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def output_folder(path: str | os.PathLike, option: str = "-o") -> Path:
    """An output folder that exists or is made now, and is writable: checked before any work."""
    from .errors import SgafastError

    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise SgafastError(f"{option} {path}: {blocker} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SgafastError(f"{option} {path}: cannot create the folder ({exc.strerror})") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise SgafastError(f"{option} {path}: the folder is not writable")
    return path
