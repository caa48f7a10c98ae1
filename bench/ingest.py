"""Ingest benchmark: the reporter against the raw insert rate of equivalent rows.

On loopback, with a private PostgreSQL cluster with fsync on, in one run it prints:

1. raw: executemany of equivalent rows into a table shaped like events (same columns
   and indexes, no triggers) in one transaction, the baseline; then the same rows through the
   reporter's own INSERT into events, triggers and all, in statements of --batch-size, verified
   beforehand (what PostgreSQL alone allows the batch path, without HTTP or verification);
2. single: POST /api/v1/manifests at concurrency 32, with p50 and p99 latency;
3. batch: POST /api/v1/manifests/batch;
4. open loop: single POSTs offered at a fixed rate (500/s by default) whatever the answers, with
   p50 and p99 measured from each request's scheduled time, so that a slow answer delays
   nobody's clock (no coordinated omission);

each with its ratio to the raw rate, and checks that nothing was lost (rows stored equal
2xx answers). Each phase starts after a CHECKPOINT and a sync (`settle`), with no writes of an
earlier phase pending. The reporter runs as `bk-reporter serve` in its own process; the load
generator is a small keep-alive HTTP/1.1 client on asyncio, so that its own cost stays low.

    .venv/bin/python bench/ingest.py [--single 6000] [--batch 30000] [--batch-size 500]
        [--open-rate 500] [--open-seconds 10] [--json FILE]

With --json FILE (or - for standard output, after the text) the figures are also written as one
JSON object, for other scripts to read; the text output stays as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bk_evidence import manifest as bk_manifest
from bk_evidence import sshsig
from bk_reporter import db, hosts, store
from bk_reporter.ingest import EnrolledKey, Limits, VerifiedManifest, envelope_from, signed_by
from bk_reporter.pgcluster import LocalCluster, find_server_bin
from bk_reporter.settings import Settings
from bk_reporter.verifying import verify_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.net import free_port

APP_ROLE = "bk_reporter_app"
RAW_COLUMNS = (
    "id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, key_fingerprint, repository_name, "
    "repository_url, snapshot_id, cadence_seconds, data_added, files_new, files_changed, files_unmodified, "
    "bytes_processed, manifest, signature"
)


@dataclass
class BenchHost:
    name: str
    key_path: Path
    public_line: str
    seq: int = 0
    prev: str | None = None

    def envelope(self, finished: datetime) -> dict[str, str]:
        self.seq += 1
        doc = bk_manifest.new_manifest(
            "backup",
            "success",
            finished - timedelta(seconds=42),
            finished,
            job="home",
            cadence_seconds=86400,
            repository={"name": "hub", "url": f"rest:https://hub.example:8000/{self.name}/"},
            snapshot={"id": uuid.uuid4().hex + uuid.uuid4().hex, "paths": ["/home", "/etc"]},
            stats={
                "data_added": 123456,
                "files_new": 3,
                "files_changed": 5,
                "files_unmodified": 4000,
                "total_bytes_processed": 987654321,
                "total_duration": 41.5,
            },
            tools={"restic": "0.14.0", "bk": "0.1.0"},
        )
        doc.update(host=self.name, seq=self.seq, prev=self.prev)
        text = bk_manifest.dumps(doc)
        self.prev = bk_manifest.sha256_hex(text)
        return {"manifest": text, "signature": sshsig.sign(text.encode(), str(self.key_path))}


def make_hosts(directory: Path, count: int, prefix: str = "host") -> list[BenchHost]:
    fleet = []
    for index in range(count):
        key = ed25519.Ed25519PrivateKey.generate()
        path = directory / f"{prefix}{index:04d}"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        fleet.append(BenchHost(path.name, path, public.decode()))
    return fleet


def make_envelopes(fleet: list[BenchHost], count: int) -> list[dict[str, str]]:
    start = datetime.now(UTC) - timedelta(days=30)
    return [fleet[i % len(fleet)].envelope(start + timedelta(seconds=i)) for i in range(count)]


# -- the baseline --------------------------------------------------------------------------------


def raw_rows(envelopes: list[dict[str, str]]) -> list[tuple[object, ...]]:
    rows = []
    for envelope in envelopes:
        doc = json.loads(envelope["manifest"])
        stats = doc["stats"]
        rows.append(
            (
                *(doc[key] for key in ("id", "host", "seq", "prev")),
                bk_manifest.sha256_hex(envelope["manifest"]),
                *(doc[key] for key in ("kind", "status", "job", "started_at", "finished_at")),
                sshsig.fingerprint(sshsig.signature_public_key(envelope["signature"])),
                doc["repository"]["name"],
                doc["repository"]["url"],
                doc["snapshot"]["id"],
                doc["cadence_seconds"],
                *(stats[key] for key in ("data_added", "files_new", "files_changed", "files_unmodified")),
                stats["total_bytes_processed"],
                envelope["manifest"],
                envelope["signature"],
            )
        )
    return rows


def raw_insert_rate(owner_url: str, envelopes: list[dict[str, str]]) -> float:
    rows = raw_rows(envelopes)
    placeholders = ", ".join(["%s"] * len(rows[0]))
    with psycopg.connect(owner_url) as conn:
        conn.execute("CREATE TABLE bench_raw (LIKE events INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany(f"INSERT INTO bench_raw ({RAW_COLUMNS}) VALUES ({placeholders})", rows)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_raw")
        conn.commit()
    return len(rows) / elapsed


def verified_in_advance(fleet: list[BenchHost], envelopes: list[dict[str, str]]) -> list[VerifiedManifest]:
    settings = Settings()
    limits = Limits(settings.max_manifest_bytes, timedelta(seconds=settings.future_tolerance_seconds))
    signed = [signed_by(envelope_from(envelope), limits) for envelope in envelopes]
    keys = {
        sshsig.fingerprint(h.public_line): EnrolledKey(sshsig.normalize_public_key(h.public_line), frozenset({h.name}))
        for h in fleet
    }
    verified = verify_all(signed, keys, limits, datetime.now(UTC))  # type: ignore[arg-type]
    if not all(isinstance(manifest, VerifiedManifest) for manifest in verified):
        raise RuntimeError("a manifest of the store-only phase did not verify")
    return verified  # type: ignore[return-value]


def store_only_rate(owner_url: str, fleet: list[BenchHost], envelopes: list[dict[str, str]], size: int) -> float:
    """store.store, the reporter's INSERT and its triggers, `size` manifests per statement."""
    manifests = verified_in_advance(fleet, envelopes)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key(h.name, h.public_line) for h in fleet])

    async def run() -> float:
        async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
            started = time.perf_counter()
            for start in range(0, len(manifests), size):
                outcomes = await store.store(conn, manifests[start : start + size])
                if any(outcome.status != 201 for outcome in outcomes):
                    raise RuntimeError("a manifest of the store-only phase was not stored")
            return len(manifests) / (time.perf_counter() - started)

    return asyncio.run(run())


