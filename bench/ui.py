"""Web UI benchmark: server-side render time of every page that reads events, as history grows.

For each --events size it builds a fleet of --hosts clients backing up every hour (plus a hub
signing a receipt for every six hours of each client's snapshots), so a larger size is the
same fleet with a longer history. Rows go into events with COPY, in time order, in chunks:
signatures are not made or verified (their text is a placeholder), but every chunk passes
through the reporter's own derived-state trigger, so job_status, host_chain, snapshots and
the rest are exactly what ingest would have made. Autovacuum runs during the load, as on a
live database (job_status and host_chain are updated by every chunk, snapshots leave the
awaiting-receipt index as receipts arrive); a VACUUM ANALYZE ends it. Then one `bk-reporter
serve` per size on 127.0.0.1, and GETs of each page, one size after the other for every
request (so that other load on the machine hits all sizes alike), each timed by the page's own
Server-Timing header (database + template, without the network). The pages: the overview and
its page 20, a random client's host page, the overdue list and the page of a random event of
the last two days (the runs those pages link to).

It prints p50 and p95 per page and size, and the ratio of the largest size to the smallest.
Targets: overview and host page p50 <= 200 ms at 10,000,000 events; every page's ratio < 1.3
(issue 18).

    .venv/bin/python bench/ui.py --events 100000 --events 10000000 [--hosts 2000] [--dir DIR]

A database already loaded in --dir is measured again without reloading. With --json FILE the
figures are also written as one JSON object (p50, p95 and database p50 per size and page, and the
p50 ratio of the largest size to the smallest), for bench/run_all.py to hold against the targets.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bk_reporter import db, hosts
from bk_reporter.pgcluster import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.net import free_port

APP_ROLE = "bk_reporter_app"
HUB = "hub-00"
RECEIPT_EVERY = 6  # hours of snapshots per hub receipt
SLOTS_PER_CHUNK = 24  # hourly slots per COPY statement
SILENT_SHARE = 0.01  # hosts that stopped reporting three days ago: stale
PLACEHOLDER_SIGNATURE = "-----BEGIN SSH SIGNATURE-----\nbench rows are not signed\n-----END SSH SIGNATURE-----\n"
COLUMNS = (
    "id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, received_at, key_fingerprint, "
    "repository_name, repository_url, snapshot_id, cadence_seconds, data_added, files_new, files_changed, "
    "files_unmodified, bytes_processed, lineage, manifest, signature"
)
SERVER_SETTINGS = {
    "shared_buffers": "4GB",
    "effective_cache_size": "16GB",
    "maintenance_work_mem": "1GB",
    "work_mem": "16MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
}
TIMING = re.compile(r"db;dur=([0-9.]+).*total;dur=([0-9.]+)")
NULL = "\\N"
# Events per second a load reaches on the 2-core development machine while other work shares it
# (10,000,000 events were 4.3 million after 37 min at load average ~10); used to estimate load time.
LOAD_RATE = 2_000


def _public_key(rng: random.Random) -> str:
    def string(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    blob = string(b"ssh-ed25519") + string(rng.randbytes(32))
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


@dataclass
class Chain:
    """One signing machine's chain head: the next seq and the previous manifest's SHA-256."""

    host: str
    fingerprint: str
    seq: int = 0
    prev: str | None = None
    snapshots: list[tuple[str, datetime]] = field(default_factory=list)


class Fleet:
    """Rows of an hourly-backup fleet, in time order, as text lines for COPY."""

    def __init__(self, hosts_count: int, events: int, now: datetime, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        backups_per_slot = hosts_count * (1 + 1 / RECEIPT_EVERY)
        self.slots = max(RECEIPT_EVERY, round(events / backups_per_slot))
        self.end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        self.start = self.end - timedelta(hours=self.slots - 1)
        names = [f"{group}-{n:04d}" for n, group in zip(range(hosts_count), self._groups(hosts_count), strict=True)]
        self.clients = [Chain(name, "") for name in names]
        self.hub = Chain(HUB, "")
        self.silent_from = self.end - timedelta(days=3)
        self.silent = set(names[: int(hosts_count * SILENT_SHARE)])
        self.phase = {name: self.rng.randint(0, 3300) for name in names}

    @staticmethod
    def _groups(count: int) -> Iterator[str]:
        groups = ("web", "db", "app", "mail", "files", "nas", "dev", "pi")
        return (groups[n % len(groups)] for n in range(count))

    def keys(self) -> list[hosts.HostKey]:
        keys = []
        for chain in [*self.clients, self.hub]:
            key = hosts.host_key(chain.host, _public_key(self.rng))
            chain.fingerprint = key.fingerprint
            keys.append(key)
        return keys

    def chunks(self) -> Iterator[list[str]]:
        for first in range(0, self.slots, SLOTS_PER_CHUNK):
            lines: list[str] = []
            for slot in range(first, min(first + SLOTS_PER_CHUNK, self.slots)):
                hour = self.start + timedelta(hours=slot)
                lines.extend(self._slot(hour, slot))
            yield lines

    def _slot(self, hour: datetime, slot: int) -> Iterator[str]:
        for client in self.clients:
            if client.host in self.silent and hour >= self.silent_from:
                continue
            yield self._backup(client, hour + timedelta(seconds=self.phase[client.host]))
        if (slot + 1) % RECEIPT_EVERY == 0:
            for client in self.clients:
                if client.snapshots:
                    yield self._receipt(client, hour + timedelta(minutes=58))

    def _line(self, chain: Chain, kind: str, status: str, started: datetime, finished: datetime, **facts: str) -> str:
        chain.seq += 1
        job = facts.get("job", "")
        manifest = (
            f'{{"finished_at":"{finished.isoformat()}","host":"{chain.host}","id":"{facts["id"]}",'
            f'"kind":"{kind}","prev":{"null" if chain.prev is None else chr(34) + chain.prev + chr(34)},'
            f'"schema":"bk.manifest/v1","seq":{chain.seq},"started_at":"{started.isoformat()}",'
            f'"status":"{status}"{facts.get("body", "")}}}'
        )
        sha = hashlib.sha256(manifest.encode()).hexdigest()
        received = finished + timedelta(seconds=self.rng.randint(1, 30))
        values = [
            facts["id"],
            chain.host,
            str(chain.seq),
            chain.prev or NULL,
            sha,
            kind,
            status,
            job or NULL,
            started.isoformat(),
            finished.isoformat(),
            received.isoformat(),
            chain.fingerprint,
            facts.get("repository_name", NULL),
            facts.get("repository_url", NULL),
            facts.get("snapshot", NULL),
            facts.get("cadence", NULL),
            *facts.get("stats", (NULL,) * 5),
            facts.get("lineage", NULL),
            manifest,
            PLACEHOLDER_SIGNATURE.replace("\n", "\\n"),
        ]
        chain.prev = sha
        return "\t".join(values) + "\n"

    def _backup(self, client: Chain, finished: datetime) -> str:
        started = finished - timedelta(seconds=self.rng.randint(40, 900))
        failed = self.rng.random() < 0.01
        url = f"rest:https://{HUB}.example:8000/{client.host}/"
        facts = {"id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), "job": "system", "cadence": "3600"}
        facts |= {"repository_name": "hub", "repository_url": url}
        body = f',"cadence_seconds":3600,"job":"system","repository":{{"name":"hub","url":"{url}"}}'
        if failed:
            facts["body"] = body + ',"error":{"exit_code":1,"message":"restic backup exited 1"}'
            return self._line(client, "backup", "failure", started, finished, **facts)
        snapshot = f"{self.rng.getrandbits(256):064x}"
        added, new, changed, unmodified = self.rng.randint(10**5, 10**9), self.rng.randint(0, 50), 0, 50_000
        changed = self.rng.randint(1, 400)
        stats = (str(added), str(new), str(changed), str(unmodified), str(40 * 2**30))
        facts |= {"snapshot": snapshot, "stats": stats}
        facts["body"] = body + (
            f',"snapshot":{{"id":"{snapshot}","paths":["/etc","/home"]}},"stats":{{"data_added":{added},'
            f'"files_changed":{changed},"files_new":{new},"files_unmodified":{unmodified},'
            f'"total_bytes_processed":{40 * 2**30}}}'
        )
        client.snapshots.append((snapshot, finished + timedelta(seconds=30)))
        return self._line(client, "backup", "success", started, finished, **facts)

    def _receipt(self, client: Chain, finished: datetime) -> str:
        items = [f'{{"arrived_at":"{at.isoformat()}","id":"{sid}","size":512}}' for sid, at in client.snapshots]
        lineage = [f'{{"arrived_at":"{at.isoformat()}","size":512,"snapshot":"{sid}"}}' for sid, at in client.snapshots]
        client.snapshots.clear()
        facts = {
            "id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "repository_name": client.host,
            "lineage": "[" + ",".join(lineage) + "]",
            "body": f',"receipt":{{"snapshots":[{",".join(items)}]}},"repository":{{"name":"{client.host}"}}',
        }
        return self._line(self.hub, "hub-receipt", "success", finished - timedelta(seconds=3), finished, **facts)


# -- the database ---------------------------------------------------------------------------


def start_cluster(directory: Path) -> LocalCluster:
    """The bench's private cluster (fsync off: throwaway data), restarted with SERVER_SETTINGS."""
    cluster = LocalCluster.under(directory / "pg", fsync=False)
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        for name, value in SERVER_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    cluster.stop()
    cluster.start()
    return cluster


