"""bk-run against a real restic 0.14 repository, with a loopback reporter up, down, or silent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import jsonschema
import pytest

from bk_evidence import manifest
from support.fake_reporter import FakeReporter
from support.hubs import append_only_hub as hub_server
from support.net import dropping_listener, refusing_port, silent_listener
from support.runner_hosts import PASSWORD, RunnerHost, fake_reporter_fixture
from support.tools import RESTIC

pytestmark = pytest.mark.skipif(not os.path.exists(RESTIC), reason="restic is not installed")


@pytest.fixture
def host(tmp_path: Path, empty_repository: Path) -> RunnerHost:
    return RunnerHost(tmp_path, empty_repository)


reporter = fake_reporter_fixture("host")


SCHEMA = jsonschema.Draft202012Validator(
    manifest.JSON_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def test_backup_manifest_carries_restics_own_figures(host: RunnerHost, reporter: FakeReporter) -> None:
    result = host.run("backup", "home")
    assert result.returncode == 0, result.stderr
    (doc,) = reporter.manifests()
    assert SCHEMA.is_valid(doc) and manifest.validate(doc) == []
    (summary,) = host.restic_summaries()
    assert doc["stats"] == {
        name: value for name, value in summary.items() if name not in ("message_type", "snapshot_id")
    }
    (snapshot,) = json.loads(host.restic("snapshots", "--json"))
    assert doc["snapshot"] == {
        "id": snapshot["id"],
        "short_id": summary["snapshot_id"],
        "paths": [str(host.data)],
        "tags": ["daily"],
        "parent": None,
        "time": snapshot["time"],
    }
    stats = json.loads(host.restic("stats", "--json", "latest"))
    assert doc["stats"]["total_files_processed"] == len(list(host.data.iterdir())) == 20
    assert doc["stats"]["total_bytes_processed"] == stats["total_size"] == sum(2000 + n for n in range(20))
    assert doc["repository"] == {
        "name": "local",
        "url": str(host.repository),
        "id": json.loads(host.restic("cat", "config", "--json"))["id"],
    }
    assert (doc["kind"], doc["status"], doc["job"], doc["seq"], doc["prev"]) == ("backup", "success", "home", 1, None)
    assert doc["cadence_seconds"] == 3600 and doc["host"] == "web1" and snapshot["hostname"] == "web1"
    assert doc["tools"]["restic"] == "0.14.0"
    assert host.outbox() == []


def test_second_backup_chains_and_counts_changes(host: RunnerHost, reporter: FakeReporter) -> None:
    assert host.run("backup", "home").returncode == 0
    (host.data / "file3").write_bytes(b"changed")
    assert host.run("backup", "home").returncode == 0
    first, second = sorted(reporter.manifests(), key=lambda doc: doc["seq"])
    assert second["prev"] == manifest.sha256_hex(reporter.stored[first["id"]])
    assert second["snapshot"]["parent"] == first["snapshot"]["id"]
    assert (second["stats"]["files_changed"], second["stats"]["files_unmodified"]) == (1, 19)
    assert second["stats"] == {
        k: v for k, v in host.restic_summaries()[1].items() if k not in ("message_type", "snapshot_id")
    }


UNREACHABLE: list[Callable[[], AbstractContextManager[str]]] = [refusing_port, silent_listener, dropping_listener]


def test_a_repository_on_a_hub_names_that_hub_in_the_manifest(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(repositories=[dict(host.repository_entry(), hub="nas")])
    assert host.run("backup", "home").returncode == 0
    (doc,) = reporter.manifests()
    assert (doc["repository"]["name"], doc["repository"]["hub"]) == ("local", "nas")


@pytest.mark.parametrize("endpoint", UNREACHABLE, ids=["refused", "silent", "dropping"])
def test_unreachable_reporter_changes_nothing_but_the_spool(host: RunnerHost, endpoint: Callable) -> None:
    with endpoint() as url:
        host.settings(reporter_url=url)
        result = host.run("backup", "home")
    assert result.returncode == 0, result.stderr
    (waiting,) = host.outbox()
    assert waiting["status"] == "success" and waiting["snapshot"]["id"]
    assert "waiting" in result.stderr
    with host.fake_reporter() as server:
        flushed = host.run("flush")
        assert flushed.returncode == 0 and "delivered 1" in flushed.stdout
        assert [doc["id"] for doc in server.manifests()] == [waiting["id"]]
    assert host.outbox() == []


def test_a_reporter_away_at_the_start_is_not_tried_again_after_the_work(host: RunnerHost) -> None:
    """With manifests waiting, bk-run tries the reporter while restic runs; out of reach, it skips the later attempt."""
    with dropping_listener() as url:
        host.settings(reporter_url=url)
        assert host.run("backup", "home").returncode == 0
        result = host.run("backup", "home")
    assert result.returncode == 0, result.stderr
    assert "could not be reached at the start of this run; 2 manifests waiting" in result.stderr
    assert [doc["seq"] for doc in host.outbox()] == [1, 2]


def test_failure_is_the_exit_status_and_is_recorded(host: RunnerHost, reporter: FakeReporter) -> None:
    host.password_file.write_text("not-the-password-123\n")
    result = host.run("backup", "home")
    assert result.returncode == 1
    (doc,) = reporter.manifests()
    assert doc["status"] == "failure" and "snapshot" not in doc
    assert doc["error"]["exit_code"] == 1
    assert "restic backup exited 1" in doc["error"]["message"]
    assert "wrong password" in doc["error"]["stderr_tail"].lower()


def test_unreadable_source_is_a_warning_with_a_snapshot(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(paths=[str(host.data), "/proc/1/mem"])
    result = host.run("backup", "home")
    assert result.returncode == 3
    (doc,) = reporter.manifests()
    assert doc["status"] == "warning" and doc["error"]["exit_code"] == 3
    assert doc["snapshot"]["id"] == json.loads(host.restic("snapshots", "--json"))[0]["id"]


def test_failing_pre_command_skips_the_backup_and_secrets_are_scrubbed(
    host: RunnerHost, reporter: FakeReporter
) -> None:
    host.job(pre=[f"echo leaked: $(cat {host.password_file}) >&2; exit 4"])
    result = host.run("backup", "home")
    assert result.returncode == 1
    (doc,) = reporter.manifests()
    assert doc["status"] == "failure" and doc["error"]["exit_code"] == 4
    assert "pre command" in doc["error"]["message"]
    assert doc["error"]["stderr_tail"] == "leaked: ***"
    assert PASSWORD not in reporter.stored[doc["id"]]
    assert json.loads(host.restic("snapshots", "--json")) == []


def test_post_commands_are_told_the_outcome(host: RunnerHost, reporter: FakeReporter) -> None:
    seen = host.root / "post.env"
    host.job(post=[f"env | grep ^BK_ | sort > {seen}", ["/bin/false"]])
    result = host.run("backup", "home")
    assert result.returncode == 0, "a failing post command never changes the exit status"
    (doc,) = reporter.manifests()
    assert doc["status"] == "warning" and "post command" in doc["error"]["message"]
    variables = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert variables == {
        "BK_EXIT_CODE": "0",
        "BK_JOB": "home",
        "BK_SNAPSHOT_ID": doc["snapshot"]["id"],
        "BK_STATUS": "success",
    }


def test_dump_is_streamed_into_the_snapshot(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(paths=None, dump={"type": "postgresql", "database": "app", "command": ["printf", "dump %s", "bytes"]})
    assert host.run("backup", "home").returncode == 0
    (doc,) = reporter.manifests()
    assert doc["snapshot"]["paths"] == ["/app.pgdump"]
    assert host.restic("dump", "latest", "/app.pgdump") == "dump bytes"


def test_failing_dump_fails_the_run(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(paths=None, dump={"type": "mysql", "database": "app", "command": "echo partial; echo broken >&2; exit 2"})
    assert host.run("backup", "home").returncode == 1
    (doc,) = reporter.manifests()
    assert doc["status"] == "failure" and doc["error"]["exit_code"] == 2
    assert "dump command exited 2" in doc["error"]["message"] and "broken" in doc["error"]["stderr_tail"]


def test_one_manifest_per_repository(host: RunnerHost, reporter: FakeReporter) -> None:
    second = host.root / "second-repo"
    host.restic("init", repository=second)
    host.job(repositories=[host.repository_entry("first"), host.repository_entry("second", second)])
    result = host.run("backup", "home", "--json")
    assert result.returncode == 0
    printed = json.loads(result.stdout)
    assert printed["exit_code"] == 0 and len(printed["envelopes"]) == 2
    docs = sorted(reporter.manifests(), key=lambda doc: doc["seq"])
    assert [(doc["seq"], doc["repository"]["name"]) for doc in docs] == [(1, "first"), (2, "second")]
    assert docs[0]["snapshot"]["id"] != docs[1]["snapshot"]["id"]


def test_check_and_status(host: RunnerHost, reporter: FakeReporter) -> None:
    host.job(check={"read_data_subset": "50%"})
    assert host.run("backup", "home").returncode == 0
    assert host.run("check", "home").returncode == 0
    check_doc = max(reporter.manifests(), key=lambda doc: doc["seq"])
    assert (check_doc["kind"], check_doc["status"], check_doc["check"]) == (
        "check",
        "success",
        {"read_data_subset": "50%"},
    )
    status = json.loads(host.run("status", "--json").stdout)
    assert status["chain"]["seq"] == 2 and status["spool"]["pending"] == 0
    assert status["runs"]["backup/home/local"]["status"] == "success"
    assert status["runs"]["check/home/local"]["seq"] == 2
    text = host.run("status").stdout
    assert "host web1, chain at seq 2" in text and "backup/home/local" in text


def test_configuration_errors_exit_2_without_a_manifest(host: RunnerHost) -> None:
    assert host.run("backup", "nosuchjob").returncode == 2
    host.job(repositories=[])
    result = host.run("backup", "home")
    assert result.returncode == 2 and "at least one repository" in result.stderr
    assert host.outbox() == []


def test_a_broken_state_directory_does_not_stop_the_backup(host: RunnerHost) -> None:
    blocker = host.root / "not-a-directory"
    blocker.write_text("")
    host.settings(state_dir=str(blocker / "state"), spool_dir=str(blocker / "spool"))
    result = host.run("backup", "home")
    assert result.returncode == 0
    assert "could not record a backup manifest" in result.stderr
    assert len(json.loads(host.restic("snapshots", "--json"))) == 1


@pytest.fixture
def append_only_hub(tmp_path: Path) -> Iterator[str]:
    """`rclone serve restic --append-only --private-repos` on loopback; the client's repository URL."""
    if not shutil.which("rclone"):
        pytest.skip("rclone is not installed")
    with hub_server(tmp_path) as url:
        yield url


