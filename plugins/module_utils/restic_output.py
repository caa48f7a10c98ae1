# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading what restic and rclone print, and keeping secrets out of what bk records."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .manifest import parse_timestamp

# Figures of ``restic backup --json``'s summary, as numbers; restic 0.14 prints the first twelve,
# 0.15+ also data_added_packed (bytes after compression, as stored).
STATS_FIELDS = (
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs_new",
    "dirs_changed",
    "dirs_unmodified",
    "data_blobs",
    "tree_blobs",
    "data_added",
    "data_added_packed",
    "total_files_processed",
    "total_bytes_processed",
    "total_duration",
)
# restic 0.15+: when the backup ran, as RFC 3339 times
STATS_TIMES = ("backup_start", "backup_end")
SNAPSHOT_FIELDS = ("id", "short_id", "paths", "tags", "parent", "time")
REDACTED = "***"
_URL_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_VERSION = re.compile(r"\bv?([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:-[0-9A-Za-z.]+)?)")
_PRUNE_LINE = re.compile(r"^(total prune|remaining):\s+([0-9]+) blobs / (.+?)\s*$", re.MULTILINE)


def _json_lines(stdout: str) -> Iterable[Dict[str, Any]]:
    for raw_line in stdout.splitlines():
        line = raw_line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _last_message(text: str, message_type: str) -> Optional[Dict[str, Any]]:
    """The last JSON line of ``text`` with that ``message_type``, or None."""
    found = None
    for message in _json_lines(text):
        if message.get("message_type") == message_type:
            found = message
    return found


def backup_summary(stdout: str) -> Optional[Dict[str, Any]]:
    """The final ``summary`` object of ``restic backup --json``, or None if there is none."""
    return _last_message(stdout, "summary")


def stats_from_summary(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest's ``stats`` section: restic's own figures, unchanged.

    A figure restic could not have meant is left out: restic 0.18's summary of a backup that
    ``--skip-if-unchanged`` skipped says ``total_duration`` -9223372036.85 and ``backup_end``
    ``0001-01-01T00:00:00Z`` (Go's zero time)."""
    stats = {
        name: summary[name]
        for name in STATS_FIELDS
        if isinstance(summary.get(name), (int, float))
        and not isinstance(summary.get(name), bool)
        and summary[name] >= 0
    }
    for name in STATS_TIMES:
        value = summary.get(name)
        if isinstance(value, str) and parse_timestamp(value) is not None and not value.startswith("0001-"):
            stats[name] = value
    return stats


def restic_version_tuple(version: Optional[str]) -> Optional[Tuple[int, int]]:
    """``(0, 18)`` from ``0.18.0`` (what ``tool_version`` read from ``restic version``), None if unclear."""
    match = re.match(r"^([0-9]+)\.([0-9]+)", version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def exit_error(stderr: str) -> Optional[Dict[str, Any]]:
    """The last ``{"message_type":"exit_error",...}`` restic 0.17+ prints on stderr with ``--json``."""
    return _last_message(stderr, "exit_error")


# What restic's exit codes mean (restic 0.17+ has 10-12; 0.14 exits 1 and says so in text, matched below)
FAILURE_CAUSES: Dict[str, str] = {
    "repository_unreachable": "the repository's server could not be reached",
    "no_repository": "the repository does not exist (was it initialised?)",
    "lock_failed": "could not lock the repository",
    "wrong_password": "the repository password is wrong",
    "incomplete_snapshot": "incomplete snapshot: some source files could not be read",
    "interrupted": "interrupted",
}
_CAUSE_BY_EXIT_CODE = {10: "no_repository", 11: "lock_failed", 12: "wrong_password", 3: "incomplete_snapshot"}
# First match wins: restic 0.14 follows a refused connection with "Is there a repository at ...".
_NETWORK_ERROR = (
    r"(?:connection refused|no such host|i/o timeout|network is unreachable|no route to host|TLS handshake)"
)
_CAUSE_BY_TEXT = (
    ("repository_unreachable", re.compile(r"Fatal: [^\n]*" + _NETWORK_ERROR)),
    ("no_repository", re.compile(r"Fatal: unable to open config file: .*\nIs there a repository at the following")),
    ("lock_failed", re.compile(r"unable to create lock in backend|repository is already locked")),
    ("wrong_password", re.compile(r"Fatal: wrong password or no key found")),
)


def failure_cause(exit_code: int, stderr: str) -> Optional[str]:
    """The cause (a key of ``FAILURE_CAUSES``) of a restic run that exited ``exit_code``, None if unknown."""
    if exit_code == 130:
        return "interrupted"
    if exit_code in _CAUSE_BY_EXIT_CODE:
        return _CAUSE_BY_EXIT_CODE[exit_code]
    if exit_code == 1:
        for cause, pattern in _CAUSE_BY_TEXT:
            if pattern.search(stderr):
                return cause
    return None


def parse_snapshots(stdout: str) -> List[Dict[str, Any]]:
    """The list printed by ``restic snapshots --json``."""
    value = json.loads(stdout)
    if not isinstance(value, list):
        raise ValueError("restic snapshots --json did not print a list")
    return [item for item in value if isinstance(item, dict)]


def snapshot_section(snapshot: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest's ``snapshot`` section from one ``restic snapshots --json`` entry."""
    section = {name: snapshot[name] for name in SNAPSHOT_FIELDS if snapshot.get(name) is not None}
    section.setdefault("tags", [])
    section.setdefault("parent", None)
    return section


def forget_result(stdout: str) -> Tuple[List[str], List[str]]:
    """Removed and kept snapshot ids from ``restic forget --json``."""
    groups = json.loads(stdout) if stdout.strip() else []
    removed: List[str] = []
    kept: List[str] = []
    for group in groups if isinstance(groups, list) else []:
        removed.extend(item["id"] for item in group.get("remove") or [] if "id" in item)
        kept.extend(item["id"] for item in group.get("keep") or [] if "id" in item)
    return removed, kept


def prune_figures(stdout: str) -> Dict[str, Any]:
    """``pruned_*`` and ``remaining_*`` figures from ``restic prune``'s text output."""
    figures: Dict[str, Any] = {}
    for label, blobs, size in _PRUNE_LINE.findall(stdout):
        prefix = "pruned" if label == "total prune" else "remaining"
        figures[prefix + "_blobs"] = int(blobs)
        figures[prefix + "_size"] = size[:32]
    return figures


def tool_version(version_output: str) -> Optional[str]:
    """``0.14.0`` from ``restic 0.14.0 compiled with ...``, ``1.60.1-DEV`` from ``rclone v1.60.1-DEV``."""
    first_line = version_output.strip().splitlines()[0] if version_output.strip() else ""
    match = _VERSION.search(first_line)
    return match.group(1) if match else None


def strip_url_credentials(url: str) -> str:
    """A repository location without ``user:password@`` (``rest:https://web1:pw@hub/`` -> ``rest:https://hub/``)."""
    return _URL_CREDENTIALS.sub(r"\1", url)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret and every URL credential replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _URL_CREDENTIALS.sub(r"\1" + REDACTED + "@", text)


def tail(text: str, max_chars: int) -> str:
    """The end of ``text``, at most ``max_chars`` characters, starting at a line boundary if possible."""
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < len(cut) - 1 else cut