def database_name(events: int, hosts_count: int) -> str:
    return f"ui_{events}_{hosts_count}"


def loaded(cluster: LocalCluster, name: str) -> bool:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            return False
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        return conn.execute("SELECT to_regclass('bench_loaded') IS NOT NULL").fetchone() == (True,)


def load(cluster: LocalCluster, name: str, fleet: Fleet) -> float:
    """Create, migrate and fill the database; seconds it took."""
    began = time.monotonic()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(name)
    db.migrate(url, APP_ROLE)
    with psycopg.connect(url, autocommit=True) as conn:
        hosts.enroll(conn, fleet.keys())
        stored = 0
        for lines in fleet.chunks():
            with conn.transaction(), conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy:
                copy.write("".join(lines))
            stored += len(lines)
            rate = stored / (time.monotonic() - began)
            print(f"  {stored:,} events ({rate:,.0f}/s)", file=sys.stderr, end="\r", flush=True)
        print(file=sys.stderr)
        conn.execute("VACUUM ANALYZE")
        conn.execute("CREATE TABLE bench_loaded (events bigint)")
        conn.execute("INSERT INTO bench_loaded VALUES (%s)", (stored,))
    return time.monotonic() - began


def stored_events(cluster: LocalCluster, name: str) -> int:
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(events), 0) FROM host_chain").fetchone()
        return int(row[0]) if row else 0


