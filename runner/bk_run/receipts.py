# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``bk-run receipts``: a ``hub-receipt`` manifest for the snapshot files that arrived on the hub."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import sys
import time
from typing import Any, Dict, Iterator, List, Tuple

from bk_evidence.files import locked, read_json, write_json
from bk_evidence.manifest import new_manifest, rfc3339, utc_now
from bk_evidence.recorder import BK_VERSION, Recorder
from bk_evidence.settings import Settings

from .config import Hub
from .hub import SNAPSHOT_FILE, repository_dirs

RECEIPTS_PER_MANIFEST = 1000


# A snapshot file whose content does not (yet) hash to its name is looked at again on later runs
# for this long: a server that writes in place (rclone) may be mid-upload. After it, the file is
# reported once as mismatched, never confirmed.
MISMATCH_GRACE_SECONDS = 300


def _content_matches_name(path: str, name: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest() == name


def _arrivals(snapshots_dir: str, seen: set, now: float) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """New snapshot files: those whose content hashes to their name, and those long enough
    without it to be reported as mismatched."""
    verified, mismatched = [], []
    for entry in os.scandir(snapshots_dir):
        if entry.name in seen or not SNAPSHOT_FILE.match(entry.name) or not entry.is_file():
            continue
        info = entry.stat()
        arrived = datetime.datetime.fromtimestamp(info.st_mtime, datetime.timezone.utc)
        item = {"id": entry.name, "size": info.st_size, "arrived_at": rfc3339(arrived)}
        if _content_matches_name(entry.path, entry.name):
            verified.append(item)
        elif now - info.st_mtime > MISMATCH_GRACE_SECONDS:
            mismatched.append(item)

    def order(item: Dict[str, Any]) -> Tuple[str, str]:
        return item["arrived_at"], item["id"]

    return sorted(verified, key=order), sorted(mismatched, key=order)


def disk_space(data_dir: str) -> Dict[str, int]:
    """Bytes free (for an unprivileged server) and in total on the data directory's filesystem."""
    figures = os.statvfs(data_dir)
    return {"free_bytes": figures.f_bavail * figures.f_frsize, "total_bytes": figures.f_blocks * figures.f_frsize}


def receipts(settings: Settings, hub: Hub, recorder: Recorder) -> int:
    """A ``hub-receipt`` manifest per repository for snapshot files not reported before."""
    state_path = os.path.join(settings.state_dir, "receipts.json")
    failed = False
    hub_tools = {"bk": BK_VERSION, "python": platform.python_version()}
    with locked(os.path.join(settings.state_dir, "receipts.lock")):
        reported = read_json(state_path, {})
        for name in repository_dirs(hub.data_dir, hub.repositories):
            seen = set(reported.get(name, []))
            verified, mismatched = _arrivals(os.path.join(hub.data_dir, name, "snapshots"), seen, time.time())
            for chunk, bad in _receipt_chunks(verified, mismatched):
                doc = _receipt_manifest(name, chunk, bad, disk_space(hub.data_dir), hub_tools)
                if not _record_receipt(recorder, doc):
                    failed = True
                    break
                reported[name] = sorted(seen.union(item["id"] for item in chunk + bad))
                seen = set(reported[name])
                write_json(state_path, reported)
    return 1 if failed else 0


def _receipt_chunks(
    verified: List[Dict[str, Any]], mismatched: List[Dict[str, Any]]
) -> Iterator[Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]]:
    """(verified, mismatched) per manifest; the mismatched files go with the first."""
    first = True
    for start in range(0, max(len(verified), 1), RECEIPTS_PER_MANIFEST):
        chunk = verified[start : start + RECEIPTS_PER_MANIFEST]
        bad = mismatched[:RECEIPTS_PER_MANIFEST] if first else []
        first = False
        if chunk or bad:
            yield chunk, bad


def _receipt_manifest(
    name: str, chunk: List[Dict[str, Any]], bad: List[Dict[str, Any]], disk: Dict[str, int], hub_tools: Dict[str, str]
) -> Dict[str, Any]:
    started = utc_now()
    receipt: Dict[str, Any] = {"snapshots": chunk, "verified": "sha256", "disk": disk}
    error = None
    if bad:
        receipt["mismatched"] = bad
        error = {
            "exit_code": None,
            "message": "%d snapshot file(s) in %s do not hash to their name: stored by the server, not confirmed"
            % (len(bad), name),
        }
    return new_manifest(
        "hub-receipt",
        "warning" if bad else "success",
        started,
        utc_now(),
        repository={"name": name},
        receipt=receipt,
        error=error,
        tools=hub_tools,
    )


def _record_receipt(recorder: Recorder, doc: Dict[str, Any]) -> bool:
    try:
        recorder.record(doc)
    except Exception as exc:  # report and stop: the receipts are retried next run
        sys.stderr.write("bk: could not record a hub receipt: %s\n" % exc)
        return False
    return True
