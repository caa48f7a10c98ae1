"""bk-run on every restic in RESTIC_BUILDS (0.14, 0.18, 0.19): where the versions differ (the summary's
figures, exit codes, what a signal or a failing dump does, --skip-if-unchanged), the manifest and the
journal still say the same thing. Each test names what differs in its assertions."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from bk_evidence import manifest
from support.fake_reporter import FakeReporter
from support.runner_hosts import RunnerHost, fake_reporter_fixture
from support.tools import RESTIC_BUILDS, tool

SCHEMA = jsonschema.Draft202012Validator(
    manifest.JSON_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def version_of(restic: str) -> str:
    return subprocess.run([restic, "version"], capture_output=True, text=True, check=True).stdout.split()[1]


def minor(restic: str) -> int:
    return int(version_of(restic).split(".")[1])


@pytest.fixture
def host(tmp_path: Path, restic_build: str, repository_template: Callable[[str], Path]) -> RunnerHost:
    return RunnerHost(tmp_path, repository_template(restic_build), restic_build)


reporter = fake_reporter_fixture("host")


def only_manifest(reporter: FakeReporter) -> dict:
    (doc,) = reporter.manifests()
    assert SCHEMA.is_valid(doc) and manifest.validate(doc) == [], manifest.validate(doc)
    return doc


def test_the_manifest_keeps_every_figure_of_restics_summary(host: RunnerHost, reporter: FakeReporter) -> None:
    result = host.run("backup", "home")
    assert result.returncode == 0, result.stderr
    doc = only_manifest(reporter)
    (summary,) = host.restic_summaries()
    assert doc["schema"] == "bk.manifest/v1.1"
    assert doc["stats"] == {
        name: value for name, value in summary.items() if name not in ("message_type", "snapshot_id")
    }
    newer = {"data_added_packed", "backup_start", "backup_end"}
    # restic 0.14 prints 12 figures and the short id; 0.15+ adds three figures and prints the full id
    if minor(host.restic_binary) >= 15:
        assert newer <= set(doc["stats"]) and summary["snapshot_id"] == doc["snapshot"]["id"]
    else:
        assert not newer & set(doc["stats"]) and summary["snapshot_id"] == doc["snapshot"]["short_id"]
    assert doc["tools"]["restic"] == version_of(host.restic_binary)


def assert_cause(host: RunnerHost, reporter: FakeReporter, result: subprocess.CompletedProcess, cause: str) -> dict:
    """The cause in the manifest, and the same sentence in the journal (bk-run's stderr)."""
    doc = only_manifest(reporter)
    assert doc["error"]["cause"] == cause
    assert result.stderr.count(doc["error"]["message"]) == 1, result.stderr
    return doc


def test_a_wrong_password_is_named(host: RunnerHost, reporter: FakeReporter) -> None:
    host.password_file.write_text("not-the-password-123\n")
    result = host.run("backup", "home")
    assert result.returncode == 1
    doc = assert_cause(host, reporter, result, "wrong_password")
    assert doc["status"] == "failure" and "snapshot" not in doc
    # restic 0.14 exits 1 and says so in words; 0.17+ exits 12
    assert doc["error"]["exit_code"] == (12 if minor(host.restic_binary) >= 17 else 1)
    code = doc["error"]["exit_code"]
    assert doc["error"]["message"] == f"restic backup exited {code}: the repository password is wrong"


def test_a_missing_repository_is_named(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(repositories=[host.repository_entry("missing", host.root / "never-initialised")])
    result = host.run("backup", "home")
    assert result.returncode == 1
    doc = assert_cause(host, reporter, result, "no_repository")
    assert doc["error"]["exit_code"] == (10 if minor(host.restic_binary) >= 17 else 1)
    assert "the repository does not exist (was it initialised?)" in doc["error"]["message"]


def held_exclusive_lock(host: RunnerHost) -> subprocess.Popen:
    """A real `restic check` (which locks the repository exclusively), stopped while it holds the lock."""
    env = dict(os.environ, RESTIC_PASSWORD_FILE=str(host.password_file), RESTIC_CACHE_DIR=str(host.root / "c"))

    def locked() -> bool:  # a finished lock file (restic writes a temporary name, then renames it)
        return any(re.fullmatch("[0-9a-f]{64}", path.name) for path in (host.repository / "locks").iterdir())

    for _attempt in range(10):
        check = subprocess.Popen(
            [host.restic_binary, "-r", str(host.repository), "check"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while check.poll() is None and time.monotonic() < deadline:
            if locked():
                check.send_signal(signal.SIGSTOP)
                if locked():
                    return check
                check.send_signal(signal.SIGCONT)  # stopped just after it unlocked: try again
            time.sleep(0.002)
        check.kill()
        check.wait()
    raise AssertionError("restic check never showed its lock")


def test_a_locked_repository_is_named(host: RunnerHost, reporter: FakeReporter) -> None:
    check = held_exclusive_lock(host)
    try:
        result = host.run("backup", "home")
    finally:
        check.send_signal(signal.SIGCONT)
        check.wait(60)
    assert result.returncode == 1
    doc = assert_cause(host, reporter, result, "lock_failed")
    assert doc["error"]["exit_code"] == (11 if minor(host.restic_binary) >= 17 else 1)
    assert "could not lock the repository" in doc["error"]["message"]


def test_an_unreadable_file_makes_an_incomplete_snapshot(host: RunnerHost, reporter: FakeReporter) -> None:
    secret = host.data / "unreadable"
    secret.write_bytes(b"root only")
    secret.chmod(0)
    # restic as a root without the capabilities that read every file: as any other user would see it
    without_override = host.root / "restic-without-dac-override"
    dropped = "-dac_read_search,-dac_override"
    without_override.write_text(
        f'#!/bin/sh\nexec setpriv --inh-caps={dropped} --bounding-set={dropped} {host.wrapper} "$@"\n'
    )
    without_override.chmod(0o755)
    host.settings(reporter_url=reporter.url, restic=str(without_override))
    result = host.run("backup", "home")
    assert result.returncode == 3, result.stderr
    doc = assert_cause(host, reporter, result, "incomplete_snapshot")
    assert doc["status"] == "warning" and doc["error"]["exit_code"] == 3
    assert doc["error"]["message"] == "restic backup exited 3: incomplete snapshot: some source files could not be read"
    assert doc["snapshot"]["id"] == json.loads(host.restic("snapshots", "--json"))[0]["id"]


def test_sigint_is_named_interrupted_and_the_next_repository_is_not_started(
    host: RunnerHost, reporter: FakeReporter
) -> None:
    (host.data / "large").write_bytes(os.urandom(3_000_000))
    second = host.root / "second-repo"
    host.restic("init", "-q", repository=second)
    repositories = [host.repository_entry("first"), host.repository_entry("second", second)]
    host.job(limit_upload=200, repositories=repositories)  # about 15 s of upload: interrupted long before
    # restic itself: Ctrl-C would end the test's tee wrapper first, and restic with a broken pipe
    host.settings(reporter_url=reporter.url, restic=host.restic_binary)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    runner = subprocess.Popen(
        host.command("backup", "home"), env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while not any((host.repository / "locks").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 1, stderr
    first, skipped = sorted(reporter.manifests(), key=lambda doc: doc["seq"])
    assert first["error"]["cause"] == skipped["error"]["cause"] == "interrupted"
    assert first["error"]["message"] in stderr and "snapshot" not in first
    # restic 0.14 and 0.19 exit 130; 0.18 exits 1 ("context canceled")
    assert first["error"]["exit_code"] == (1 if minor(host.restic_binary) == 18 else 130)
    assert skipped["error"]["message"] == "interrupted before this repository"
    assert json.loads(host.restic("snapshots", "--json")) == []
    assert json.loads(host.restic("snapshots", "--json", repository=second)) == []


def test_a_failing_dump_fails_the_run_and_no_snapshot_is_claimed(host: RunnerHost, reporter: FakeReporter) -> None:
    command = "echo partial; echo broken >&2; exit 4"
    host.job(paths=None, dump={"type": "mysql", "database": "app", "command": command})
    result = host.run("backup", "home")
    assert result.returncode == 1
    doc = only_manifest(reporter)
    assert doc["status"] == "failure" and doc["error"]["cause"] == "dump_failed"
    assert doc["error"]["exit_code"] == 4 and "broken" in doc["error"]["stderr_tail"]
    assert doc["error"]["message"].startswith("dump command exited 4")
    stored = json.loads(host.restic("snapshots", "--json"))
    if minor(host.restic_binary) >= 17:
        # --stdin-from-command: restic sees the dump fail and stores nothing
        assert stored == [] and "snapshot" not in doc
        assert doc["error"]["message"].endswith(
            "restic backup exited 1: the dump command failed, so restic stored no snapshot"
        )
    else:
        # restic 0.14 reads a pipe: it stores what came, and only bk-run knows the dump failed
        assert [snapshot["id"] for snapshot in stored] == [doc["snapshot"]["id"]]
        assert doc["error"]["message"] == "dump command exited 4"


def test_a_dump_is_stored_and_read_back(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(paths=None, dump={"type": "postgresql", "database": "app", "command": ["printf", "dump %s", "bytes"]})
    assert host.run("backup", "home").returncode == 0
    doc = only_manifest(reporter)
    assert doc["status"] == "success" and doc["snapshot"]["paths"] == ["/app.pgdump"]
    assert host.restic("dump", "latest", "/app.pgdump") == "dump bytes"


# Tests run as root (see ENVIRONMENT.md); only this test's own directories are created there.
STABLE_ROOT = Path("/var/lib/bk-tests")


@pytest.fixture
def stable_data(host: RunnerHost) -> Iterator[Path]:
    """A copy of the host's data where nothing else changes between two runs: restic compares the
    whole tree, the directories above the backed-up path included, so it lives under a directory
    of its own near the root (/tmp, or wherever a checkout lies, changes all the time)."""
    STABLE_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=STABLE_ROOT) as directory:
        data = Path(directory) / "data"
        shutil.copytree(host.data, data)
        yield data


def test_skip_if_unchanged_makes_no_snapshot_where_restic_can(
    host: RunnerHost, reporter: FakeReporter, stable_data: Path
) -> None:
    host.job(skip_if_unchanged=True, paths=[str(stable_data)])
    first = host.run("backup", "home")
    second = host.run("backup", "home")
    docs = sorted(reporter.manifests(), key=lambda doc: doc["seq"])
    assert all(manifest.validate(doc) == [] for doc in docs)
    snapshots = json.loads(host.restic("snapshots", "--json"))
    if minor(host.restic_binary) >= 17:
        assert (first.returncode, second.returncode) == (0, 0), second.stderr
        assert [doc["status"] for doc in docs] == ["success", "success"]
        assert len(snapshots) == 1 and "snapshot" not in docs[1]
        assert docs[1]["stats"]["files_unmodified"] == 20 and "restic made no new one" in second.stderr
        # restic 0.18 reports a skipped run's duration as -9223372036.85 s and its end as year 1: left out
        assert docs[1]["stats"].get("total_duration", 0) >= 0
    else:
        assert (first.returncode, second.returncode) == (3, 3)
        assert [doc["error"]["cause"] for doc in docs] == ["option_unsupported"] * 2
        assert "needs restic 0.17 or later (this restic is 0.14.0)" in second.stderr
        assert len(snapshots) == 2


SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID1234",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-from-the-environment-file",
    "RESTIC_PASSWORD": "restic-password-from-the-environment-file",
    "B2_ACCOUNT_KEY": "b2-key-from-the-environment-file",
}


@pytest.mark.parametrize("version", ["0.14", "0.19"], ids=["pipe-0.14", "stdin-from-command-0.19"])
def test_hooks_and_dumps_see_none_of_the_runners_secrets(
    tmp_path: Path, repository_template: Callable[[str], Path], version: str
) -> None:
    """The attack: a hook or dump command (a job file's author, or a compromised dump tool) dumps its
    environment, looking for the repository's secrets the unit's EnvironmentFile= gave bk-run."""
    restic = tool(RESTIC_BUILDS[version])
    host = RunnerHost(tmp_path, repository_template(restic), restic)
    seen = {phase: tmp_path / f"{phase}.env" for phase in ("pre", "post", "dump")}
    host.job(pre=[f"env > {seen['pre']}"], post=[["sh", "-c", f"env > {seen['post']}"]])
    host.job(
        name="db",
        paths=None,
        pre=[f"env > {seen['pre']}"],
        dump={"type": "postgresql", "database": "app", "command": f"env > {seen['dump']}; printf rows"},
    )
    for job in ("home", "db"):
        result = host.run("backup", job, env=SECRETS)
        assert result.returncode == 0, result.stderr
    for phase, path in seen.items():
        environment = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        leaked = [name for name, value in SECRETS.items() if name in environment or value in path.read_text()]
        assert leaked == [], f"{phase} saw {leaked}"
        assert not [name for name in environment if name.startswith("RESTIC_")], phase
        assert environment["BK_JOB"] in ("home", "db") and environment["PATH"]
    assert host.restic("dump", "latest", "/app.pgdump") == "rows"
