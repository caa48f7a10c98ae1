# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hub-side work: ``bk-run receipts``, ``bk-run maintain`` and ``bk-run offsite DESTINATION``."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import re
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from bk_evidence.files import LockTimeout, locked, read_json, write_json
from bk_evidence.manifest import new_manifest, rfc3339, utc_now
from bk_evidence.recorder import BK_VERSION, Recorder
from bk_evidence.restic_output import forget_result, prune_figures, strip_url_credentials
from bk_evidence.settings import Settings

from .config import Hub, MaintainedRepository, Maintenance, Offsite, duration_hours
from .jobs import record, record_for_repository, restic_environment, tools
from .outcome import Outcome, Problem, exit_code
from .process import child_environment, run, version_of

SNAPSHOT_FILE = re.compile(r"^[0-9a-f]{64}$")
REPOSITORY_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
RECEIPTS_PER_MANIFEST = 1000


def repository_dirs(data_dir: str, only: Optional[List[str]]) -> List[str]:
    """Names of the restic repositories (directories with ``snapshots/``) under ``data_dir``."""
    try:
        names = sorted(os.listdir(data_dir))
    except FileNotFoundError:
        return []
    if only is not None:
        names = [name for name in names if name in only]
    return [
        name
        for name in names
        if REPOSITORY_DIR.match(name) and os.path.isdir(os.path.join(data_dir, name, "snapshots"))
    ]


# --- receipts ------------------------------------------------------------------------------


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


# --- maintenance ---------------------------------------------------------------------------


def floored_policy(policy: Dict[str, Any], floor: Dict[str, Any]) -> Dict[str, Any]:
    """The policy that keeps what ``policy`` keeps and what ``floor`` keeps.

    restic forget keeps a snapshot any rule keeps, so the larger count, the longer keep-within and
    every tag of either is exactly the union; a client's policy (from its host variables) can then
    never remove what the hub's floor keeps."""
    effective = dict(policy)
    for key, value in floor.items():
        if key not in effective:
            effective[key] = value
        elif key == "keep_tags":
            effective[key] = list(effective[key]) + [tags for tags in value if tags not in effective[key]]
        elif key == "keep_within":
            effective[key] = max(effective[key], value, key=duration_hours)
        else:
            effective[key] = max(effective[key], value)
    return effective


def policy_arguments(policy: Dict[str, Any]) -> List[str]:
    arguments = []
    for key, value in sorted(policy.items()):
        flag = "--" + key.replace("_", "-")
        if key == "keep_tags":
            for tags in value:
                arguments += ["--keep-tag", tags]
        else:
            arguments += [flag, str(value)]
    return arguments


def maintain(settings: Settings, maintenance: Maintenance, recorder: Recorder, only: List[str]) -> int:
    """forget (and prune) every maintained repository under its lock; forget and prune manifests."""
    statuses: List[str] = []
    common_tools = tools(settings)
    for repository in maintenance.repositories:
        if only and repository.name not in only:
            continue
        lock = os.path.join(maintenance.lock_dir, repository.name + ".lock")
        forget = Outcome(utc_now())
        try:
            with locked(lock, maintenance.lock_timeout_seconds):
                statuses += _forget_and_prune(settings, repository, recorder, forget, common_tools)
        except LockTimeout as exc:
            forget.fail(Problem("not run: %s (an offsite copy or another maintenance is running)" % exc))
            forget.finish(utc_now())
            _record_forget(settings, repository, recorder, forget, common_tools)
            statuses.append(forget.status)
    return exit_code(statuses)


def _common(repository: MaintainedRepository, common_tools: Dict[str, str]) -> Dict[str, Any]:
    common: Dict[str, Any] = {"tools": common_tools}
    if repository.cadence_seconds:
        common["cadence_seconds"] = repository.cadence_seconds
    return common


def _record_forget(
    settings: Settings,
    repository: MaintainedRepository,
    recorder: Recorder,
    outcome: Outcome,
    common_tools: Dict[str, str],
) -> None:
    outcome.sections.setdefault("forget", {"policy": repository.policy, "group_by": repository.group_by})
    record_for_repository(
        recorder,
        "forget",
        outcome=outcome,
        settings=settings,
        repository=repository,
        common=_common(repository, common_tools),
        secrets=repository.secrets(),
    )


