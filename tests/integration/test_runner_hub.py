"""Hub-side bk-run commands against real restic repositories, a real rclone copy, and the hub's two
REST servers (restic's rest-server and `rclone serve restic`) on loopback, attacked as a client would."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bk_evidence import files, manifest
from bk_run import receipts as hub_receipts
from support.fake_reporter import FakeReporter
from support.hubs import HUB_SERVERS, rest_hub, write_htpasswd
from support.runner_hosts import RunnerHost, fake_reporter_fixture
from support.tools import RESTIC

pytestmark = pytest.mark.skipif(
    not (os.path.exists(RESTIC) and shutil.which("rclone")), reason="restic and rclone are needed"
)


class HubHost(RunnerHost):
    """A hub: repositories of clients under a data directory, as the REST server keeps them."""

    name = "hub"

    def __init__(self, root: Path, template: Path) -> None:
        super().__init__(root, template)
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


reporter = fake_reporter_fixture("hub")


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


# --- through the hub's REST servers ---------------------------------------------------------

CREDENTIALS = {"web1": "hub-secret-for-web1", "db1": "hub-secret-for-db1"}
MAINTENANCE = ("bk-maintenance", "maintenance-secret-9Xq2")
METRICS = ("metrics", "metrics-secret-4Lw7")


@dataclass
class ServedHub:
    """The hub's two instances over its data directory, as roles/hub runs them."""

    server: str
    clients_url: str  # append-only, private repositories, the clients' credentials
    maintenance_url: str  # not append-only, the maintenance identity only

    def repository(self, user: str) -> str:
        return self.clients_url.replace("http://", f"rest:http://{user}:{CREDENTIALS[user]}@", 1) + f"/{user}/"


@contextlib.contextmanager
def served(hub: HubHost, server: str, *extra: str) -> Iterator[ServedHub]:
    users = dict(CREDENTIALS)
    if server == "rest-server":
        users[METRICS[0]] = METRICS[1]
    clients = write_htpasswd(hub.root / "htpasswd", users)
    maintenance = write_htpasswd(hub.root / "htpasswd-maintenance", dict([MAINTENANCE]))
    with (
        rest_hub(server, hub.data_dir, clients, extra=extra) as clients_url,
        rest_hub(server, hub.data_dir, maintenance, append_only=False) as maintenance_url,
    ):
        yield ServedHub(server, clients_url, maintenance_url)


@pytest.fixture(params=HUB_SERVERS)
def served_hub(request: pytest.FixtureRequest, hub: HubHost) -> Iterator[ServedHub]:
    with served(hub, request.param) as running:
        yield running


