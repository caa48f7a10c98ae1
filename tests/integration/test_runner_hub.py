"""Hub-side bk-run commands against real restic repositories and a real rclone copy."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from bk_evidence_testing import RESTIC, FakeReporter, Host, public_line

from bk_evidence import files, manifest

pytestmark = pytest.mark.skipif(
    not (os.path.exists(RESTIC) and shutil.which("rclone")), reason="restic and rclone are needed"
)


class HubHost(Host):
    """A hub: repositories of clients under a data directory, as the REST server keeps them."""

    def __init__(self, root: Path, template: Path) -> None:
        super().__init__(root, template)
        self.settings(host="hub")
        self.data_dir = root / "hub-data"
        self.data_dir.mkdir()
        self.web1 = self.data_dir / "web1"
        shutil.copytree(template, self.web1)
        shutil.copytree(template, self.data_dir / "db1")
        (self.config / "hub.json").write_text(json.dumps({"data_dir": str(self.data_dir), "repositories": None}))
        self.lock_dir = root / "locks"
        self.rclone_config = root / "rclone.conf"
        self.rclone_config.write_text("")

    def client_backup(self) -> str:
        """A backup by client web1 into its hub repository; the snapshot id."""
        (self.data / "file0").write_bytes(os.urandom(3000))
        self.restic("backup", "-q", "--host", "web1", str(self.data), repository=self.web1)
        return json.loads(self.restic("snapshots", "--json", "--latest", "1", repository=self.web1))[0]["id"]

    def maintenance(self, retention_floor: dict | None = None, **repository: object) -> None:
        """maintenance.json for web1; retention_floor None: no floor written (bk-run's default floor)."""
        entry = {**self.repository_entry("web1", self.web1), "policy": {"keep_last": 1}, **repository}
        config = {"lock_dir": str(self.lock_dir), "lock_timeout_seconds": 0.5, "repositories": [entry]}
        if retention_floor is not None:
            config["retention_floor"] = retention_floor
        (self.config / "maintenance.json").write_text(json.dumps(config))

    def offsite(self, **changes: object) -> Path:
        target = self.root / "offsite"
        config = {
            "name": "usb",
            "source_dir": str(self.data_dir),
            "remote": str(target),
            "rclone_config": str(self.rclone_config),
            "repositories": ["web1"],
            "lock_dir": str(self.lock_dir),
            "lock_timeout_seconds": 0.5,
            "cadence_seconds": 86400,
        }
        config.update(changes)
        (self.config / "offsite").mkdir(exist_ok=True)
        (self.config / "offsite" / "usb.json").write_text(json.dumps(config))
        return target

    def snapshot_ids(self, repository: Path) -> list[str]:
        return sorted(item["id"] for item in json.loads(self.restic("snapshots", "--json", repository=repository)))


@pytest.fixture
def hub(tmp_path: Path, empty_repository: Path) -> HubHost:
    return HubHost(tmp_path, empty_repository)


@pytest.fixture
def reporter(hub: HubHost) -> Iterator[FakeReporter]:
    with FakeReporter({"hub": [public_line(hub.key)]}) as server:
        hub.settings(host="hub", reporter_url=server.url)
        yield server


def by_seq(reporter: FakeReporter) -> list[dict]:
    return sorted(reporter.manifests(), key=lambda doc: doc["seq"])


def test_receipts_report_each_snapshot_file_once(hub: HubHost, reporter: FakeReporter) -> None:
    first, second = hub.client_backup(), hub.client_backup()
    assert hub.run("receipts").returncode == 0
    (receipt,) = by_seq(reporter)
    assert (receipt["kind"], receipt["status"], receipt["repository"]) == ("hub-receipt", "success", {"name": "web1"})
    listed = {item["id"]: item for item in receipt["receipt"]["snapshots"]}
    assert sorted(listed) == sorted([first, second])
    snapshot_file = hub.web1 / "snapshots" / first
    assert listed[first]["size"] == snapshot_file.stat().st_size
    arrived = manifest.parse_timestamp(listed[first]["arrived_at"])
    assert arrived is not None and abs(arrived.timestamp() - snapshot_file.stat().st_mtime) < 1e-3
    assert hub.run("receipts").returncode == 0
    assert len(reporter.manifests()) == 1, "nothing new arrived: no new receipt"
    third = hub.client_backup()
    assert hub.run("receipts").returncode == 0
    latest = by_seq(reporter)[-1]
    assert [item["id"] for item in latest["receipt"]["snapshots"]] == [third]


def test_maintain_forgets_and_prunes(hub: HubHost, reporter: FakeReporter) -> None:
    ids = [hub.client_backup() for _backup in range(3)]
    hub.maintenance(retention_floor={}, cadence_seconds=604800)
    result = hub.run("maintain")
    assert result.returncode == 0, result.stderr
    forget, prune = by_seq(reporter)
    assert forget["kind"] == "forget" and forget["status"] == "success"
    assert forget["forget"]["policy"] == {"keep_last": 1}
    assert sorted(forget["forget"]["removed"]) == sorted(ids[:2])
    assert forget["forget"]["kept"] == [ids[2]] == hub.snapshot_ids(hub.web1)
    assert forget["repository"]["name"] == "web1" and forget["cadence_seconds"] == 604800
    assert prune["kind"] == "prune" and prune["status"] == "success"
    assert prune["prune"]["max_unused"] == "5%" and prune["prune"]["pruned_blobs"] > 0


def test_maintain_does_not_overlap_an_offsite_copy(hub: HubHost, reporter: FakeReporter) -> None:
    ids = [hub.client_backup() for _backup in range(2)]
    hub.maintenance()
    with files.locked(str(hub.lock_dir / "web1.lock")):
        result = hub.run("maintain")
    assert result.returncode == 1
    (forget,) = by_seq(reporter)
    assert forget["status"] == "failure" and "held by another process" in forget["error"]["message"]
    assert hub.snapshot_ids(hub.web1) == sorted(ids)


def test_maintain_refuses_a_policy_that_keeps_nothing(hub: HubHost) -> None:
    hub.maintenance(policy={"keep_daily": 0})
    result = hub.run("maintain")
    assert result.returncode == 2 and "keeps nothing" in result.stderr


def test_offsite_copy_lists_what_the_destination_holds(hub: HubHost, reporter: FakeReporter) -> None:
    ids = [hub.client_backup() for _backup in range(2)]
    target = hub.offsite()
    result = hub.run("offsite", "usb")
    assert result.returncode == 0, result.stderr
    (copy,) = by_seq(reporter)
    assert copy["kind"] == "offsite-copy" and copy["status"] == "success"
    assert copy["offsite"] == {
        "destination": "usb",
        "remote": str(target / "web1"),
        "mode": "copy",
        "snapshots": sorted(ids),
    }
    assert copy["tools"]["rclone"]
    assert hub.snapshot_ids(target / "web1") == sorted(ids), "restic reads the offsite copy"
    assert not (target / "db1").exists(), "only the configured repositories are copied"
    hub.maintenance()
    assert hub.run("maintain").returncode == 0
    assert hub.run("offsite", "usb").returncode == 0
    latest = by_seq(reporter)[-1]
    assert latest["offsite"]["snapshots"] == sorted(ids), "copy mode never propagates deletions"


def test_offsite_copy_failure_is_recorded(hub: HubHost, reporter: FakeReporter) -> None:
    hub.client_backup()
    blocker = hub.root / "not-a-directory"
    blocker.write_text("x")
    hub.offsite(remote=str(blocker))
    assert hub.run("offsite", "usb").returncode == 1
    (copy,) = by_seq(reporter)
    assert copy["status"] == "failure" and "rclone copy exited" in copy["error"]["message"]
    assert "snapshots" not in copy["offsite"]


def test_mirror_mode_needs_the_delete_guard(hub: HubHost) -> None:
    hub.offsite(mode="mirror")
    result = hub.run("offsite", "usb")
    assert result.returncode == 2 and "delete guard" in result.stderr


def test_runner_commands_share_one_chain(hub: HubHost, reporter: FakeReporter) -> None:
    hub.client_backup()
    hub.maintenance()
    hub.offsite()
    for command in (["receipts"], ["offsite", "usb"], ["maintain"]):
        assert hub.run(*command).returncode == 0
    docs = by_seq(reporter)
    assert [doc["seq"] for doc in docs] == list(range(1, len(docs) + 1))
    for previous, current in itertools.pairwise(docs):
        assert current["prev"] == manifest.sha256_hex(reporter.stored[previous["id"]])


def _backdated_backup(hub: HubHost, days_ago: int) -> str:
    (hub.data / "file0").write_bytes(os.urandom(3000))
    when = (datetime.datetime.now() - datetime.timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M:%S")
    hub.restic("backup", "-q", "--host", "web1", "--time", when, str(hub.data), repository=hub.web1)
    return json.loads(hub.restic("snapshots", "--json", "--latest", "1", repository=hub.web1))[0]["id"]


def test_a_client_policy_of_keep_last_1_cannot_go_below_the_default_retention_floor(
    hub: HubHost, reporter: FakeReporter
) -> None:
    """A client whose host variables say keep_last 1 (what forged facts once achieved) over five
    snapshots: a maintenance.json without a floor still keeps the last 3 and the last 7 days."""
    ids = [_backdated_backup(hub, days_ago) for days_ago in (40, 30, 20, 10, 1)]
    hub.maintenance(policy={"keep_last": 1})
    result = hub.run("maintain")
    assert result.returncode == 0, result.stderr
    forget = by_seq(reporter)[0]
    assert forget["forget"]["policy"] == {"keep_last": 3, "keep_within": "7d"}
    assert sorted(forget["forget"]["removed"]) == sorted(ids[:2])
    assert hub.snapshot_ids(hub.web1) == sorted(ids[2:])


def test_a_client_policy_gets_the_longer_keep_within_of_the_floor(hub: HubHost, reporter: FakeReporter) -> None:
    ids = [_backdated_backup(hub, days_ago) for days_ago in (40, 30, 20, 10, 1)]
    hub.maintenance(retention_floor={"keep_within": "25d"}, policy={"keep_last": 1, "keep_within": "2d"})
    assert hub.run("maintain").returncode == 0
    assert by_seq(reporter)[0]["forget"]["policy"] == {"keep_last": 1, "keep_within": "25d"}
    assert hub.snapshot_ids(hub.web1) == sorted(ids[2:])


def test_maintain_refuses_a_keep_within_that_is_not_a_restic_duration(hub: HubHost) -> None:
    hub.maintenance(retention_floor={"keep_within": "a week"})
    result = hub.run("maintain")
    assert result.returncode != 0
    assert "keep_within 'a week' is not a restic duration" in result.stderr
