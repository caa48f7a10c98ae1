# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash-safe file primitives: atomic replacement and advisory lock files."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from typing import Any, Dict, Iterator, Optional


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600, scratch_dir: Optional[str] = None) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync, rename, fsync the directory.

    ``scratch_dir`` (same file system) holds the temporary file; default: next to ``path`` as a
    dot file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=scratch_dir or directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def write_json(path: str, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: str, default: Any) -> Any:
    """The JSON content of ``path``, or ``default`` when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


class JsonTable:
    """A JSON object in ``<state_dir>/<name>.json``, updated atomically under ``<name>.lock``.

    It holds facts bk can learn again, so an unreadable or corrupt file reads as empty."""

    def __init__(self, state_dir: str, name: str) -> None:
        base = state_dir.rstrip("/") + "/" + name
        self.path = base + ".json"
        self.lock_path = base + ".lock"

    def read(self) -> Dict[str, Any]:
        try:
            value = read_json(self.path, {})
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def update(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value``; remove it when ``value`` is None."""
        with locked(self.lock_path):
            table = self.read()
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            write_json(self.path, table)


def ensure_directory(path: str, mode: int = 0o700) -> str:
    os.makedirs(path, mode=mode, exist_ok=True)
    return path


class LockTimeout(Exception):
    """A lock file stayed held by another process for longer than allowed."""


@contextlib.contextmanager
def locked(path: str, timeout_seconds: Optional[float] = None, poll_seconds: float = 0.5) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed).

    Without a timeout, wait as long as it takes; with one, raise LockTimeout after it."""
    ensure_directory(os.path.dirname(os.path.abspath(path)))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, path, timeout_seconds, poll_seconds)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: str, timeout_seconds: Optional[float], poll_seconds: float) -> None:
    if timeout_seconds is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    give_up = time.monotonic() + timeout_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= give_up:
                raise LockTimeout("%s is held by another process" % path) from None
            time.sleep(poll_seconds)
