"""Atomic writes: every output goes to a temporary name in the same folder, then is renamed.

An interrupted stage therefore never leaves a half-written file (or folder) that DVC would cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask can only read
    it by setting it, and meanwhile another thread would create files with umask 0)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o077)  # the brief window is private, not world-writable
        os.umask(umask)
        return umask


def _public(path: str | Path, mode: int) -> None:
    """mkstemp/mkdtemp make private temp files (0600) and folders (0700); the output they become
    gets the modes a plain open or mkdir would give it (`mode` less the umask)."""
    os.chmod(path, mode & ~_umask())


def _fsync(path: str | Path) -> None:
    """Data on disk before the rename makes it visible: a crash leaves the old file or the new one."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary file path next to `path`; on success fsync it and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        _public(tmp, 0o666)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder next to `path`; on success fsync its files and replace `path` with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stale_name = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")  # mkdtemp's, for this path only
    for stale in path.parent.iterdir():  # a killed writer's (SIGKILL skips `finally`)
        if stale.is_dir() and stale_name.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file() and not file.is_symlink():
                _fsync(file)
        _public(tmp, 0o777)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def cache_dir(*parts: str) -> Path:
    """$PIX2PIX_CACHE (default ~/.cache/pix2pix): partial downloads, FID reference features."""
    return Path(os.environ.get("PIX2PIX_CACHE") or Path.home() / ".cache" / "pix2pix", *parts)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