def _forget_and_prune(
    settings: Settings,
    repository: MaintainedRepository,
    recorder: Recorder,
    forget: Outcome,
    common_tools: Dict[str, str],
) -> List[str]:
    env = restic_environment(settings, repository)
    policy = floored_policy(repository.policy, repository.retention_floor)
    argv = [
        settings.restic,
        "forget",
        "--json",
        "--group-by",
        repository.group_by,
        *policy_arguments(policy),
    ]
    completed = run(argv, env=env)
    removed: List[str] = []
    if completed.exit_code != 0:
        forget.fail(Problem("restic forget exited %d" % completed.exit_code, completed.exit_code, completed.stderr))
    else:
        try:
            removed, kept = forget_result(completed.stdout)
            forget.sections["forget"] = {
                "policy": policy,
                "group_by": repository.group_by,
                "removed": removed,
                "kept": kept,
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            forget.fail(Problem("cannot read restic forget's output", None, completed.stdout[-2000:]), "warning")
    forget.finish(utc_now())
    _record_forget(settings, repository, recorder, forget, common_tools)
    if not (repository.prune and removed and forget.status == "success"):
        return [forget.status]
    prune = Outcome(utc_now())
    completed = run([settings.restic, "prune", "--max-unused", repository.max_unused], env=env)
    prune.sections["prune"] = dict(prune_figures(completed.stdout), max_unused=repository.max_unused)
    if completed.exit_code != 0:
        output = completed.stdout + completed.stderr
        prune.fail(Problem("restic prune exited %d" % completed.exit_code, completed.exit_code, output))
    prune.finish(utc_now())
    record_for_repository(
        recorder,
        "prune",
        outcome=prune,
        settings=settings,
        repository=repository,
        common=_common(repository, common_tools),
        secrets=repository.secrets(),
    )
    return [forget.status, prune.status]


# --- offsite copies ------------------------------------------------------------------------


def remote_path(remote: str, name: str) -> str:
    """``remote`` joined with a repository name (``b2:bucket/fleet`` + ``web1``)."""
    return remote + name if remote.endswith(":") else remote.rstrip("/") + "/" + name


def rclone_transfer_argv(settings: Settings, offsite: Offsite, name: str) -> List[str]:
    source = os.path.join(offsite.source_dir, name)
    target = remote_path(offsite.remote, name)
    if offsite.mode == "mirror":
        backup_dir = remote_path(offsite.backup_dir or "", name)
        argv = [
            settings.rclone,
            "sync",
            "--checksum",
            "--backup-dir",
            backup_dir,
            "--max-delete",
            str(offsite.max_delete),
        ]
    else:
        argv = [settings.rclone, "copy", "--checksum", "--immutable"]
    argv += ["--exclude", "/locks/**"]
    if offsite.bandwidth_limit:
        argv += ["--bwlimit", offsite.bandwidth_limit]
    return [*argv, *offsite.extra_args, source, target]


def offsite_copy(settings: Settings, offsite: Offsite, recorder: Recorder) -> int:
    """Copy each hub repository to the destination under its lock; an ``offsite-copy`` manifest each."""
    env = child_environment({"RCLONE_CONFIG": offsite.rclone_config} if offsite.rclone_config else {})
    copy_tools = {"rclone": version_of(settings.rclone), "bk": BK_VERSION, "python": platform.python_version()}
    common: Dict[str, Any] = {"tools": {name: value for name, value in copy_tools.items() if value}}
    if offsite.cadence_seconds:
        common["cadence_seconds"] = offsite.cadence_seconds
    statuses = []
    for name in repository_dirs(offsite.source_dir, offsite.repositories):
        outcome = Outcome(utc_now())
        outcome.sections["offsite"] = {
            "destination": offsite.name,
            "remote": strip_url_credentials(remote_path(offsite.remote, name)),
            "mode": offsite.mode,
        }
        try:
            with locked(os.path.join(offsite.lock_dir, name + ".lock"), offsite.lock_timeout_seconds):
                _copy_one(settings, offsite, name, env, outcome)
        except LockTimeout as exc:
            outcome.fail(Problem("not run: %s (maintenance is running)" % exc))
        outcome.finish(utc_now())
        record(recorder, "offsite-copy", outcome, dict(common, repository={"name": name}), [])
        statuses.append(outcome.status)
    return exit_code(statuses)


def _copy_one(settings: Settings, offsite: Offsite, name: str, env: Dict[str, str], outcome: Outcome) -> None:
    transfer = run(rclone_transfer_argv(settings, offsite, name), env=env)
    if transfer.exit_code != 0:
        outcome.fail(
            Problem("rclone %s exited %d" % (offsite.mode, transfer.exit_code), transfer.exit_code, transfer.stderr)
        )
    listing = run([settings.rclone, "lsf", "--files-only", remote_path(offsite.remote, name) + "/snapshots"], env=env)
    if listing.exit_code != 0:
        outcome.fail(Problem("rclone lsf exited %d" % listing.exit_code, listing.exit_code, listing.stderr))
        return
    present = sorted(line.strip() for line in listing.stdout.splitlines() if SNAPSHOT_FILE.match(line.strip()))
    outcome.sections["offsite"]["snapshots"] = present
