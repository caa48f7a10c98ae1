"""bk-run's fast path: the snapshot section from facts it fixed (--parent, --time) and the full id
(from restic 0.15+'s summary, or restic 0.14's cache), checked against `restic snapshots --json`
of real repositories of every restic in RESTIC_BUILDS."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from support.runner_hosts import RunnerHost
from support.tools import RESTIC


def counting_host(root: Path, template: Path, restic: str) -> RunnerHost:
    host = RunnerHost(root, template, restic)
    calls = root / "restic-calls.log"
    counting = root / "restic-counting"
    counting.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {host.wrapper} "$@"\n')
    counting.chmod(0o755)
    host.settings(reporter_url=None, restic=str(counting))
    return host


@pytest.fixture
def host(tmp_path: Path, restic_build: str, repository_template: Callable[[str], Path]) -> RunnerHost:
    """A host whose bk-run uses each restic in turn, on a repository that restic initialised."""
    return counting_host(tmp_path, repository_template(restic_build), restic_build)


@pytest.fixture
def host_014(tmp_path: Path, empty_repository: Path) -> RunnerHost:
    """A restic 0.14 host: only its summary lacks the full id, so only it reads restic's cache."""
    return counting_host(tmp_path, empty_repository, RESTIC)


def calls(host: RunnerHost) -> list[str]:
    log = host.root / "restic-calls.log"
    commands = log.read_text().split() if log.exists() else []
    log.write_text("")
    return [command for command in commands if command != "version"]


def backup(host: RunnerHost) -> dict:
    result = host.run("backup", "home")
    assert result.returncode == 0, result.stderr
    return host.outbox()[-1]


def assert_as_restic_reports(host: RunnerHost, section: dict) -> None:
    (snapshot,) = json.loads(host.restic("snapshots", "--json", section["id"]))
    for field in ("id", "short_id", "paths"):
        assert section[field] == snapshot[field], field
    assert section["tags"] == snapshot.get("tags", [])
    assert section["parent"] == snapshot.get("parent")
    instant = datetime.datetime.fromisoformat
    assert instant(section["time"].replace("Z", "+00:00")) == instant(snapshot["time"].replace("Z", "+00:00"))


def test_later_backups_know_their_snapshot_without_asking_restic(host: RunnerHost) -> None:
    host.job(paths=[str(host.data / "file3"), str(host.data)], tags=["daily", "home", "daily"])
    first = backup(host)
    assert calls(host) == ["backup", "snapshots", "cat"], "first run: no record yet, read back"
    assert_as_restic_reports(host, first["snapshot"])
    previous = first["snapshot"]["id"]
    for change in range(2):
        (host.data / "file1").write_bytes(b"changed %d" % change)
        doc = backup(host)
        assert calls(host) == ["backup"], "fast path: one restic call"
        assert doc["status"] == "success" and doc["snapshot"]["parent"] == previous
        assert doc["stats"]["files_changed"] == 1
        assert_as_restic_reports(host, doc["snapshot"])
        previous = doc["snapshot"]["id"]
    assert doc["snapshot"]["time"].endswith("Z")


def test_changed_paths_fall_back_to_the_query(host: RunnerHost) -> None:
    backup(host)
    host.job(paths=[str(host.data), str(host.root / "etc")])
    calls(host)
    doc = backup(host)
    assert calls(host) == ["backup", "snapshots"]
    assert_as_restic_reports(host, doc["snapshot"])
    assert doc["snapshot"]["parent"] is None
    assert_as_restic_reports(host, backup(host)["snapshot"])
    assert calls(host) == ["backup"]


def test_a_forgotten_parent_is_retried_without_it(host: RunnerHost) -> None:
    gone = backup(host)["snapshot"]["id"]
    host.restic("forget", gone)
    calls(host)
    result = host.run("backup", "home")
    assert result.returncode == 0, result.stderr
    assert "is gone from the repository" in result.stderr
    doc = host.outbox()[-1]
    assert calls(host) == ["backup", "backup", "snapshots", "cat"], "the repository id is read again too"
    assert doc["status"] == "success" and "error" not in doc
    assert doc["snapshot"]["parent"] is None
    assert_as_restic_reports(host, doc["snapshot"])
    assert len(json.loads(host.restic("snapshots", "--json"))) == 1


def test_a_repository_initialised_anew_in_place_is_described_by_its_new_id(host: RunnerHost) -> None:
    old_id = backup(host)["repository"]["id"]
    shutil.rmtree(host.repository)
    host.restic("init", "-q")
    new_id = json.loads(host.restic("cat", "config", "--json"))["id"]
    assert new_id != old_id
    calls(host)
    doc = backup(host)
    assert calls(host) == ["backup", "backup", "snapshots", "cat"], "parent gone: retried, id read again"
    assert doc["repository"]["id"] == new_id
    assert_as_restic_reports(host, doc["snapshot"])
    assert backup(host)["repository"]["id"] == new_id
    assert calls(host) == ["backup"], "and the fast path again"


DAMAGE = {
    "missing": 'rm "$newest"',
    "twin": 'cp "$newest" "${newest%????????}00000000"',
    "mismatch": 'mv "$newest" "$newest.x"; printf other > "$newest"',
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_doubtful_cache_file_falls_back(host_014: RunnerHost, damage: str) -> None:
    host = host_014
    backup(host)
    damaging = host.root / "restic-damaging"
    damaging.write_text(
        "#!/bin/bash\n"
        f'{host.root / "restic-counting"} "$@"; code=$?\n'
        f"newest=$(ls -t {host.root}/cache/*/snapshots/*/* | head -1)\n"
        f'if [ "$1" = backup ]; then {DAMAGE[damage]}; fi\n'
        f'if [ "$1" = snapshots ] && [ -e "$newest.x" ]; then mv "$newest.x" "$newest"; fi\n'
        'exit "$code"\n'
    )
    damaging.chmod(0o755)
    host.settings(reporter_url=None, restic=str(damaging))
    calls(host)
    doc = backup(host)
    assert calls(host) == ["backup", "snapshots"]
    assert doc["status"] == "success"
    assert_as_restic_reports(host, doc["snapshot"])


def test_dump_jobs_always_read_back(host: RunnerHost) -> None:
    host.job(paths=None, dump={"type": "postgresql", "database": "app", "command": ["printf", "dump"]})
    backup(host)
    backup(host)
    assert calls(host) == ["backup", "snapshots", "cat", "backup", "snapshots"]


def test_a_damaged_parent_never_fails_a_run(host: RunnerHost) -> None:
    """Whether restic reads the parent from its cache (0.18, 0.19 here) or ignores it (0.14), or
    refuses it (0.18+ without a cached copy): the run succeeds and says what restic stored."""
    backup(host)
    parent = host.repository / "snapshots" / backup(host)["snapshot"]["id"]
    parent.chmod(0o600)
    parent.write_bytes(os.urandom(300))
    doc = backup(host)
    assert doc["status"] == "success"
    assert doc["snapshot"]["parent"] in (None, parent.name)
    (host.data / "file1").write_bytes(b"changed")
    assert backup(host)["status"] == "success"
