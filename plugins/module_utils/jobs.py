# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side work: ``bk-run backup JOB`` and ``bk-run check JOB``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from .config import Job, Repository, Settings
from .files import locked, read_json, write_json
from .manifest import new_manifest, utc_now
from .outcome import Outcome, Problem, exit_code, worst
from .process import (
    HOOK_TIMEOUT_SECONDS,
    Completed,
    argv_of,
    child_environment,
    in_background,
    python_version,
    run,
    run_filtered,
    version_of,
)
from .recorder import BK_VERSION, Recorder
from .restic_output import (
    backup_summary,
    parse_snapshots,
    scrub,
    snapshot_section,
    stats_from_summary,
    strip_url_credentials,
)

RESTIC_VARIABLES = (
    "RESTIC_REPOSITORY",
    "RESTIC_REPOSITORY_FILE",
    "RESTIC_PASSWORD",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
)
RESTIC_QUERY_TIMEOUT_SECONDS = 600
Envelopes = List[Dict[str, str]]


def restic_environment(settings: Settings, repository: Repository) -> Dict[str, str]:
    """restic's environment: location and password from files, never from argv."""
    extra = {
        "RESTIC_REPOSITORY_FILE": repository.repository_file,
        "RESTIC_PASSWORD_FILE": repository.password_file,
    }
    if settings.cache_dir:
        extra["RESTIC_CACHE_DIR"] = settings.cache_dir
    return child_environment(extra, drop=RESTIC_VARIABLES)


def tools(settings: Settings) -> Dict[str, str]:
    found = {"restic": version_of(settings.restic), "bk": BK_VERSION, "python": python_version()}
    return {name: version for name, version in found.items() if version}


def repository_section(settings: Settings, repository: Repository) -> Dict[str, Any]:
    """``{name, url, id}``: the location without credentials and restic's repository id."""
    section: Dict[str, Any] = {"name": repository.name}
    try:
        section["url"] = strip_url_credentials(repository.location())
    except OSError:
        return section
    repository_id = RepositoryIds(settings.state_dir).lookup(settings, repository, section["url"])
    if repository_id:
        section["id"] = repository_id
    return section


class RepositoryIds:
    """restic repository ids by location, read once with ``restic cat config``."""

    def __init__(self, state_dir: str) -> None:
        self.path = state_dir.rstrip("/") + "/repositories.json"
        self.lock_path = state_dir.rstrip("/") + "/repositories.lock"

    def lookup(self, settings: Settings, repository: Repository, url: str) -> Optional[str]:
        known = read_json(self.path, {})
        if isinstance(known, dict) and isinstance(known.get(url), str):
            return known[url]
        completed = run(
            [settings.restic, "cat", "config", "--json", "--no-lock"],
            env=restic_environment(settings, repository),
            timeout=RESTIC_QUERY_TIMEOUT_SECONDS,
        )
        try:
            repository_id = read_config_id(completed)
        except ValueError:
            return None
        with locked(self.lock_path):
            known = read_json(self.path, {})
            known = known if isinstance(known, dict) else {}
            known[url] = repository_id
            write_json(self.path, known)
        return repository_id


def read_config_id(completed: Completed) -> str:
    if completed.exit_code != 0:
        raise ValueError("restic cat config failed")
    value = json.loads(completed.stdout)
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise ValueError("restic cat config printed no id")
    return value["id"]


# --- hooks ---------------------------------------------------------------------------------


def run_commands(commands: List[Any], env: Dict[str, str], phase: str, secrets: List[str]) -> Optional[Problem]:
    """Run hook commands in order; the first failure as a Problem (later ones are not run).

    Their output goes to stderr (the journal) with the job's secrets and URL credentials masked."""
    for command in commands:
        completed = run(argv_of(command), env=env, timeout=HOOK_TIMEOUT_SECONDS)
        output = completed.stdout + completed.stderr
        if output:
            sys.stderr.write(scrub(output, secrets))
        if completed.exit_code != 0:
            shown = command if isinstance(command, str) else " ".join(command)
            return Problem("%s command %r exited %d" % (phase, shown, completed.exit_code), completed.exit_code, output)
    return None


# --- backup --------------------------------------------------------------------------------


