# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``bk-run offsite DESTINATION``: rclone copies of the hub's repositories."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, List

from bk_evidence.files import LockTimeout, locked
from bk_evidence.manifest import utc_now
from bk_evidence.recorder import BK_VERSION, Recorder
from bk_evidence.restic_output import strip_url_credentials
from bk_evidence.settings import Settings

from .config import Offsite
from .hub import SNAPSHOT_FILE, repository_dirs
from .outcome import Outcome, Problem, exit_code
from .process import child_environment, run, version_of
from .recording import record


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
