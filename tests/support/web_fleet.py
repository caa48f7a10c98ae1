"""A realistic fleet for the web UI and Grafana tests, stored through the reporter's real ingest path.

Three months of a homelab fleet: 29 clients backing up daily to the hub (one also every six
hours, one to a local repository), weekly restore drills and checks on some of them; a hub that
signs a receipt for every snapshot that arrives, copies each repository offsite every night and
forgets and prunes weekly; an Ansible controller recording its weekly site.yml runs; and two
enrolled hosts that never reported. Every manifest is chained (seq, prev) and signed by its
machine's own OpenSSH key (made by ssh-keygen, signed with bk_evidence.sshsig), then delivered
in batches through `bk_reporter.ingest_spine.Ingest` (on a pool of its own), the code behind POST
/api/v1/manifests/batch: verification, validation, storage and derived state are the reporter's own.

Every state is present on a known host (`SCENARIOS`), and `FleetFacts` says what the pages
must therefore show.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bk_evidence import manifest as bk_manifest
from bk_evidence import sshsig
from bk_reporter import hosts
from bk_reporter.ingest import Limits
from bk_reporter.ingest_spine import Ingest
from bk_reporter.pgcluster import LocalCluster
from support.keys import make_key, public_line
from support.reporters import ReporterDatabase, migrated

DAY = 86400
WEEK = 7 * DAY
HISTORY = timedelta(days=92)
HUB = "hub-01"
CONTROLLER = "ctl-01"
OFFSITE = "b2-eu"
OFFSITE_KEEPS = timedelta(days=14)
BATCH = 400
TOOLS = {"restic": "0.14.0", "bk": "0.1.0", "python": "3.11.2"}
LIMITS = Limits(max_manifest_bytes=256 * 1024, future_tolerance=timedelta(seconds=300))
MARKUP_IN_ERROR = "<script>alert('x')</script>"


@dataclass(frozen=True)
class Scenarios:
    """Which host shows which state (states are per host and job, worst first)."""

    late: str = "web-04"  # last backup 33 h ago, daily cadence: late after 30 h, stale only after 48 h
    stale: str = "db-02"  # went silent 5 days ago
    failing: str = "mail-01"  # the latest backup failed 2 h ago; the one before succeeded
    unconfirmed: str = "app-03"  # the latest snapshot (5 h ago) has no hub receipt
    gap: str = "web-07"  # three manifests withheld 40 days ago
    fork: str = "files-02"  # one manifest names a predecessor that is not the stored one
    failed_drill: str = "db-01"  # its latest restore drill found mismatches
    local_repository: str = "pi-01"  # backs up to a local repository: no hub, no receipts
    missing: tuple[str, ...] = ("nas-02", "dev-04")  # enrolled, never reported


SCENARIOS = Scenarios()


@dataclass(frozen=True)
class JobSpec:
    name: str
    cadence: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class ClientSpec:
    name: str
    size_gib: float
    base_duration: float
    jobs: tuple[JobSpec, ...] = (JobSpec("system", DAY, ("/etc", "/home", "/var/lib")),)
    drills: bool = False
    checks: bool = False
    key_type: str = "ed25519"


def _clients() -> tuple[ClientSpec, ...]:
    clients = [ClientSpec(f"web-{n:02d}", 8 + n, 90 + 10 * n, drills=n in (1, 4), checks=n <= 2) for n in range(1, 9)]
    clients += [
        ClientSpec(
            "db-01",
            60,
            600,
            (JobSpec("system", DAY, ("/etc",)), JobSpec("postgres", 6 * 3600, ("/var/backups/pg",))),
            drills=True,
            checks=True,
            key_type="ecdsa",
        ),
        ClientSpec("db-02", 45, 480, drills=True, key_type="ecdsa"),
        ClientSpec("db-03", 30, 420, checks=True),
    ]
    clients += [ClientSpec(f"app-{n:02d}", 12, 150 + 20 * n, drills=n == 1) for n in range(1, 7)]
    clients += [ClientSpec(f"mail-{n:02d}", 25, 300) for n in (1, 2)]
    clients += [ClientSpec(f"files-{n:02d}", 200 + 50 * n, 1200 + 200 * n, checks=True) for n in (1, 2, 3)]
    clients += [ClientSpec(f"pi-{n:02d}", 2, 60) for n in (1, 2, 3)]
    clients += [ClientSpec(f"dev-{n:02d}", 15, 200, (JobSpec("home", DAY, ("/home",)),)) for n in (1, 2, 3)]
    clients.append(ClientSpec("nas-01", 400, 2400, drills=True, checks=True))
    return tuple(clients)


CLIENTS = _clients()


@dataclass
class Activity:
    """One manifest to be: a machine, when it finished, and its fields (not yet chained)."""

    machine: str
    finished_at: datetime
    fields: dict[str, Any]
    withheld: bool = False
    forged_prev: bool = False
    tag: str = ""  # what FleetFacts notes about it: "failing", "failed_drill"
    manifest_id: str = ""


@dataclass
class FleetFacts:
    """What the stored fleet implies, for the tests to find on the pages."""

    now: datetime
    scenarios: Scenarios
    clients: tuple[str, ...]
    machines: tuple[str, ...]
    fingerprints: dict[str, str] = field(default_factory=dict)
    stale_last_success: datetime | None = None
    late_last_run: datetime | None = None
    gap_seqs: tuple[int, int] = (0, 0)
    fork_seq: int = 0
    failing_event_id: str = ""
    unconfirmed_snapshot: str = ""
    failed_drill_event_id: str = ""
    failed_drill_mismatches: int = 0
    stored: int = 0
    withheld: int = 0


def _rfc3339(moment: datetime) -> str:
    return bk_manifest.rfc3339(moment.astimezone(UTC))


def _hex(rng: random.Random, bits: int = 256) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


class FleetPlan:
    """Builds every machine's activities over the history window, deterministically from a seed."""

    def __init__(self, now: datetime, seed: int = 20261123) -> None:
        self.now = now
        self.start = now - HISTORY
        self.rng = random.Random(seed)
        self.activities: list[Activity] = []
        self.arrivals: dict[str, list[tuple[datetime, str]]] = {}
        self.facts = FleetFacts(
            now=now,
            scenarios=SCENARIOS,
            clients=tuple(c.name for c in CLIENTS),
            machines=(*(c.name for c in CLIENTS), HUB, CONTROLLER),
        )

    def build(self) -> list[Activity]:
        for client in CLIENTS:
            self._client(client)
        for repository in sorted(self.arrivals):
            self._offsite_copies(repository)
            self._maintenance(repository)
        self._ansible_runs()
        self._withhold_and_forge()
        return self.activities

    def _add(self, machine: str, moment: datetime, /, tag: str = "", **fields: Any) -> Activity | None:
        """A new activity finishing at `moment`, unless that is in the future (then None)."""
        if moment > self.now - timedelta(minutes=1):
            return None
        activity = Activity(machine, moment, fields, tag=tag)
        self.activities.append(activity)
        return activity

    # -- clients ---------------------------------------------------------------------------

    def _last_run(self, client: ClientSpec) -> datetime:
        offsets = {
            SCENARIOS.late: timedelta(hours=33),
            SCENARIOS.stale: timedelta(days=5, hours=2),
            SCENARIOS.failing: timedelta(hours=2),
            SCENARIOS.unconfirmed: timedelta(hours=5),
        }
        shortest = min(job.cadence for job in client.jobs)
        usual = timedelta(seconds=self.rng.randint(2400, int(shortest * 0.8)))
        return self.now - offsets.get(client.name, usual)

    def _client(self, client: ClientSpec) -> None:
        last = self._last_run(client)
        for job in client.jobs:
            runs = self._schedule(last, job.cadence)
            for index, finished in enumerate(runs):
                self._backup(client, job, finished, runs_left=len(runs) - 1 - index)
        if client.drills:
            self._weekly(client, last, "drill")
        if client.checks:
            self._weekly(client, last, "check")

    def _schedule(self, last: datetime, cadence: int) -> list[datetime]:
        times = []
        moment = last
        while moment > self.start:
            times.append(moment + timedelta(seconds=self.rng.randint(-240, 240)))
            moment -= timedelta(seconds=cadence)
        times.reverse()
        times[-1] = last
        return times

    def _status(self, runs_left: int) -> str:
        if runs_left < 3:
            return "success"
        roll = self.rng.random()
        return "failure" if roll < 0.015 else "warning" if roll < 0.04 else "success"

    def _duration(self, client: ClientSpec, finished: datetime) -> float:
        growth = 1 + 0.004 * (finished - self.start).days
        spike = 2.5 if self.rng.random() < 0.03 else 1.0
        return client.base_duration * growth * spike * self.rng.uniform(0.8, 1.25)

    def _backup(self, client: ClientSpec, job: JobSpec, finished: datetime, runs_left: int) -> None:
        status = self._status(runs_left)
        if client.name == SCENARIOS.failing and runs_left == 0:
            status = "failure"
        started = finished - timedelta(seconds=self._duration(client, finished))
        local = client.name == SCENARIOS.local_repository
        url = f"/srv/restic/{client.name}" if local else f"rest:https://{HUB}.example:8000/{client.name}/"
        fields: dict[str, Any] = {
            "kind": "backup",
            "status": status,
            "started_at": _rfc3339(started),
            "finished_at": _rfc3339(finished),
            "job": job.name,
            "cadence_seconds": job.cadence,
            "repository": {"name": "local" if local else "hub", "url": url},
            "tools": TOOLS,
        }
        if status == "failure":
            fields["error"] = self._error(client, runs_left)
            failing = client.name == SCENARIOS.failing and runs_left == 0
            self._add(client.name, finished, tag="failing" if failing else "", **fields)
            return
        snapshot = _hex(self.rng)
        fields["snapshot"] = {
            "id": snapshot,
            "short_id": snapshot[:8],
            "paths": list(job.paths),
            "time": _rfc3339(started),
        }
        fields["stats"] = self._stats(client, job)
        self._add(client.name, finished, **fields)
        self._track_snapshot(client, job, finished, snapshot, runs_left, local)

    def _error(self, client: ClientSpec, runs_left: int) -> dict[str, Any]:
        if client.name == SCENARIOS.failing and runs_left == 0:
            message = f"restic backup exited 1: Fatal: unable to open config file {MARKUP_IN_ERROR}"
            return {
                "exit_code": 1,
                "message": message,
                "stderr_tail": "Fatal: unable to open config file: 502 Bad Gateway",
            }
        return {"exit_code": 3, "message": "restic backup exited 3: some source files could not be read"}

    def _stats(self, client: ClientSpec, job: JobSpec) -> dict[str, int]:
        scale = client.size_gib / 10 * (DAY / job.cadence) ** -0.5
        data_added = int(self.rng.lognormvariate(17.2, 0.9) * scale)
        files_changed = int(self.rng.lognormvariate(4.5, 0.8) * scale) + 1
        total_files = int(client.size_gib * 4000)
        return {
            "files_new": int(files_changed * self.rng.uniform(0.1, 0.6)),
            "files_changed": files_changed,
            "files_unmodified": max(total_files - files_changed, 0),
            "data_added": data_added,
            "total_files_processed": total_files,
            "total_bytes_processed": int(client.size_gib * 2**30),
        }

    def _track_snapshot(
        self, client: ClientSpec, job: JobSpec, finished: datetime, snapshot: str, runs_left: int, local: bool
    ) -> None:
        if local:
            return
        if client.name == SCENARIOS.unconfirmed and runs_left == 0 and job is client.jobs[0]:
            self.facts.unconfirmed_snapshot = snapshot
            return
        arrived = finished + timedelta(seconds=self.rng.randint(20, 90))
        receipt_at = arrived + timedelta(minutes=self.rng.randint(3, 14))
        receipt = self._add(
            HUB,
            receipt_at,
            kind="hub-receipt",
            status="success",
            started_at=_rfc3339(receipt_at - timedelta(seconds=2)),
            finished_at=_rfc3339(receipt_at),
            repository={"name": client.name},
            receipt={
                "snapshots": [{"id": snapshot, "size": self.rng.randint(300, 900), "arrived_at": _rfc3339(arrived)}]
            },
            tools=TOOLS,
        )
        if receipt is not None:
            self.arrivals.setdefault(client.name, []).append((arrived, snapshot))

    def _weekly(self, client: ClientSpec, last: datetime, kind: str) -> None:
        job = client.jobs[0]
        runs = [moment + timedelta(hours=3) for moment in self._schedule(last - timedelta(days=1), WEEK)]
        for index, finished in enumerate(runs):
            failed = kind == "drill" and client.name == SCENARIOS.failed_drill and index == len(runs) - 1
            duration = timedelta(seconds=client.base_duration * (3 if kind == "check" else 0.6))
            fields: dict[str, Any] = {
                "kind": kind,
                "status": "failure" if failed else "success",
                "started_at": _rfc3339(finished - duration),
                "finished_at": _rfc3339(finished),
                "job": job.name,
                "cadence_seconds": WEEK,
                "repository": {"name": "hub", "url": f"rest:https://{HUB}.example:8000/{client.name}/"},
                "tools": TOOLS,
            }
            if kind == "check":
                fields["check"] = {"read_data_subset": "5%"}
            else:
                fields["restore"] = self._drill_result(client, failed)
                if failed:
                    fields["error"] = {
                        "exit_code": 1,
                        "message": "restore drill: 3 restored files differ from the source",
                    }
            self._add(client.name, finished, tag="failed_drill" if failed else "", **fields)

    def _drill_result(self, client: ClientSpec, failed: bool) -> dict[str, Any]:
        result: dict[str, Any] = {
            "snapshot": _hex(self.rng, 32),
            "paths": ["/etc"],
            "target": "/var/tmp/bk-drill",
            "files_checked": int(client.size_gib * 40) + self.rng.randint(0, 50),
            "mismatches": 3 if failed else 0,
        }
        if failed:
            result["mismatched_paths"] = ["/etc/postgresql/15/main/pg_hba.conf", "/etc/fstab", "/etc/hosts"]
            self.facts.failed_drill_mismatches = 3
        return result

    # -- the hub ---------------------------------------------------------------------------

    def _offsite_copies(self, repository: str) -> None:
        arrivals = sorted(self.arrivals[repository])
        night = (self.start + timedelta(days=1)).replace(hour=3, minute=30, second=0, microsecond=0)
        while night < self.now:
            finished = night + timedelta(seconds=self.rng.randint(20, 400))
            present = [sid for arrived, sid in arrivals if night - OFFSITE_KEEPS < arrived < night]
            if present:
                self._add(
                    HUB,
                    finished,
                    kind="offsite-copy",
                    status="success",
                    started_at=_rfc3339(night),
                    finished_at=_rfc3339(finished),
                    cadence_seconds=DAY,
                    repository={"name": repository},
                    offsite={
                        "destination": OFFSITE,
                        "remote": f"b2:bk-fleet/{repository}",
                        "mode": "copy",
                        "snapshots": present,
                    },
                    tools={"rclone": "1.60.1", "bk": "0.1.0"},
                )
            night += timedelta(days=1)

    def _maintenance(self, repository: str) -> None:
        client = next(c for c in CLIENTS if c.name == repository)
        sunday = (self.start + timedelta(days=7 - self.start.weekday())).replace(
            hour=4, minute=0, second=0, microsecond=0
        )
        repository_section = {"name": repository, "url": f"/srv/bk-hub/{repository}"}
        while sunday < self.now:
            growth = 1 + (sunday - self.start).days / 365
            forget_done = sunday + timedelta(seconds=self.rng.randint(5, 40))
            prune_done = forget_done + timedelta(seconds=self.rng.randint(60, 600))
            common = {"cadence_seconds": WEEK, "repository": repository_section, "tools": TOOLS, "status": "success"}
            policy = {"keep_daily": 7, "keep_weekly": 5, "keep_monthly": 12}
            forget = {"policy": policy, "group_by": "host,paths"}
            self._add(HUB, forget_done, kind="forget", **common, forget=forget, **self._span(sunday, forget_done))
            prune = {
                "max_unused": "5%",
                "pruned_blobs": self.rng.randint(10, 900),
                "pruned_size": f"{self.rng.uniform(1, 900):.3f} MiB",
                "remaining_blobs": int(client.size_gib * 3000 * growth),
                "remaining_size": f"{client.size_gib * 0.7 * growth:.3f} GiB",
            }
            self._add(HUB, prune_done, kind="prune", **common, prune=prune, **self._span(forget_done, prune_done))
            sunday += timedelta(days=7)

    @staticmethod
    def _span(started: datetime, finished: datetime) -> dict[str, str]:
        return {"started_at": _rfc3339(started), "finished_at": _rfc3339(finished)}

    def _ansible_runs(self) -> None:
        moment = self.start + timedelta(days=2, hours=9)
        while moment < self.now:
            duration = timedelta(seconds=self.rng.randint(200, 600))
            counts = {"ok": 900 + self.rng.randint(0, 80), "changed": self.rng.randint(0, 12), "failed": 0}
            self._add(
                CONTROLLER,
                moment + duration,
                kind="ansible-run",
                status="success",
                started_at=_rfc3339(moment),
                finished_at=_rfc3339(moment + duration),
                ansible_run={"playbook": "playbooks/site.yml", "hosts": list(self.facts.clients), "counts": counts},
            )
            moment += timedelta(days=7)

    # -- tampering -------------------------------------------------------------------------

    def _withhold_and_forge(self) -> None:
        gap = sorted((a for a in self.activities if a.machine == SCENARIOS.gap), key=lambda a: a.finished_at)
        middle = next(i for i, a in enumerate(gap) if a.finished_at > self.now - timedelta(days=40))
        for activity in gap[middle : middle + 3]:
            activity.withheld = True
        fork = sorted((a for a in self.activities if a.machine == SCENARIOS.fork), key=lambda a: a.finished_at)
        next(a for a in fork if a.finished_at > self.now - timedelta(days=20)).forged_prev = True


