# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side work: ``bk-run backup JOB`` and ``bk-run check JOB``."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from bk_evidence.files import JsonTable
from bk_evidence.manifest import utc_now
from bk_evidence.recorder import Recorder
from bk_evidence.restic_output import (
    FAILURE_CAUSES,
    backup_summary,
    exit_error,
    failure_cause,
    parse_snapshots,
    restic_version_tuple,
    scrub,
    snapshot_section,
    stats_from_summary,
    strip_url_credentials,
)
from bk_evidence.settings import Settings

from .config import Job, Repository
from .outcome import Outcome, Problem, exit_code, worst
from .process import (
    HOOK_TIMEOUT_SECONDS,
    Completed,
    argv_of,
    minimal_environment,
    run,
    run_filtered,
)
from .recording import (
    RESTIC_QUERY_TIMEOUT_SECONDS,
    Envelopes,
    RepositoryIds,
    record_each_repository,
    restic_environment,
    restic_version,
    tools,
)


class ResticFeatures(NamedTuple):
    """What the configured restic can do, by its version (an unknown version: what 0.14 can)."""

    version: Optional[str]

    def at_least(self, major: int, minor: int) -> bool:
        found = restic_version_tuple(self.version)
        return found is not None and found >= (major, minor)

    @property
    def stdin_from_command(self) -> bool:
        return self.at_least(0, 17)

    @property
    def skip_if_unchanged(self) -> bool:
        return self.at_least(0, 17)


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


