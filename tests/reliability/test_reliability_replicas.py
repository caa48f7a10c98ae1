"""Reporter replicas: several real `bk-reporter serve` processes on one PostgreSQL behind HAProxy
(Debian's, round-robin, health checks on /healthz), everything on loopback.

Hosts deliver with the real chain, spool and delivery code (bk_evidence) through the balancer, so a
host's consecutive batches land on different replicas. One replica is SIGKILLed mid-load: what a
host saw acknowledged is stored exactly once, the rest stays in its spool and lands on the next
delivery. `bk-reporter migrate` runs concurrently while the replicas take load, and two notification
evaluators started at once on the database evaluate one at a time.

The rate through one replica and through two, in the same run, is printed (docs/scaling.md), not
asserted: this machine's two cores are shared.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg

from bk_reporter import hosts
from support.database import chain_figures, stored_ids
from support.net import free_port
from support.reporters import ONE_ADDRESS_FLEET, ReporterDatabase, ReporterProcess
from support.signing_hosts import MemoryHost, Sender
from support.tools import BK_REPORTER, HAPROXY, tool

HOSTS = 24
RUNS = 40
WORKERS = 6

HAPROXY_CONFIG = """\
global
    maxconn 1024
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    retries 3
    option redispatch

frontend bk_ingest
    bind 127.0.0.1:{port}
    default_backend bk_reporters

backend bk_reporters
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
{servers}
"""


class Balancer:
    """HAProxy in the foreground on 127.0.0.1, round-robin over the given replicas."""

    def __init__(self, directory: Path, replicas: list[ReporterProcess]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"    server r{index} 127.0.0.1:{replica.port} check" for index, replica in enumerate(replicas, 1)
        )
        self.config = directory / "haproxy.cfg"
        self.config.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
        self.log = directory / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        checked = subprocess.run(
            [tool(HAPROXY), "-c", "-f", str(self.config)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([tool(HAPROXY), "-db", "-f", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"haproxy did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@contextmanager
def replicas_behind_balancer(
    database: ReporterDatabase, directory: Path, count: int = 2
) -> Iterator[tuple[list[ReporterProcess], Balancer]]:
    with ExitStack() as stack:
        replicas = []
        for index in range(1, count + 1):
            root = directory / f"replica{index}"
            root.mkdir(parents=True, exist_ok=True)
            log = root / "reporter.log"
            replica = ReporterProcess(database, root / "data", log, log_level="warning", **ONE_ADDRESS_FLEET)
            replica.start()
            stack.callback(replica.stop)
            replicas.append(replica)
        balancer = Balancer(directory, replicas)
        balancer.start()
        stack.callback(balancer.stop)
        yield replicas, balancer


def enrolled_senders(database: ReporterDatabase, root: Path, prefix: str, count: int = HOSTS) -> list[Sender]:
    senders = [Sender(root, MemoryHost.named(f"{prefix}{index:03d}")) for index in range(count)]
    with psycopg.connect(database.owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key(sender.host.name, sender.host.public_line) for sender in senders])
    return senders


def run_and_deliver(sender: Sender, url: str, runs: int, progress: list[int], lock: threading.Lock) -> None:
    """A host's life: a run, then a delivery of its spool (what failed stays for the next one)."""
    start = datetime.now(UTC) - timedelta(hours=runs)
    for index in range(runs):
        sender.run(start + timedelta(hours=index))
        sender.deliver(url, deadline_seconds=5)
        with lock:
            progress[0] += 1


def drain(senders: list[Sender], url: str, seconds: float = 120) -> None:
    """Deliver until every spool is empty, as the hosts' next timer runs would."""
    deadline = time.monotonic() + seconds
    while any(sender.pending_ids() for sender in senders):
        assert time.monotonic() < deadline, "spools did not drain through the surviving replica"
        for sender in senders:
            if sender.pending_ids():
                sender.deliver(url, deadline_seconds=5)