@dataclass
class Machine:
    """A signing machine: its key and the head of its chain."""

    name: str
    key: Path
    seq: int = 0
    prev: str | None = None

    def chain(self, activity: Activity, rng: random.Random) -> str:
        doc = dict(activity.fields)
        activity.manifest_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        prev = self.prev
        if activity.forged_prev:
            prev = bk_manifest.sha256_hex(f"a rewritten predecessor of seq {self.seq + 1}")
        doc.update(schema=bk_manifest.SCHEMA, id=activity.manifest_id, host=self.name, seq=self.seq + 1, prev=prev)
        text = bk_manifest.dumps(doc)
        self.seq += 1
        self.prev = bk_manifest.sha256_hex(text)
        return text

    def sign(self, text: str) -> dict[str, str]:
        return bk_manifest.envelope(text, sshsig.sign(text.encode("utf-8"), str(self.key)))


def _enroll(owner_url: str, machines: dict[str, Machine], missing: dict[str, Path]) -> dict[str, str]:
    keys = [hosts.host_key(m.name, public_line(m.key)) for m in machines.values()]
    keys += [hosts.host_key(name, public_line(path)) for name, path in missing.items()]
    with psycopg.connect(owner_url, autocommit=True) as conn:
        hosts.enroll(conn, keys)
    return {key.host: key.fingerprint for key in keys}