# -- measuring ------------------------------------------------------------------------------


def serve(cluster: LocalCluster, name: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BK_REPORTER_DATABASE_URL=cluster.url(name, user=APP_ROLE), BK_REPORTER_LOG_LEVEL="warning")
    command = str(Path(sys.executable).with_name("bk-reporter"))
    process = subprocess.Popen(
        [command, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the reporter did not start")


@dataclass
class Timings:
    server_ms: list[float] = field(default_factory=list)  # database + template, from Server-Timing
    db_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)  # as the client saw it, loopback included

    def p(self, fraction: float) -> float:
        ordered = sorted(self.server_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed_get(client: httpx.Client, path: str) -> tuple[float, float, float]:
    """(database ms, server ms, wall ms) of one GET; the first two from its Server-Timing header."""
    began = time.perf_counter()
    answer = client.get(path)
    wall = (time.perf_counter() - began) * 1000
    answer.raise_for_status()
    match = TIMING.search(answer.headers.get("server-timing", ""))
    if match is None:
        raise RuntimeError(f"{path} answered without a Server-Timing total")
    return float(match.group(1)), float(match.group(2)), wall


def pages(fleet: Fleet, requests: int, event_ids: list[str]) -> dict[str, list[str]]:
    rng = random.Random(11)
    clients = [c.host for c in fleet.clients]
    return {
        "overview": ["/"] * requests,
        "overview p.20": ["/?page=20"] * requests,
        "host": [f"/hosts/{name}" for name in rng.choices(clients, k=requests)],
        "overdue": ["/overdue"] * requests,
        "event": [f"/events/{event_id}" for event_id in rng.choices(event_ids, k=requests)],
    }


def sample_event_ids(cluster: LocalCluster, name: str, count: int = 200) -> list[str]:
    """Ids of random events of the last two days of history: the runs the overview and the host
    pages link to, which is how an event's page is reached."""
    query = """
        SELECT id::text FROM events
         WHERE finished_at > (SELECT max(finished_at) FROM events) - interval '2 days'
         ORDER BY random() LIMIT %s
    """
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        return [event_id for (event_id,) in conn.execute(query, (count,)).fetchall()]


@dataclass
class SizeResult:
    events: int
    load_seconds: float | None  # None: the database was already loaded
    fleet: Fleet
    event_ids: list[str] = field(default_factory=list)
    port: int = 0
    pages: dict[str, Timings] = field(default_factory=dict)


def prepare(cluster: LocalCluster, events: int, hosts_count: int) -> SizeResult:
    """The database of this size, loaded unless it already is."""
    name = database_name(events, hosts_count)
    fleet = Fleet(hosts_count, events, datetime.now(UTC))
    load_seconds = None
    if not loaded(cluster, name):
        hours = f"{fleet.slots:,} hours of history"
        print(f"loading {events:,} events for {hosts_count:,} hosts ({hours})", file=sys.stderr)
        load_seconds = load(cluster, name, fleet)
    else:  # a cached database: bring its schema up to the reporter's, as an upgrade would
        applied = db.migrate(cluster.url(name), APP_ROLE)
        if applied:
            print(f"applied {len(applied)} pending migration(s) to the cached {name}", file=sys.stderr)
    return SizeResult(stored_events(cluster, name), load_seconds, fleet, sample_event_ids(cluster, name))


def measure(results: list[SizeResult], requests: int, warmup: int) -> None:
    """Each request of each page against every size in turn, so that load on the machine hits all alike."""
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{r.port}", timeout=120) for r in results]
    paths = [pages(r.fleet, requests + warmup, r.event_ids) for r in results]
    try:
        for page in paths[0]:
            for result in results:
                result.pages[page] = Timings()
            for index in range(requests + warmup):
                for result, client, sized_paths in zip(results, clients, paths, strict=True):
                    db_ms, server_ms, wall_ms = timed_get(client, sized_paths[page][index])
                    if index >= warmup:
                        result.pages[page].db_ms.append(db_ms)
                        result.pages[page].server_ms.append(server_ms)
                        result.pages[page].wall_ms.append(wall_ms)
    finally:
        for client in clients:
            client.close()


def within_budget(cluster: LocalCluster, events: int, hosts_count: int, budget_minutes: float | None) -> int:
    """``events``, or, when that size is not loaded yet and loading it would take longer than the
    budget (at LOAD_RATE), the largest tenth of it that is loaded or fits; said on stdout."""
    size = events
    while budget_minutes is not None and not loaded(cluster, database_name(size, hosts_count)):
        minutes = size / LOAD_RATE / 60
        if minutes <= budget_minutes or size <= 100_000:
            break
        size //= 10
    if size != events:
        print(
            f"NOTE: {events:,} events are not loaded in this cache; loading them would take about "
            f"{events / LOAD_RATE / 60:.0f} min at {LOAD_RATE:,} events/s (more than --max-load-minutes "
            f"{budget_minutes:g}), so {size:,} events stand in for them. Build the cache once with "
            f"`bench/ui.py --events {events} --dir DIR --max-load-minutes 0` (not limited) to measure them.",
            flush=True,
        )
    return size


def run(
    directory: Path, sizes: list[int], hosts_count: int, requests: int, warmup: int, *, budget_minutes: float | None
) -> list[SizeResult]:
    cluster = start_cluster(directory)
    sizes = sorted({within_budget(cluster, events, hosts_count, budget_minutes) for events in sizes})
    results = [prepare(cluster, events, hosts_count) for events in sizes]
    servers = []
    try:
        for result, events in zip(results, sizes, strict=True):
            result.port = free_port()
            name = database_name(events, hosts_count)
            servers.append(serve(cluster, name, result.port, directory / f"data-{events}"))
        measure(results, requests, warmup)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    return results


def p50_ratios(results: list[SizeResult]) -> dict[str, float]:
    """Each page's p50 at the largest size over its p50 at the smallest."""
    small, large = results[0], results[-1]
    return {page: large.pages[page].p(0.5) / small.pages[page].p(0.5) for page in small.pages}


def report(results: list[SizeResult]) -> None:
    print(f"{'events':>12} {'page':<14} {'p50 ms':>8} {'p95 ms':>8} {'db p50':>8} {'wall p50':>9}  load")
    for result in results:
        load_text = "reused" if result.load_seconds is None else f"{result.load_seconds / 60:.1f} min"
        for page, timings in result.pages.items():
            p50, p95 = timings.p(0.5), timings.p(0.95)
            db_p50, wall = statistics.median(timings.db_ms), statistics.median(timings.wall_ms)
            print(f"{result.events:>12,} {page:<14} {p50:>8.1f} {p95:>8.1f} {db_p50:>8.1f} {wall:>9.1f}  {load_text}")
    if len(results) > 1:
        ratios = ", ".join(f"{page} {ratio:.2f}" for page, ratio in p50_ratios(results).items())
        print(f"p50 ratio {results[-1].events:,} / {results[0].events:,} events: {ratios}")


def figures(results: list[SizeResult]) -> dict[str, object]:
    sizes = [
        {
            "events": result.events,
            "loaded_seconds": result.load_seconds,
            "pages": {
                page: {"p50_ms": t.p(0.5), "p95_ms": t.p(0.95), "db_p50_ms": statistics.median(t.db_ms)}
                for page, t in result.pages.items()
            },
        }
        for result in results
    ]
    smallest, largest = results[0].events, results[-1].events
    return {"sizes": sizes, "smallest": smallest, "largest": largest, "p50_ratios": p50_ratios(results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, action="append", help="events to load (repeatable; default 100000)")
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=40, help="measured requests per page")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--max-load-minutes",
        type=float,
        default=20,
        help="a size not cached yet whose load would take longer (estimated) is replaced by a tenth of it, "
        "with a note; 0: no limit (default 20)",
    )
    parser.add_argument("--dir", type=Path, help="keep the cluster here (reused when run again); default: a temp dir")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the figures as JSON to FILE")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bk-bench-ui-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"cluster in {directory} · {os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    budget = args.max_load_minutes or None
    results = run(
        directory, sorted(args.events or [100_000]), args.hosts, args.requests, args.warmup, budget_minutes=budget
    )
    report(results)
    if args.json:
        args.json.write_text(json.dumps(figures(results), indent=1) + "\n")
    LocalCluster.under(directory / "pg").stop()
    if args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
