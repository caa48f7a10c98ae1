# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``bk-run maintain``: restic forget (floored by the hub's retention floor) and prune."""

from __future__ import annotations

import os
from typing import Any, Dict, List

from bk_evidence.files import LockTimeout, locked
from bk_evidence.manifest import utc_now
from bk_evidence.recorder import Recorder
from bk_evidence.restic_output import forget_result, prune_figures
from bk_evidence.settings import Settings

from .config import MaintainedRepository, Maintenance, duration_hours
from .outcome import Outcome, Problem, exit_code
from .process import run
from .recording import record_each_repository, restic_environment, tools


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
    _record(settings, repository, recorder, common_tools, kind="forget", outcome=outcome)


def _record(
    settings: Settings,
    repository: MaintainedRepository,
    recorder: Recorder,
    common_tools: Dict[str, str],
    *,
    kind: str,
    outcome: Outcome,
) -> None:
    record_each_repository(
        recorder,
        kind,
        [(repository, outcome)],
        settings=settings,
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
    _record(settings, repository, recorder, common_tools, kind="prune", outcome=prune)
    return [forget.status, prune.status]