def _batches(items: list[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    for first in range(0, len(items), BATCH):
        yield items[first : first + BATCH]


async def _deliver(app_url: str, envelopes: list[dict[str, str]]) -> int:
    stored = 0
    async with AsyncConnectionPool(app_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        ingest = Ingest(pool, LIMITS)
        for batch in _batches(envelopes):
            outcomes = await ingest.receive(batch)
            refused = [o for o in outcomes if o.status != 201]
            if refused:
                raise RuntimeError(f"the reporter refused fixture manifests: {refused[:3]}")
            stored += len(outcomes)
    return stored


def _key_types() -> dict[str, str]:
    types = {c.name: c.key_type for c in CLIENTS}
    types.update({HUB: "ed25519", CONTROLLER: "ed25519"})
    return types


def _chain_all(plan: FleetPlan, machines: dict[str, Machine]) -> list[tuple[Activity, dict[str, str]]]:
    """Chain and sign every activity in each machine's time order; the deliverable ones, by time."""
    signed = []
    for activity in sorted(plan.activities, key=lambda a: (a.machine, a.finished_at)):
        machine = machines[activity.machine]
        text = machine.chain(activity, plan.rng)
        _note_facts(plan.facts, activity, machine)
        if not activity.withheld:
            signed.append((activity, machine.sign(text)))
    signed.sort(key=lambda pair: pair[0].finished_at)
    return signed


def _note_facts(facts: FleetFacts, activity: Activity, machine: Machine) -> None:
    if activity.withheld:
        facts.gap_seqs = (facts.gap_seqs[0] or machine.seq, machine.seq)
        facts.withheld += 1
    if activity.forged_prev:
        facts.fork_seq = machine.seq
    if activity.tag == "failing":
        facts.failing_event_id = activity.manifest_id
    if activity.tag == "failed_drill":
        facts.failed_drill_event_id = activity.manifest_id
    if activity.fields.get("kind") != "backup" or activity.fields.get("status") == "failure":
        return
    if activity.machine == SCENARIOS.stale:
        facts.stale_last_success = max(facts.stale_last_success or activity.finished_at, activity.finished_at)
    if activity.machine == SCENARIOS.late:
        facts.late_last_run = max(facts.late_last_run or activity.finished_at, activity.finished_at)


def build_fleet(owner_url: str, app_url: str, key_dir: Path, now: datetime | None = None) -> FleetFacts:
    """Enroll every machine's key, then deliver three months of its signed manifests; the facts."""
    plan = FleetPlan(now or datetime.now(UTC).replace(microsecond=0))
    plan.build()
    machines = {name: Machine(name, make_key(key_dir, name, kind)) for name, kind in _key_types().items()}
    missing = {name: make_key(key_dir, name) for name in SCENARIOS.missing}
    plan.facts.fingerprints = _enroll(owner_url, machines, missing)
    signed = _chain_all(plan, machines)
    # In a thread of its own: the caller may run an event loop already (Playwright's sync API does).
    with ThreadPoolExecutor(max_workers=1) as thread:
        plan.facts.stored = thread.submit(
            asyncio.run, _deliver(app_url, [envelope for _activity, envelope in signed])
        ).result()
    return plan.facts


@dataclass(frozen=True)
class StoredFleet:
    database: ReporterDatabase
    facts: FleetFacts


_STORED: dict[str, StoredFleet] = {}


def stored_fleet(cluster: LocalCluster, key_dir: Path) -> StoredFleet:
    """The fleet in a database of its own in this cluster, built once per cluster (a test session)."""
    if cluster.url() not in _STORED:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE web_fleet")
        database = migrated(cluster.url("web_fleet"))
        facts = build_fleet(database.owner_url, database.app_url, key_dir)
        with psycopg.connect(database.owner_url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # what autovacuum does after a bulk load, before the pages read
        _STORED[cluster.url()] = StoredFleet(database, facts)
    return _STORED[cluster.url()]
