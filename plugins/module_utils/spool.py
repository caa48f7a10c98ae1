# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spool: signed envelopes wait in ``outbox/`` until the reporter accepted them.

File names are ``<seq, 12 digits>-<manifest id>.json`` so that lexical order is chain order
(oldest first). Refused envelopes move to ``rejected/`` with a ``.reason`` file beside them:
nothing is ever dropped silently."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .files import atomic_write, ensure_directory

PARTIAL_MAX_AGE_SECONDS = 86400


def spool_name(seq: int, manifest_id: str) -> str:
    return "%012d-%s.json" % (seq, manifest_id)


def seq_of(path: Path) -> Optional[int]:
    """The seq encoded in a spool file name, or None for a foreign name."""
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


class Spool:
    """``<spool_dir>/outbox``, ``<spool_dir>/rejected`` and ``<spool_dir>/tmp`` (partial writes)."""

    def __init__(self, spool_dir: str) -> None:
        self.directory = Path(spool_dir)
        self.outbox = self.directory / "outbox"
        self.rejected_dir = self.directory / "rejected"
        self.tmp = self.directory / "tmp"
        for path in (self.directory, self.outbox, self.rejected_dir, self.tmp):
            ensure_directory(str(path))

    def put(self, envelope: Dict[str, str], seq: int, manifest_id: str) -> Path:
        """Write an envelope to the outbox atomically; returns its path."""
        path = self.outbox / spool_name(seq, manifest_id)
        atomic_write(str(path), json.dumps(envelope).encode("utf-8"), scratch_dir=str(self.tmp))
        return path

    def pending(self) -> List[Path]:
        """Outbox files, oldest first."""
        return sorted(p for p in self.outbox.iterdir() if p.suffix == ".json" and not p.name.startswith("."))

    def rejected(self) -> List[Path]:
        return sorted(p for p in self.rejected_dir.iterdir() if p.suffix == ".json")

    @staticmethod
    def read(path: Path) -> Dict[str, Any]:
        with path.open(encoding="utf-8") as handle:
            value = json.load(handle)
        if not isinstance(value, dict):
            raise ValueError("%s does not hold an envelope" % path)
        return value

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink()

    def reject(self, path: Path, reason: str) -> Path:
        """Move an envelope to ``rejected/`` and write the reason beside it."""
        target = self.rejected_dir / path.name
        atomic_write(str(target.with_suffix(".reason")), (reason.rstrip() + "\n").encode("utf-8"))
        os.replace(str(path), str(target))
        return target

    def clean_partial(self, max_age_seconds: float = PARTIAL_MAX_AGE_SECONDS) -> int:
        """Delete temporary files left by writers that crashed long ago; returns how many."""
        cutoff = time.time() - max_age_seconds
        stale = [p for p in self.tmp.iterdir() if p.stat().st_mtime < cutoff]
        for path in stale:
            path.unlink()
        return len(stale)