class Interruption:
    """SIGINT and SIGTERM during a backup: noted instead of raised, so that restic (which gets
    the same signal from the terminal or from systemd) ends the repository at hand, its manifest
    says "interrupted", and the job's other repositories are not started."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> Interruption:
        try:
            for number in self.SIGNALS:
                self.previous[number] = signal.signal(number, self._note)
        except ValueError:  # not the main thread (bk-run's own is): signals stay as they were
            pass
        return self

    def __exit__(self, *_exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _note(self, number: int, _frame: Any) -> None:
        self.signal = number


# --- backup --------------------------------------------------------------------------------


class FastPath(NamedTuple):
    """What bk-run fixes in advance so that it knows the new snapshot without asking restic."""

    key: str
    parent: str
    paths: List[str]
    time: str
    repository_id: Optional[str]
    cache_dir: Optional[str]
    tags: List[str]
    started: float


class Plan(NamedTuple):
    """One ``restic backup`` of a job to a repository, as decided before it runs."""

    job: Job
    features: ResticFeatures
    env: Dict[str, str]
    fast: Optional[FastPath] = None
    dump_errors: Optional[str] = None  # with --stdin-from-command: the file the dump's stderr goes to


def backup_argv(settings: Settings, plan: Plan) -> List[str]:
    job, fast = plan.job, plan.fast
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
    if job.skip_if_unchanged and plan.features.skip_if_unchanged:
        argv.append("--skip-if-unchanged")
    if job.dump and plan.dump_errors:
        # restic runs the dump itself and sees its exit status; env -i: the dump gets only its own
        # variables; its stderr goes to a file of bk-run's (restic 0.19 relays it, but not always all of it)
        assignments = ["%s=%s" % item for item in sorted(dump_environment(job).items())]
        to_file = ["/bin/sh", "-c", 'exec "$@" 2>>"$0"', plan.dump_errors]
        dump_argv = ["/usr/bin/env", "-i", *assignments, *to_file, *argv_of(job.dump.command)]
        return [*argv, "--stdin-filename", job.dump.filename, "--stdin-from-command", "--", *dump_argv]
    if job.dump:
        return [*argv, "--stdin", "--stdin-filename", job.dump.filename]
    return [*argv, "--", *job.paths]


def hook_environment(job: Job) -> Dict[str, str]:
    """What hooks get: a minimal environment (never the runner's, which holds the repositories'
    ``EnvironmentFile=`` secrets) and ``BK_JOB``."""
    return minimal_environment({"BK_JOB": job.name})


def dump_environment(job: Job) -> Dict[str, str]:
    return hook_environment(job)


def _is_summary(line: str) -> bool:
    return '"summary"' in line


def _run_restic_backup(settings: Settings, plan: Plan) -> Tuple[Optional[Completed], Optional[Completed]]:
    """restic's result (None if it did not run), and the dump command's when bk-run pipes a dump."""
    # restic parses --time in its local zone: UTC makes it the instant bk-run means
    env = dict(plan.env, TZ="UTC") if plan.fast else plan.env
    if not plan.job.dump:
        return run_filtered(backup_argv(settings, plan), _is_summary, env=env), None
    if plan.features.stdin_from_command:
        return _run_restic_dump(settings, plan, env)
    argv = backup_argv(settings, plan)
    dump_command = plan.job.dump.command
    with tempfile.TemporaryFile() as dump_errors:
        try:
            dump = subprocess.Popen(
                argv_of(dump_command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=dump_errors,
                env=dump_environment(plan.job),
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


_DUMP_EXIT = re.compile(r"command failed: exit status ([0-9]+)")


def _run_restic_dump(settings: Settings, plan: Plan, env: Dict[str, str]) -> Tuple[Completed, Completed]:
    """``restic backup --stdin-from-command``: restic's result, and the dump's as restic saw it."""
    handle, errors_path = tempfile.mkstemp(prefix="bk-dump-", suffix=".stderr")
    try:
        os.close(handle)
        restic = run_filtered(backup_argv(settings, plan._replace(dump_errors=errors_path)), _is_summary, env=env)
        with open(errors_path, encoding="utf-8", errors="replace") as errors:
            dump_errors = errors.read()
    finally:
        os.unlink(errors_path)
    failed = _DUMP_EXIT.search(restic.stderr)
    dump_code = int(failed.group(1)) if failed else (1 if "command failed" in restic.stderr else 0)
    return restic, Completed(dump_code, "", dump_errors)


def _backup_one(
    settings: Settings, job: Job, repository: Repository, features: ResticFeatures, interruption: Interruption
) -> Outcome:
    outcome = Outcome(utc_now())
    env = restic_environment(settings, repository)
    fast = _fast_path(settings, job, repository, env, outcome.started_at.timestamp())
    plan = Plan(job, features, env, fast)
    if job.skip_if_unchanged and not features.skip_if_unchanged:
        outcome.fail(
            Problem(
                "skip_if_unchanged needs restic 0.17 or later (this restic is %s); backed up without it"
                % (features.version or "of an unknown version"),
                cause="option_unsupported",
            ),
            "warning",
        )
    restic, dump = _run_restic_backup(settings, plan)
    if fast and restic is not None and _refused_parent(restic, fast.parent):
        sys.stderr.write("bk: snapshot %s is gone from the repository; backing up without it\n" % fast.parent[:8])
        LastSnapshots(settings.state_dir).forget(fast.key)
        # forgotten, or the repository was initialised anew at the same place: then its id changed too
        RepositoryIds(settings.state_dir).forget(strip_url_credentials(repository.location()))
        plan = plan._replace(fast=None)
        restic, dump = _run_restic_backup(settings, plan)
    elif fast and restic is not None and _failed_before_backing_up(restic) and not _known_failure(restic):
        # a failure bk-run cannot name may be the parent's: the next run must not depend on it again
        LastSnapshots(settings.state_dir).forget(fast.key)
    if dump is not None and dump.exit_code != 0:
        outcome.fail(Problem("dump command exited %d" % dump.exit_code, dump.exit_code, dump.stderr, "dump_failed"))
    if restic is not None:
        _read_restic_backup(settings, plan, restic, outcome, interruption)
    if "snapshot" in outcome.sections and not job.dump:
        LastSnapshots(settings.state_dir).remember(settings, job, repository, outcome.sections["snapshot"])
    outcome.finish(utc_now())
    return outcome


def _read_restic_backup(
    settings: Settings, plan: Plan, restic: Completed, outcome: Outcome, interruption: Interruption
) -> None:
    summary = backup_summary(restic.stdout)
    if restic.exit_code != 0:
        outcome.fail(_restic_problem(plan, restic, interruption), "warning" if restic.exit_code == 3 else "failure")
    if summary is None:
        if restic.exit_code in (0, 3):
            outcome.fail(Problem("restic backup printed no summary", restic.exit_code, restic.stderr))
        return
    outcome.sections["stats"] = stats_from_summary(summary)
    snapshot_id = summary.get("snapshot_id")
    if not snapshot_id:
        if restic.exit_code == 0 and plan.job.skip_if_unchanged:
            sys.stderr.write("bk: nothing changed since the last snapshot: restic made no new one\n")
        return
    # any warning (a path restic skipped, say) may mean it stored other paths than planned
    known = plan.fast if restic.exit_code == 0 and not restic.stderr.strip() else None
    snapshot = _known_snapshot(known, str(snapshot_id)) or _snapshot(settings, plan.env, str(snapshot_id))
    if snapshot is None:
        outcome.fail(Problem("cannot read snapshot %s back from the repository" % snapshot_id), "warning")
    else:
        outcome.sections["snapshot"] = snapshot


def _restic_problem(plan: Plan, restic: Completed, interruption: Interruption) -> Problem:
    """restic's failure as a sentence with its cause, the same on restic 0.14 and 0.19."""
    cause = failure_cause(restic.exit_code, restic.stderr)
    if interruption.signal is not None:
        cause = "interrupted"  # restic 0.18 exits 1 ("context canceled") where 0.14 and 0.19 exit 130
    if cause is None and plan.job.dump and plan.features.stdin_from_command and "command failed" in restic.stderr:
        cause = "dump_failed"
    sentence = FAILURE_CAUSES.get(cause or "", "")
    if cause == "dump_failed":
        sentence = "the dump command failed, so restic stored no snapshot"
    error = exit_error(restic.stderr)
    if not sentence and error and isinstance(error.get("message"), str):
        sentence = error["message"].splitlines()[0] if error["message"].strip() else ""
    message = "restic backup exited %d" % restic.exit_code + (": " + sentence if sentence else "")
    return Problem(message, restic.exit_code, restic.stderr, cause)