def assert_stored_once_chains_intact(database: ReporterDatabase, senders: list[Sender]) -> None:
    made = {manifest_id for sender in senders for manifest_id in sender.made}
    stored = stored_ids(database.owner_url)
    assert len(stored) == len(set(stored)), "a manifest is stored twice"
    assert set(stored) == made, f"{len(made - set(stored))} lost, {len(set(stored) - made)} unknown"
    assert not [path for sender in senders for path in sender.rejected()], "a replica rejected a manifest"
    chains, breaks = chain_figures(database.owner_url)
    runs = {sender.host.name: (len(sender.made), len(sender.made)) for sender in senders}
    assert {name: chains.get(name) for name in runs} == runs and breaks == 0


def test_a_replica_sigkilled_mid_load_loses_nothing_acknowledged_and_stores_nothing_twice(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    senders = enrolled_senders(reporter_db, tmp_path / "hosts", "kill")
    progress, lock = [0], threading.Lock()
    with replicas_behind_balancer(reporter_db, tmp_path) as (replicas, balancer):
        with ThreadPoolExecutor(WORKERS) as pool:
            work = [pool.submit(run_and_deliver, s, balancer.url, RUNS, progress, lock) for s in senders]
            while progress[0] < HOSTS * RUNS // 3:
                time.sleep(0.05)
            acknowledged_before_kill = {i for sender in senders for i in sender.acknowledged()}
            replicas[0].kill()
            killed_at = progress[0]
            for done in work:
                done.result()
        pending_after_load = sum(len(sender.pending_ids()) for sender in senders)
        drain(senders, balancer.url)
    stored = set(stored_ids(reporter_db.owner_url))
    assert acknowledged_before_kill and acknowledged_before_kill <= stored
    assert_stored_once_chains_intact(reporter_db, senders)
    print(
        f"replica killed after {killed_at} of {HOSTS * RUNS} runs; {len(acknowledged_before_kill)} acknowledged "
        f"before the kill, {pending_after_load} still spooled after the load, all stored once after the drain"
    )


def test_one_hosts_consecutive_manifests_alternate_between_replicas_and_its_chain_stays_intact(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    (direct,) = enrolled_senders(reporter_db, tmp_path / "hosts", "direct", count=1)
    balanced = enrolled_senders(reporter_db, tmp_path / "hosts", "balanced", count=4)
    start = datetime.now(UTC) - timedelta(hours=RUNS)
    with replicas_behind_balancer(reporter_db, tmp_path) as (replicas, balancer):
        for index in range(RUNS):
            direct.run(start + timedelta(hours=index))
            report = direct.deliver(replicas[index % 2].url)
            assert report.delivered == 1 and not report.stopped, report.as_dict()
            for sender in balanced:
                sender.run(start + timedelta(hours=index))
                assert sender.deliver(balancer.url).delivered == 1
        log = balancer.log.read_text()
    assert_stored_once_chains_intact(reporter_db, [direct, *balanced])
    per_server = {name: log.count(f"bk_reporters/{name} ") for name in ("r1", "r2")}
    assert min(per_server.values()) >= RUNS, f"round-robin did not spread the requests: {per_server}"


def run_migrate(database: ReporterDatabase) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BK_REPORTER_DATABASE_URL=database.app_url, BK_REPORTER_OWNER_DATABASE_URL=database.owner_url)
    return subprocess.run(
        [str(BK_REPORTER), "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_concurrent_migrate_runs_while_replicas_serve_load_fail_nothing_and_lose_nothing(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    senders = enrolled_senders(reporter_db, tmp_path / "hosts", "migr")
    progress, lock = [0], threading.Lock()
    migrations: list[subprocess.CompletedProcess[str]] = []
    with replicas_behind_balancer(reporter_db, tmp_path) as (_replicas, balancer):
        with ThreadPoolExecutor(WORKERS) as pool, ThreadPoolExecutor(3) as migrators:
            work = [pool.submit(run_and_deliver, s, balancer.url, RUNS, progress, lock) for s in senders]
            while not all(done.done() for done in work):
                migrations.extend(migrators.map(lambda _index: run_migrate(reporter_db), range(3)))
            for done in work:
                done.result()
        drain(senders, balancer.url, seconds=30)
    assert len(migrations) >= 3
    failed = [run for run in migrations if run.returncode != 0]
    assert not failed, failed[0].stderr[-2000:]
    assert all("schema is current" in run.stdout for run in migrations)
    assert_stored_once_chains_intact(reporter_db, senders)
    print(f"{len(migrations)} migrate runs, three at a time, during {HOSTS * RUNS} deliveries through 2 replicas")


# -- the notification evaluator -------------------------------------------------------------------


@contextmanager
def slow_webhook(seconds: float) -> Iterator[tuple[str, list[dict]]]:
    """An HTTP receiver that takes `seconds` to answer: the evaluating process holds its lock that long."""
    posts: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
            time.sleep(seconds)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", posts
    finally:
        server.shutdown()
        server.server_close()


def test_two_evaluators_started_at_once_on_one_database_one_evaluates_the_other_skips(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    (sender,) = enrolled_senders(reporter_db, tmp_path / "hosts", "notify", count=1)
    failing = sender.host.envelope(
        status="failure", snapshot=None, stats=None, error={"exit_code": 1, "message": "repository unreachable"}
    )
    with replicas_behind_balancer(reporter_db, tmp_path) as (_replicas, balancer):
        answer = httpx.post(balancer.url + "/api/v1/manifests", json=failing, timeout=30)
        assert answer.status_code == 201, answer.text
        with slow_webhook(seconds=3) as (hook, posts):
            routes = tmp_path / "routes.yml"
            routes.write_text(f"routes:\n  hook:\n    urls: ['{hook}']\n")
            routes.chmod(0o600)
            env = dict(os.environ, BK_REPORTER_DATABASE_URL=reporter_db.app_url, BK_REPORTER_LOG_LEVEL="info")
            command = [str(BK_REPORTER), "notify", "--routes", str(routes), "--once", "--fire-after", "0"]
            evaluators = [
                subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _index in range(2)
            ]
            outputs = [evaluator.communicate(timeout=120)[0] for evaluator in evaluators]
    assert [evaluator.returncode for evaluator in evaluators] == [0, 0], outputs
    said = sorted(re.search(r"evaluated=(True|False)", output).group(1) for output in outputs)  # type: ignore[union-attr]
    assert said == ["False", "True"], outputs
    assert len(posts) == 1, "the failure was told more than once"
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM alert_transitions").fetchone()[0] == 1


# -- throughput, printed ----------------------------------------------------------------------------


def delivered_rate(senders: list[Sender], url: str) -> float:
    """Manifests/s for every sender's spool delivered at once, WORKERS hosts at a time."""
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda sender: drain([sender], url, seconds=300), senders))
    return sum(len(sender.made) for sender in senders) / (time.monotonic() - started)


def test_rate_through_one_replica_and_through_two_in_the_same_run_is_printed(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(days=30)
    workloads = {}
    for count in (1, 2):
        workloads[count] = enrolled_senders(reporter_db, tmp_path / "hosts", f"rate{count}-", count=HOSTS * 2)
        for sender in workloads[count]:
            for index in range(RUNS * 2):
                sender.run(start + timedelta(hours=index))
    rates = {}
    for count, senders in workloads.items():
        with replicas_behind_balancer(reporter_db, tmp_path / f"x{count}", count=count) as (_replicas, balancer):
            rates[count] = delivered_rate(senders, balancer.url)
    assert_stored_once_chains_intact(reporter_db, [s for senders in workloads.values() for s in senders])
    print(
        f"through HAProxy, {HOSTS * 2} hosts x {RUNS * 2} manifests, {WORKERS} delivering at once: "
        f"1 replica {rates[1]:.0f} manifests/s, 2 replicas {rates[2]:.0f} manifests/s "
        f"(x{rates[2] / rates[1]:.2f}, {os.cpu_count()} cores shared by PostgreSQL, HAProxy, hosts and replicas)"
    )