# -- a lean HTTP/1.1 client ------------------------------------------------------------------------


# uvicorn closes a keep-alive connection after 5 s without a request; like any HTTP client's
# pool, the open loop reuses an idle connection only well before that.
REUSE_IDLE_SECONDS = 2.0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, value = line.decode().partition(":")[::2]
            if name.lower() == "content-length":
                length = int(value)
        answer = int(status_line.split()[1]), await self.reader.readexactly(length)
        self.idle_since = time.monotonic()
        return answer

    def close(self) -> None:
        self.writer.close()


@dataclass
class Sent:
    """What a phase's requests brought back: their wall time, each manifest's answer, and each
    request's latency where the phase measures it."""

    elapsed: float
    statuses: list[int]
    latencies: list[float] | None = None


async def post_singles(port: int, bodies: list[bytes], concurrency: int) -> Sent:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    statuses: list[int] = []

    async def worker() -> None:
        connection = await Connection.open(port)
        while queue:
            body = queue.pop()
            sent = time.perf_counter()
            status = (await connection.post("/api/v1/manifests", body))[0]
            latencies.append(time.perf_counter() - sent)
            statuses.append(status)
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _worker in range(concurrency)))
    return Sent(time.perf_counter() - started, statuses, latencies)


async def post_open_loop(port: int, bodies: list[bytes], rate: float) -> Sent:
    """Send body i at start + i / rate on an idle keep-alive connection (a new one when none is
    idle); a latency runs from the scheduled time to the answer."""
    idle: list[Connection] = []
    latencies: list[float] = []
    statuses: list[int] = []

    async def reusable() -> Connection:
        while idle:
            connection = idle.pop()
            if time.monotonic() - connection.idle_since < REUSE_IDLE_SECONDS:
                return connection
            connection.close()
        return await Connection.open(port)

    async def send(body: bytes, scheduled: float) -> None:
        connection = await reusable()
        status = (await connection.post("/api/v1/manifests", body))[0]
        latencies.append(time.perf_counter() - scheduled)
        statuses.append(status)
        idle.append(connection)

    started = time.perf_counter()
    tasks = []
    for index, body in enumerate(bodies):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(body, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    for connection in idle:
        connection.close()
    return Sent(elapsed, statuses, latencies)


async def post_batches(port: int, batches: list[bytes], concurrency: int) -> Sent:
    queue = list(reversed(batches))
    statuses: list[int] = []

    async def worker() -> None:
        connection = await Connection.open(port)
        while queue:
            status, body = await connection.post("/api/v1/manifests/batch", queue.pop())
            if status != 200:
                raise RuntimeError(f"batch answered {status}: {body[:200]!r}")
            statuses.extend(item["status"] for item in json.loads(body))
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _worker in range(concurrency)))
    return Sent(time.perf_counter() - started, statuses)