def _snapshot(settings: Settings, env: Dict[str, str], short_id: str) -> Optional[Dict[str, Any]]:
    """The full snapshot (``restic snapshots --json ID``) when bk-run could not fix its facts in advance."""
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
    """The paths restic records for these targets (absolute, cleaned, sorted, duplicates kept),
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
    try:
        key = _snapshot_key(job, repository)
        record = LastSnapshots(settings.state_dir).get(key)
        repository_id = RepositoryIds(settings.state_dir).known(strip_url_credentials(repository.location()))
    except (OSError, ValueError):
        return None
    parent = record.get("id")
    if not (paths and isinstance(parent, str) and _HEX64.match(parent)):
        return None
    if record.get("paths") != paths or record.get("host") != settings.host:
        return None
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(started)))
    return FastPath(key, parent, paths, moment, repository_id, restic_cache_dir(env), list(job.tags), started)


def _refused_parent(restic: Completed, parent: str) -> bool:
    """restic refused ``--parent`` before backing anything up because it cannot load that snapshot:
    restic 0.14 says ``Fatal: invalid id "<id>": no matching ID found``, 0.17+ ends with
    ``{"message_type":"exit_error","code":1,"message":"failed to load snapshot <short id>: ..."}``."""
    if not _failed_before_backing_up(restic):
        return False
    if 'Fatal: invalid id "%s"' % parent in restic.stderr:
        return True
    error = exit_error(restic.stderr)
    message = error.get("message") if error else None
    return isinstance(message, str) and message.startswith("failed to load snapshot %s" % parent[:8])


def _known_failure(restic: Completed) -> bool:
    """A failure that has nothing to do with the parent (no repository, a lock, the password, a signal)."""
    return failure_cause(restic.exit_code, restic.stderr) is not None


def _failed_before_backing_up(restic: Completed) -> bool:
    return restic.exit_code not in (0, 3) and backup_summary(restic.stdout) is None


def _known_snapshot(fast: Optional[FastPath], snapshot_id: str) -> Optional[Dict[str, Any]]:
    """The snapshot section from what bk-run fixed, once the full id is certain: restic 0.15+ prints
    it in the summary; for restic 0.14's short id, restic's cache proves it."""
    if fast is None:
        return None
    full_id = snapshot_id if _HEX64.match(snapshot_id) else _cached_snapshot_id(fast, snapshot_id)
    if full_id is None:
        return None
    return {
        "id": full_id,
        "short_id": full_id[:8],
        "paths": list(fast.paths),
        "tags": list(fast.tags),
        "parent": fast.parent,
        "time": fast.time,
    }


def _cached_snapshot_id(fast: FastPath, short_id: str) -> Optional[str]:
    """The full id of the snapshot file restic 0.14 just wrote to its cache: the one file whose name
    starts with the short id, whose contents hash to its name, written during this run."""
    if not (re.match(r"^[0-9a-f]{8}$", short_id) and fast.cache_dir and fast.repository_id):
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
    features = ResticFeatures(restic_version(settings))
    hook_env = hook_environment(job)
    outcomes: List[Tuple[Repository, Outcome]] = []
    with Interruption() as interruption:
        pre_problem = run_commands(job.pre, hook_env, "pre", job.secrets())
        for repository in job.repositories:
            if pre_problem or interruption.signal is not None:
                outcome = Outcome(started if pre_problem else utc_now())
                problem = pre_problem or Problem("interrupted before this repository", cause="interrupted")
                outcome.fail(problem)
                outcome.finish(utc_now())
            else:
                outcome = _backup_one(settings, job, repository, features, interruption)
            _journal(job, repository, outcome)
            outcomes.append((repository, outcome))
        status = exit_code(outcome.status for _repository, outcome in outcomes)
        _run_post(job, hook_env, outcomes, status)
    common = {"job": job.name, "cadence_seconds": job.cadence_seconds, "tools": tools(settings)}
    envelopes = record_each_repository(
        recorder, "backup", outcomes, settings=settings, common=common, secrets=job.secrets()
    )
    return status, envelopes


def _journal(job: Job, repository: Repository, outcome: Outcome) -> None:
    """Each problem of a repository's backup, one line on stderr (the journal), secrets masked."""
    secrets = job.secrets()
    for problem in outcome.problems:
        line = "bk: %s %s to %s: %s\n" % (outcome.status, job.name, repository.name, problem.message)
        sys.stderr.write(scrub(line, secrets))


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


# --- check ---------------------------------------------------------------------------------


def check(settings: Settings, job: Job, recorder: Recorder) -> Tuple[int, Envelopes]:
    """``restic check`` of every repository of a job; one manifest per repository."""
    envelopes: Envelopes = []
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
        # Recorded before the next repository's check, which may run for hours or be killed.
        envelopes += record_each_repository(
            recorder, "check", [(repository, outcome)], settings=settings, common=common, secrets=job.secrets()
        )
    return exit_code(statuses), envelopes