def client_restic(hub: HubHost, repository: str, *args: str, restic: str = RESTIC) -> subprocess.CompletedProcess:
    """restic as a client host runs it against its hub repository."""
    env = dict(os.environ, RESTIC_PASSWORD_FILE=str(hub.password_file), RESTIC_CACHE_DIR=str(hub.root / "client-cache"))
    return subprocess.run(
        [restic, "-r", repository, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def client_backup_through(hub: HubHost, repository: str, restic: str = RESTIC) -> str:
    (hub.data / "file0").write_bytes(os.urandom(3000))
    backup = client_restic(hub, repository, "backup", "-q", "--host", "web1", str(hub.data), restic=restic)
    assert backup.returncode == 0, backup.stderr
    listed = client_restic(hub, repository, "snapshots", "--json", "--latest", "1", restic=restic)
    return json.loads(listed.stdout)[0]["id"]


def repository_files(repository: Path) -> dict[str, bytes]:
    """Every file of a repository but its locks (which clients may remove), by relative path."""
    return {
        str(path.relative_to(repository)): path.read_bytes()
        for path in sorted(repository.rglob("*"))
        if path.is_file() and path.parent.name != "locks"
    }


def test_snapshot_sent_through_the_hub_gets_a_receipt_with_the_hub_free_space(
    hub: HubHost, reporter: FakeReporter, served_hub: ServedHub, restic_build: str
) -> None:
    snapshot = client_backup_through(hub, served_hub.repository("web1"), restic=restic_build)
    assert hub.run("receipts").returncode == 0
    (receipt,) = by_seq(reporter)
    assert receipt["status"] == "success" and receipt["receipt"]["verified"] == "sha256"
    assert [item["id"] for item in receipt["receipt"]["snapshots"]] == [snapshot]
    stored = (hub.web1 / "snapshots" / snapshot).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == snapshot
    figures = os.statvfs(hub.data_dir)
    disk = receipt["receipt"]["disk"]
    assert disk["total_bytes"] == figures.f_blocks * figures.f_frsize
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]
    assert "mismatched" not in receipt["receipt"]


def test_a_client_cannot_delete_or_overwrite_its_history_on_the_hub(hub: HubHost, served_hub: ServedHub) -> None:
    snapshot = client_backup_through(hub, served_hub.repository("web1"))
    before = repository_files(hub.web1)
    pack = next(name for name in before if name.startswith("data/"))
    auth = ("web1", CREDENTIALS["web1"])
    with httpx.Client(base_url=served_hub.clients_url, auth=auth, timeout=30) as http:
        answers = {
            "delete snapshot": http.delete(f"/web1/snapshots/{snapshot}").status_code,
            "delete pack": http.delete(f"/web1/data/{Path(pack).name}").status_code,
            "delete key": http.delete(f"/web1/{next(n for n in before if n.startswith('keys/'))}").status_code,
            "overwrite config": http.post("/web1/config", content=b"garbage").status_code,
            "overwrite snapshot": http.post(f"/web1/snapshots/{snapshot}", content=b"garbage").status_code,
        }
    assert answers == dict.fromkeys(answers, 403), answers
    assert repository_files(hub.web1) == before, "nothing the client may not change has changed"
    listed = client_restic(hub, served_hub.repository("web1"), "snapshots", "--json")
    assert [item["id"] for item in json.loads(listed.stdout)] == [snapshot]


def test_a_client_cannot_read_or_write_another_clients_repository(hub: HubHost, served_hub: ServedHub) -> None:
    before = repository_files(hub.data_dir / "db1")
    config_id = hashlib.sha256(b"planted").hexdigest()
    answers = {}
    for who, auth in {
        "web1's credential": ("web1", CREDENTIALS["web1"]),
        "a wrong password": ("db1", "not-the-password"),
        "no credential": None,
    }.items():
        with httpx.Client(base_url=served_hub.clients_url, auth=auth, timeout=30) as http:
            answers[who] = {
                http.get("/db1/config").status_code,
                http.get("/db1/snapshots/").status_code,
                http.post(f"/db1/keys/{config_id}", content=b"planted").status_code,
            }
    # Another client's repository: rclone answers 403, rest-server 401 (both refuse).
    foreign_answer = {"rest-server": 401, "rclone": 403}[served_hub.server]
    assert answers == {"web1's credential": {foreign_answer}, "a wrong password": {401}, "no credential": {401}}
    foreign = served_hub.repository("web1").replace("/web1/", "/db1/")
    assert client_restic(hub, foreign, "snapshots").returncode != 0
    assert repository_files(hub.data_dir / "db1") == before


def test_rest_server_refuses_a_garbage_snapshot_and_no_receipt_confirms_it(
    hub: HubHost, reporter: FakeReporter
) -> None:
    claimed = hashlib.sha256(b"a snapshot that was never made").hexdigest()
    with served(hub, "rest-server") as running:
        real = client_backup_through(hub, running.repository("web1"))
        with httpx.Client(base_url=running.clients_url, auth=("web1", CREDENTIALS["web1"]), timeout=30) as http:
            answer = http.post(f"/web1/snapshots/{claimed}", content=b"garbage")
    assert answer.status_code == 400, (answer.status_code, answer.text)
    assert not (hub.web1 / "snapshots" / claimed).exists()
    assert hub.run("receipts").returncode == 0
    (receipt,) = by_seq(reporter)
    assert [item["id"] for item in receipt["receipt"]["snapshots"]] == [real]


def test_garbage_rclone_accepts_is_never_confirmed_by_a_receipt(hub: HubHost, reporter: FakeReporter) -> None:
    claimed = hashlib.sha256(b"a snapshot that was never made").hexdigest()
    with served(hub, "rclone") as running:
        real = client_backup_through(hub, running.repository("web1"))
        with httpx.Client(base_url=running.clients_url, auth=("web1", CREDENTIALS["web1"]), timeout=30) as http:
            answer = http.post(f"/web1/snapshots/{claimed}", content=b"garbage")
    assert answer.status_code == 200, "rclone serve restic does not verify uploads"
    planted = hub.web1 / "snapshots" / claimed
    assert planted.read_bytes() == b"garbage"
    assert hub.run("receipts").returncode == 0
    (first,) = by_seq(reporter)
    assert [item["id"] for item in first["receipt"]["snapshots"]] == [real]
    assert "mismatched" not in first["receipt"], "a file this young may still be arriving"
    old = time.time() - hub_receipts.MISMATCH_GRACE_SECONDS - 60
    os.utime(planted, (old, old))
    assert hub.run("receipts").returncode == 0
    second = by_seq(reporter)[-1]
    assert second["status"] == "warning" and second["receipt"]["snapshots"] == []
    assert [item["id"] for item in second["receipt"]["mismatched"]] == [claimed]
    assert "not confirmed" in second["error"]["message"]
    assert hub.run("receipts").returncode == 0
    assert len(reporter.manifests()) == 2, "a mismatched file is reported once"


def test_maintenance_instance_applies_retention_that_clients_cannot(
    hub: HubHost, reporter: FakeReporter, served_hub: ServedHub
) -> None:
    ids = [client_backup_through(hub, served_hub.repository("web1")) for _backup in range(3)]
    user, password = MAINTENANCE
    through = served_hub.maintenance_url.replace("http://", f"rest:http://{user}:{password}@", 1) + "/web1/"
    location = hub.root / "maintenance-web1.repository"
    location.write_text(through + "\n")
    hub.maintenance(repository_file=str(location), retention_floor={})  # keep_last 1: under the default floor
    result = hub.run("maintain")
    assert result.returncode == 0, result.stderr
    forget, prune = by_seq(reporter)
    assert forget["status"] == "success" and sorted(forget["forget"]["removed"]) == sorted(ids[:2])
    assert prune["status"] == "success" and prune["prune"]["pruned_blobs"] > 0
    assert hub.snapshot_ids(hub.web1) == [ids[2]]
    with httpx.Client(base_url=served_hub.clients_url, auth=MAINTENANCE, timeout=30) as http:
        assert http.get("/web1/config").status_code == 401, "the maintenance identity is unknown to clients' server"


def test_rest_server_metrics_answer_only_the_metrics_user(hub: HubHost) -> None:
    with served(hub, "rest-server", "--prometheus") as running:
        client_backup_through(hub, running.repository("web1"))
        answers = {}
        for who, auth in {"none": None, "web1": ("web1", CREDENTIALS["web1"]), "metrics": METRICS}.items():
            with httpx.Client(base_url=running.clients_url, auth=auth, timeout=30) as http:
                response = http.get("/metrics")
                answers[who] = response.status_code
                if who == "metrics":
                    text = response.text
    assert answers == {"none": 401, "web1": 401, "metrics": 200}, answers
    assert 'rest_server_blob_write_total{repo="web1"' in text


def test_rest_server_max_size_refuses_uploads_beyond_the_limit(hub: HubHost) -> None:
    # rest-server counts what the data directory holds when it starts (blocks in use, at least).
    used = sum(path.stat().st_blocks * 512 for path in hub.data_dir.rglob("*") if path.is_file())
    with served(hub, "rest-server", "--max-size", str(used + 2_000_000)) as running:
        (hub.data / "large").write_bytes(os.urandom(6_000_000))
        backup = client_restic(hub, running.repository("web1"), "backup", "-q", "--host", "web1", str(hub.data))
    assert backup.returncode != 0
    assert "507 Insufficient Storage" in backup.stderr, backup.stderr[-600:]
    assert not any((hub.web1 / "snapshots").iterdir()), "no snapshot beyond the limit"


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
