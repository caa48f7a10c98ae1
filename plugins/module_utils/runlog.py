# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``<state_dir>/runs.json``: the last manifest per kind, job and repository, for ``bk-run status``."""

from __future__ import annotations

import os
from typing import Any, Dict

from .files import locked, read_json, write_json

SUMMARY_FIELDS = ("kind", "job", "status", "started_at", "finished_at", "seq", "id")


class RunLog:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "runs.json")
        self.lock_path = os.path.join(state_dir, "runs.lock")

    def note(self, doc: Dict[str, Any]) -> None:
        """Remember a chained manifest as the latest of its kind, job and repository."""
        repository = (doc.get("repository") or {}).get("name")
        key = "/".join([doc["kind"], doc.get("job") or "-", repository or "-"])
        entry = {name: doc[name] for name in SUMMARY_FIELDS if name in doc}
        entry["repository"] = repository
        entry["snapshot"] = (doc.get("snapshot") or {}).get("id")
        entry["exit_code"] = (doc.get("error") or {}).get("exit_code", 0 if doc["status"] == "success" else None)
        with locked(self.lock_path):
            runs = self.entries()
            runs[key] = entry
            write_json(self.path, runs)

    def entries(self) -> Dict[str, Dict[str, Any]]:
        runs = read_json(self.path, {})
        return runs if isinstance(runs, dict) else {}