def backup_argv(settings: Settings, job: Job) -> List[str]:
    argv = [settings.restic, "backup", "--json", "--host", settings.host]
    for pattern in job.exclude:
        argv += ["--exclude", pattern]
    if job.exclude_file:
        argv += ["--exclude-file", job.exclude_file]
    for marker in job.exclude_if_present:
        argv += ["--exclude-if-present", marker]
    if job.one_file_system:
        argv.append("--one-file-system")
    if job.exclude_caches:
        argv.append("--exclude-caches")
    for tag in job.tags:
        argv += ["--tag", tag]
    if job.compression:
        argv += ["--compression", job.compression]
    if job.limit_upload:
        argv += ["--limit-upload", str(job.limit_upload)]
    if job.limit_download:
        argv += ["--limit-download", str(job.limit_download)]
    if job.dump:
        return [*argv, "--stdin", "--stdin-filename", job.dump.filename]
    return [*argv, "--", *job.paths]


def _is_summary(line: str) -> bool:
    return '"summary"' in line


def _run_restic_backup(
    settings: Settings, job: Job, env: Dict[str, str]
) -> Tuple[Optional[Completed], Optional[Completed]]:
    """restic's result (None if it did not run), and the dump command's when the job streams a dump."""
    argv = backup_argv(settings, job)
    if not job.dump:
        return run_filtered(argv, _is_summary, env=env), None
    with tempfile.TemporaryFile() as dump_errors:
        try:
            dump = subprocess.Popen(
                argv_of(job.dump.command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=dump_errors
            )
        except OSError as exc:
            return None, Completed(127, "", "cannot run the dump command: %s\n" % exc)
        try:
            restic = run_filtered(argv, _is_summary, env=env, stdin=dump.stdout.fileno() if dump.stdout else None)
        finally:
            if dump.stdout:
                dump.stdout.close()
            dump_code = dump.wait()
        dump_errors.seek(0)
        return restic, Completed(dump_code, "", dump_errors.read().decode("utf-8", "replace"))


def _backup_one(settings: Settings, job: Job, repository: Repository) -> Outcome:
    outcome = Outcome(utc_now())
    env = restic_environment(settings, repository)
    restic, dump = _run_restic_backup(settings, job, env)
    if dump is not None and dump.exit_code != 0:
        outcome.fail(Problem("dump command exited %d" % dump.exit_code, dump.exit_code, dump.stderr))
    if restic is not None:
        _read_restic_backup(settings, restic, env, outcome)
    outcome.finish(utc_now())
    return outcome


def _read_restic_backup(settings: Settings, restic: Completed, env: Dict[str, str], outcome: Outcome) -> None:
    if restic.exit_code == 3:
        outcome.fail(
            Problem("restic backup could not read some source data (incomplete snapshot)", 3, restic.stderr), "warning"
        )
    elif restic.exit_code != 0:
        outcome.fail(Problem("restic backup exited %d" % restic.exit_code, restic.exit_code, restic.stderr))
    summary = backup_summary(restic.stdout)
    if summary is None:
        if restic.exit_code in (0, 3):
            outcome.fail(Problem("restic backup printed no summary", restic.exit_code, restic.stderr))
        return
    outcome.sections["stats"] = stats_from_summary(summary)
    short_id = summary.get("snapshot_id")
    if short_id:
        snapshot = _snapshot(settings, env, short_id)
        if snapshot is None:
            outcome.fail(Problem("cannot read snapshot %s back from the repository" % short_id), "warning")
        else:
            outcome.sections["snapshot"] = snapshot


def _snapshot(settings: Settings, env: Dict[str, str], short_id: str) -> Optional[Dict[str, Any]]:
    """The full snapshot (``restic snapshots --json ID``): restic 0.14's summary has only the short id."""
    completed = run(
        [settings.restic, "snapshots", "--json", "--no-lock", short_id], env=env, timeout=RESTIC_QUERY_TIMEOUT_SECONDS
    )
    if completed.exit_code != 0:
        return None
    try:
        snapshots = parse_snapshots(completed.stdout)
    except ValueError:
        return None
    matching = [item for item in snapshots if str(item.get("id", "")).startswith(short_id)]
    return snapshot_section(matching[0]) if len(matching) == 1 else None


def backup(settings: Settings, job: Job, recorder: Recorder) -> Tuple[int, Envelopes]:
    """Run one backup job to every repository; one manifest per repository. The exit status."""
    started = utc_now()
    tool_versions = in_background(tools, settings)  # `restic version` runs beside the backup
    hook_env = child_environment({"BK_JOB": job.name})
    pre_problem = run_commands(job.pre, hook_env, "pre", job.secrets())
    outcomes: List[Tuple[Repository, Outcome]] = []
    for repository in job.repositories:
        if pre_problem:
            outcome = Outcome(started)
            outcome.fail(pre_problem)
            outcome.finish(utc_now())
        else:
            outcome = _backup_one(settings, job, repository)
        outcomes.append((repository, outcome))
    status = exit_code(outcome.status for _repository, outcome in outcomes)
    _run_post(job, hook_env, outcomes, status)
    common = {"job": job.name, "cadence_seconds": job.cadence_seconds, "tools": tool_versions()}
    envelopes = [
        record_for_repository(
            recorder,
            "backup",
            outcome=outcome,
            settings=settings,
            repository=repository,
            common=common,
            secrets=job.secrets(),
        )
        for repository, outcome in outcomes
    ]
    return status, [envelope for envelope in envelopes if envelope]


def _run_post(job: Job, hook_env: Dict[str, str], outcomes: List[Tuple[Repository, Outcome]], status: int) -> None:
    snapshot_ids = [outcome.sections["snapshot"]["id"] for _r, outcome in outcomes if "snapshot" in outcome.sections]
    env = dict(
        hook_env,
        BK_STATUS=worst(outcome.status for _r, outcome in outcomes),
        BK_SNAPSHOT_ID=snapshot_ids[0] if snapshot_ids else "",
        BK_EXIT_CODE=str(status),
    )
    post_problem = run_commands(job.post, env, "post", job.secrets())
    if post_problem:
        for _repository, outcome in outcomes:
            outcome.fail(post_problem, "warning")


def record(
    recorder: Recorder, kind: str, outcome: Outcome, sections: Dict[str, Any], secrets: List[str]
) -> Optional[Dict[str, str]]:
    """Sign and spool the manifest of an outcome; None (and a loud message) when that fails."""
    try:
        doc = new_manifest(
            kind,
            outcome.status,
            outcome.started_at,
            outcome.finished_at,
            error=outcome.error_section(secrets),
            **sections,
            **outcome.sections,
        )
        return recorder.record(doc)
    except Exception as exc:  # the work is done; losing its evidence must not change its exit status
        sys.stderr.write("bk: could not record a %s manifest: %s\n" % (kind, exc))
        return None


def record_for_repository(
    recorder: Recorder,
    kind: str,
    *,
    outcome: Outcome,
    settings: Settings,
    repository: Repository,
    common: Dict[str, Any],
    secrets: List[str],
) -> Optional[Dict[str, str]]:
    try:
        section = repository_section(settings, repository)
    except Exception as exc:  # an unreadable state file must not cost the manifest
        sys.stderr.write("bk: cannot describe repository %s fully: %s\n" % (repository.name, exc))
        section = {"name": repository.name}
    sections = dict(common, repository=section)
    return record(recorder, kind, outcome, sections, secrets)


# --- check ---------------------------------------------------------------------------------


def check(settings: Settings, job: Job, recorder: Recorder) -> Tuple[int, Envelopes]:
    """``restic check`` of every repository of a job; one manifest per repository."""
    envelopes = []
    statuses = []
    common = {"job": job.name, "tools": tools(settings), "check": {"read_data_subset": job.read_data_subset}}
    for repository in job.repositories:
        outcome = Outcome(utc_now())
        argv = [settings.restic, "check"]
        if job.read_data_subset:
            argv += ["--read-data-subset", job.read_data_subset]
        completed = run(argv, env=restic_environment(settings, repository))
        if completed.exit_code != 0:
            output = completed.stdout + completed.stderr
            outcome.fail(Problem("restic check exited %d" % completed.exit_code, completed.exit_code, output))
        outcome.finish(utc_now())
        statuses.append(outcome.status)
        envelopes.append(
            record_for_repository(
                recorder,
                "check",
                outcome=outcome,
                settings=settings,
                repository=repository,
                common=common,
                secrets=job.secrets(),
            )
        )
    return exit_code(statuses), [envelope for envelope in envelopes if envelope]
