# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side work: ``bk-run backup JOB`` and ``bk-run check JOB``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .config import Job, Repository, Settings
from .files import JsonTable
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
        self.table = JsonTable(state_dir, "repositories")

    def known(self, url: str) -> Optional[str]:
        """The id already on file, without asking restic."""
        value = self.table.read().get(url)
        return value if isinstance(value, str) else None

    def forget(self, url: str) -> None:
        """Have the id read again next time (an unwritable state file only costs that)."""
        try:
            self.table.update(url, None)
        except (OSError, ValueError) as exc:
            sys.stderr.write("bk: cannot forget the repository id of %s: %s\n" % (url, exc))

    def lookup(self, settings: Settings, repository: Repository, url: str) -> Optional[str]:
        known = self.known(url)
        if known:
            return known
        completed = run(
            [settings.restic, "cat", "config", "--json", "--no-lock"],
            env=restic_environment(settings, repository),
            timeout=RESTIC_QUERY_TIMEOUT_SECONDS,
        )
        try:
            repository_id = read_config_id(completed)
        except ValueError:
            return None
        self.table.update(url, repository_id)
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


class FastPath(NamedTuple):
    """What bk-run fixes in advance so that it knows the new snapshot without asking restic."""

    key: str
    parent: str
    paths: List[str]
    time: str
    repository_id: str
    cache_dir: str
    tags: List[str]
    started: float


def backup_argv(settings: Settings, job: Job, fast: Optional[FastPath] = None) -> List[str]:
    argv = [settings.restic, "backup", "--json", "--host", settings.host]
    if fast:
        argv += ["--parent", fast.parent, "--time", fast.time.replace("T", " ").rstrip("Z")]
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
    settings: Settings, job: Job, env: Dict[str, str], fast: Optional[FastPath] = None
) -> Tuple[Optional[Completed], Optional[Completed]]:
    """restic's result (None if it did not run), and the dump command's when the job streams a dump."""
    argv = backup_argv(settings, job, fast)
    if not job.dump:
        # restic parses --time in its local zone: UTC makes it the instant bk-run means
        return run_filtered(argv, _is_summary, env=dict(env, TZ="UTC") if fast else env), None
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
    fast = _fast_path(settings, job, repository, env, outcome.started_at.timestamp())
    restic, dump = _run_restic_backup(settings, job, env, fast)
    if fast and restic is not None and _parent_gone(restic, fast.parent):
        sys.stderr.write("bk: snapshot %s is gone from the repository; backing up without it\n" % fast.parent[:8])
        LastSnapshots(settings.state_dir).forget(fast.key)
        # forgotten, or the repository was initialised anew at the same place: then its id changed too
        RepositoryIds(settings.state_dir).forget(strip_url_credentials(repository.location()))
        fast = None
        restic, dump = _run_restic_backup(settings, job, env)
    if dump is not None and dump.exit_code != 0:
        outcome.fail(Problem("dump command exited %d" % dump.exit_code, dump.exit_code, dump.stderr))
    if restic is not None:
        _read_restic_backup(settings, restic, env, outcome, fast)
    if not job.dump and "snapshot" in outcome.sections:
        LastSnapshots(settings.state_dir).remember(settings, job, repository, outcome.sections["snapshot"])
    outcome.finish(utc_now())
    return outcome


def _read_restic_backup(
    settings: Settings, restic: Completed, env: Dict[str, str], outcome: Outcome, fast: Optional[FastPath] = None
) -> None:
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
        # any warning (a path restic skipped, say) may mean it stored other paths than planned
        known = fast if restic.exit_code == 0 and not restic.stderr.strip() else None
        snapshot = _known_snapshot(known, str(short_id)) or _snapshot(settings, env, short_id)
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


# --- the fast path: the snapshot section without a second restic call -------------------------

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MTIME_SLACK_SECONDS = 2.0


class LastSnapshots:
    """The last snapshot each path job made in each repository: ``{id, paths, host}``."""

    def __init__(self, state_dir: str) -> None:
        self.table = JsonTable(state_dir, "last-snapshots")

    def get(self, key: str) -> Dict[str, Any]:
        value = self.table.read().get(key)
        return value if isinstance(value, dict) else {}

    def remember(self, settings: Settings, job: Job, repository: Repository, snapshot: Dict[str, Any]) -> None:
        try:
            key = _snapshot_key(job, repository)
            self.table.update(key, {"id": snapshot["id"], "paths": snapshot.get("paths"), "host": settings.host})
        except (OSError, ValueError) as exc:  # only costs the next run its fast path
            sys.stderr.write("bk: cannot remember snapshot %s: %s\n" % (snapshot.get("short_id"), exc))

    def forget(self, key: str) -> None:
        try:
            self.table.update(key, None)
        except (OSError, ValueError) as exc:
            sys.stderr.write("bk: cannot forget the last snapshot of %s: %s\n" % (key, exc))