# -- running it --------------------------------------------------------------------------------------


def start_reporter(cluster: LocalCluster, database: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BK_REPORTER_DATABASE_URL": cluster.url(database, user=APP_ROLE),
        "BK_REPORTER_OWNER_DATABASE_URL": cluster.url(database),
        "BK_REPORTER_LOG_LEVEL": "warning",
        # The simulated hosts are all 127.0.0.1: one client to the per-client ingest limits.
        "BK_REPORTER_INGEST_REQUESTS_PER_MINUTE": "100000000",
        "BK_REPORTER_INGEST_BURST": "100000000",
    }
    reporter = subprocess.Popen(
        [str(Path(sys.executable).parent / "bk-reporter"), "serve", "--listen", f"127.0.0.1:{port}"], env=env
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return reporter
        except OSError:
            time.sleep(0.1)
    reporter.kill()
    raise RuntimeError("the reporter did not start")


def settle(owner_url: str) -> None:
    """Write out what earlier phases left in memory, so that no phase waits on another's writes.

    PostgreSQL's dirty buffers and the kernel's dirty pages of a phase are otherwise written
    back some 30 s later, in a burst that stalls every commit's WAL flush behind it: hundreds
    of milliseconds in the middle of the next phase (as pgbench checkpoints before a run)."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def stored_events(owner_url: str) -> int:
    with psycopg.connect(owner_url) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def describe_machine() -> str:
    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]  # fmt: skip
    postgres = str(find_server_bin() / "postgres")
    server = subprocess.run([postgres, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    cpu = models[0] if models else platform.processor()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {server}"


@dataclass
class Workload:
    """Everything signed in advance, so that the timed phases only send."""

    raw_fleet: list[BenchHost]
    raw: list[dict[str, str]]
    singles: list[bytes]
    batches: list[bytes]
    batch_items: int
    open_loop: list[bytes]


def prepare(owner_url: str, scratch: Path, args: argparse.Namespace) -> Workload:
    fleet = make_hosts(scratch, args.hosts)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key(h.name, h.public_line) for h in fleet])
    open_count = round(args.open_rate * args.open_seconds)
    print(f"signing {args.raw + args.single + args.batch + open_count} manifests of {args.hosts} hosts...", flush=True)
    (scratch / "raw").mkdir()
    batch_envelopes = make_envelopes(fleet, args.batch)
    size = args.batch_size
    raw_fleet = make_hosts(scratch / "raw", 50, prefix="raw")  # enrolled for the store-only phase: other names
    return Workload(
        raw_fleet=raw_fleet,
        raw=make_envelopes(raw_fleet, args.raw),
        singles=[json.dumps(e).encode() for e in make_envelopes(fleet, args.single)],
        batches=[json.dumps(batch_envelopes[i : i + size]).encode() for i in range(0, args.batch, size)],
        batch_items=args.batch,
        open_loop=[json.dumps(e).encode() for e in make_envelopes(fleet, open_count)],
    )


@dataclass
class Answers:
    """2xx answers counted per phase, and rows stored after it."""

    ok: int = 0
    other: int = 0
    rows_after: int = 0

    def count(self, statuses: list[int]) -> None:
        self.ok += sum(1 for status in statuses if 200 <= status < 300)
        self.other += sum(1 for status in statuses if not 200 <= status < 300)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (utime and stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parents() -> dict[int, int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    return parents


def _tree_cpu_seconds(root: int, parents: dict[int, int]) -> float:
    total = 0.0
    for pid in [root, *(pid for pid, parent in parents.items() if parent == root)]:
        try:
            total += _cpu_seconds(pid) if pid == root else _tree_cpu_seconds(pid, parents)
        except OSError:
            continue
    return total


@dataclass
class CpuMeter:
    """CPU seconds used by the reporter, PostgreSQL and this load generator: what a phase costs,
    whatever else the machine is busy with."""

    reporter_pid: int
    postmaster_pid: int

    def sample(self) -> tuple[float, float, float]:
        parents = _parents()
        return (
            _tree_cpu_seconds(self.reporter_pid, parents),
            _tree_cpu_seconds(self.postmaster_pid, parents),
            time.process_time(),
        )

    def report(self, before: tuple[float, float, float], manifests: int, into: dict | None = None) -> str:
        used = [(after - start) / manifests * 1000 for after, start in zip(self.sample(), before, strict=True)]
        cores = os.cpu_count() or 1
        if into is not None:
            into["cpu_ms_per_manifest"] = {"reporter": used[0], "postgresql": used[1], "load_generator": used[2]}
            into["cpu_bound_rate"] = cores * 1000 / sum(used)
        return (
            f"    CPU per manifest: reporter {used[0]:.2f} ms, PostgreSQL {used[1]:.2f} ms, load generator "
            f"{used[2]:.2f} ms; {cores} cores fully used would allow about {cores * 1000 / sum(used):.0f}/s"
        )


def latency_figures(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "max_ms": max(latencies) * 1000,
    }


@dataclass
class Phase:
    """One timed phase of the load generator."""

    send: Callable[[], Coroutine[Any, Any, Sent]]
    settings: dict[str, float]  # how many manifests it sends and how: its figures known beforehand
    line: str  # what it prints, formatted with its figures


def phases(port: int, workload: Workload, args: argparse.Namespace) -> dict[str, Phase]:
    """The timed phases, in the order they run, by their names in the JSON figures."""
    return {
        "single": Phase(
            partial(post_singles, port, workload.singles, args.concurrency),
            {"manifests": len(workload.singles), "concurrency": args.concurrency},
            "single POST, {concurrency} clients:  {rate:9.0f} manifests/s  (ratio {ratio:.2f}; "
            "p50 {p50_ms:.1f} ms, p99 {p99_ms:.1f} ms, mean {mean_ms:.1f} ms)",
        ),
        "batch": Phase(
            partial(post_batches, port, workload.batches, args.batch_concurrency),
            {"manifests": workload.batch_items, "batch_size": args.batch_size, "concurrency": args.batch_concurrency},
            "batch POST, {batch_size} per request, {concurrency} clients:  {rate:9.0f} manifests/s  "
            "(ratio {ratio:.2f})",
        ),
        "open_loop": Phase(
            partial(post_open_loop, port, workload.open_loop, args.open_rate),
            {"manifests": len(workload.open_loop), "offered_rate": args.open_rate},
            "open loop, {offered_rate:.0f}/s offered: {rate:9.0f} manifests/s  (ratio {ratio:.2f}; "
            "p50 {p50_ms:.1f} ms, p99 {p99_ms:.1f} ms, max {max_ms:.1f} ms; target p99 <= 50 ms)",
        ),
    }


def run_phase(key: str, phase: Phase, raw_rate: float, meter: CpuMeter, *, results: dict) -> Answers:
    """Time a phase; keep its figures, print them and what the phase cost, and count its answers."""
    manifests = int(phase.settings["manifests"])
    before = meter.sample()
    sent = asyncio.run(phase.send())
    rate = manifests / sent.elapsed
    figures = {**phase.settings, "rate": rate, "ratio": rate / raw_rate}
    if sent.latencies is not None:
        figures |= latency_figures(sent.latencies)
    print(phase.line.format(**figures))
    results[key] = figures
    print(meter.report(before, manifests, figures))
    answers = Answers()
    answers.count(sent.statuses)
    return answers


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--raw", type=int, default=20000, help="rows for the raw insert baseline")
    parser.add_argument("--single", type=int, default=6000, help="manifests posted one per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=30000, help="manifests posted in batches")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-concurrency", type=int, default=2)
    parser.add_argument("--open-rate", type=float, default=500.0, help="manifests/s offered in the open-loop phase")
    parser.add_argument("--open-seconds", type=float, default=10.0, help="how long the open-loop phase offers them")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE (- for stdout)")
    return parser.parse_args()


def measure(cluster: LocalCluster, scratch: Path, args: argparse.Namespace, results: dict) -> int:
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
    owner_url = cluster.url("bench")
    db.migrate(owner_url, APP_ROLE)
    workload = prepare(owner_url, scratch, args)
    settle(owner_url)
    raw_rate = raw_insert_rate(owner_url, workload.raw)
    print(f"raw executemany insert:   {raw_rate:9.0f} rows/s       (ratio 1.00; {args.raw} rows, one transaction)")
    results["raw"] = {"rows": args.raw, "rate": raw_rate}
    settle(owner_url)
    store_rate = store_only_rate(owner_url, workload.raw_fleet, workload.raw, args.batch_size)
    ratio = store_rate / raw_rate
    print(
        f"store only, {args.batch_size} per statement: {store_rate:9.0f} rows/s       (ratio {ratio:.2f}; "
        "the same rows into events with its triggers, verified beforehand)"
    )
    results["store_only"] = {"rows": args.raw, "statement_rows": args.batch_size, "rate": store_rate, "ratio": ratio}
    before = stored_events(owner_url)
    port = free_port()
    reporter = start_reporter(cluster, "bench", port)
    meter = CpuMeter(reporter.pid, int((cluster.data_dir / "postmaster.pid").read_text().split()[0]))
    answered: list[Answers] = []
    try:
        for key, phase in phases(port, workload, args).items():
            settle(owner_url)
            answers = run_phase(key, phase, raw_rate, meter, results=results)
            answers.rows_after = stored_events(owner_url) - before - sum(earlier.rows_after for earlier in answered)
            answered.append(answers)
    finally:
        reporter.terminate()
        reporter.wait(timeout=60)
    single, batch, opened = answered
    lost = sum(each.ok - each.rows_after for each in answered)
    other = sum(each.other for each in answered)
    print(
        f"2xx answers: {single.ok} single + {batch.ok} batch + {opened.ok} open loop; rows stored: "
        f"{single.rows_after} + {batch.rows_after} + {opened.rows_after}; lost: {lost}; other answers: {other}"
    )
    results["answers_2xx"] = sum(each.ok for each in answered)
    results["rows_stored"] = sum(each.rows_after for each in answered)
    results["lost"] = lost
    results["other_answers"] = other
    return 0 if lost == 0 and other == 0 else 1


def write_json(target: str, results: dict) -> None:
    text = json.dumps(results, indent=2, sort_keys=True) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text)


def main() -> int:
    args = arguments()
    scratch = Path(tempfile.mkdtemp(prefix="bk-bench-"))
    scratch.chmod(0o755)
    cluster = LocalCluster.under(scratch / "pg", fsync=True)
    print(f"machine: {describe_machine()}; fsync on, loopback, unix socket to PostgreSQL", flush=True)
    print(f"load average before the run: {os.getloadavg()[0]:.2f} (other work shares these cores)", flush=True)
    results: dict = {"machine": describe_machine(), "load_average_before": os.getloadavg()[0]}
    try:
        code = measure(cluster, scratch, args, results)
    finally:
        cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()[0]
    if args.json:
        write_json(args.json, results)
    return code


if __name__ == "__main__":
    sys.exit(main())