def test_backup_to_an_append_only_rest_hub_records_no_credentials(host: RunnerHost, append_only_hub: str) -> None:
    location = host.root / "hub.repository"
    location.write_text(append_only_hub + "\n")
    env = dict(os.environ, RESTIC_PASSWORD_FILE=str(host.password_file), RESTIC_REPOSITORY_FILE=str(location))
    subprocess.run([RESTIC, "init", "-q"], env=env, check=True)
    entry = {"name": "hub", "repository_file": str(location), "password_file": str(host.password_file)}
    host.job(repositories=[entry], check={"read_data_subset": "10%"})
    assert host.run("backup", "home").returncode == 0
    assert host.run("check", "home").returncode == 0
    backup, check = host.outbox()
    assert backup["repository"]["url"] == append_only_hub.replace("web1:hub-secret-for-web1@", "")
    assert backup["status"] == "success" and check["status"] == "success" and backup["snapshot"]["id"]
    for path in [*(host.root / "spool").rglob("*"), *(host.root / "state").rglob("*")]:
        if path.is_file():
            assert "hub-secret-for-web1" not in path.read_text(errors="replace"), path


def test_every_repositorys_secrets_are_scrubbed_from_every_manifest(host: RunnerHost, reporter: FakeReporter) -> None:
    other_password = host.root / "other.password"
    other_password.write_text("the other repository's password\n")
    other = dict(host.repository_entry("other"), password_file=str(other_password))
    host.job(repositories=[host.repository_entry("local"), other], pre=[f"cat {other_password} >&2; exit 1"])
    assert host.run("backup", "home").returncode == 1
    docs = reporter.manifests()
    assert len(docs) == 2
    for doc in docs:
        assert doc["error"]["stderr_tail"] == "***"
        assert "other repository" not in reporter.stored[doc["id"]]