def _snapshot_key(job: Job, repository: Repository) -> str:
    return "%s %s" % (job.name, strip_url_credentials(repository.location()))


def stored_paths(paths: List[str]) -> Optional[List[str]]:
    """The paths restic 0.14 records for these targets (absolute, cleaned, sorted, duplicates kept),
    or None when bk cannot be sure (a relative or uncleaned path, a tag-like oddity)."""
    for path in paths:
        if not path.startswith("/") or path.startswith("//") or os.path.normpath(path) != path:
            return None
    return sorted(paths)


def _plain_tags(tags: List[str]) -> bool:
    """Tags restic stores exactly as given (it splits on commas and drops empty ones)."""
    return all(tag and "," not in tag and tag.strip() == tag for tag in tags)


def restic_cache_dir(env: Dict[str, str]) -> Optional[str]:
    """The cache directory restic 0.14 uses with this environment, None when it uses none or it is unclear."""
    if env.get("RESTIC_CACHE_DIR"):
        return env["RESTIC_CACHE_DIR"]
    base = env.get("XDG_CACHE_HOME") or (env["HOME"] + "/.cache" if env.get("HOME") else "")
    return base + "/restic" if base.startswith("/") else None


def _fast_path(
    settings: Settings, job: Job, repository: Repository, env: Dict[str, str], started: float
) -> Optional[FastPath]:
    """The facts to fix for this run, or None (then the snapshot is read back with ``restic snapshots``)."""
    if job.dump or not _plain_tags(job.tags):
        return None
    paths = stored_paths(job.paths)
    cache_dir = restic_cache_dir(env)
    try:
        key = _snapshot_key(job, repository)
        record = LastSnapshots(settings.state_dir).get(key)
        repository_id = RepositoryIds(settings.state_dir).known(strip_url_credentials(repository.location()))
    except (OSError, ValueError):
        return None
    parent = record.get("id")
    if not (paths and cache_dir and repository_id and isinstance(parent, str) and _HEX64.match(parent)):
        return None
    if record.get("paths") != paths or record.get("host") != settings.host:
        return None
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(started)))
    return FastPath(key, parent, paths, moment, repository_id, cache_dir, list(job.tags), started)


def _parent_gone(restic: Completed, parent: str) -> bool:
    """restic refused ``--parent`` because that snapshot no longer exists, before backing anything up."""
    fatal = 'Fatal: invalid id "%s": no matching ID found' % parent
    return restic.exit_code == 1 and backup_summary(restic.stdout) is None and fatal in restic.stderr


def _known_snapshot(fast: Optional[FastPath], short_id: str) -> Optional[Dict[str, Any]]:
    """The snapshot section from what bk-run fixed, once restic's cache proves the full id."""
    if fast is None:
        return None
    snapshot_id = _cached_snapshot_id(fast, short_id)
    if snapshot_id is None:
        return None
    return {
        "id": snapshot_id,
        "short_id": snapshot_id[:8],
        "paths": list(fast.paths),
        "tags": list(fast.tags),
        "parent": fast.parent,
        "time": fast.time,
    }


def _cached_snapshot_id(fast: FastPath, short_id: str) -> Optional[str]:
    """The full id of the snapshot file restic just wrote to its cache: the one file whose name starts
    with the short id, whose contents hash to its name, written during this run."""
    if not re.match(r"^[0-9a-f]{8}$", short_id):
        return None
    directory = os.path.join(fast.cache_dir, fast.repository_id, "snapshots", short_id[:2])
    try:
        names = [name for name in os.listdir(directory) if name.startswith(short_id)]
        found = [name for name in names if _is_snapshot_file(os.path.join(directory, name), name, fast.started)]
    except OSError:
        return None
    return found[0] if len(found) == 1 and len(names) == 1 else None


def _is_snapshot_file(path: str, name: str, started: float) -> bool:
    if not _HEX64.match(name) or os.stat(path).st_mtime < started - MTIME_SLACK_SECONDS:
        return False
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest() == name


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
