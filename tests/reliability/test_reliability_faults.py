"""Faults with nothing lost: real processes, real PostgreSQL, the real chain, spool and delivery code.

After every fault: each manifest a host acknowledged (its spool file removed after a 200/201) is
stored; after recovery and a flush, every manifest made is stored exactly once, no spool file was
rejected, every chain is gap-free and unbroken, and `bk-reporter audit` exits 0.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bk_evidence import manifest
from bk_evidence.spool import Spool
from bk_reporter.pgcluster import LocalCluster
from support.database import chain_figures, stored_ids, throwaway_cluster
from support.net import refusing_port
from support.reporters import (
    ONE_ADDRESS_FLEET,
    ReporterDatabase,
    ReporterProcess,
    enroll,
    migrated,
    reporter_process,
    run_audit,
)
from support.signing_hosts import MemoryHost, Sender


def senders_for(database: ReporterDatabase, root: Path, count: int) -> list[Sender]:
    senders = []
    for index in range(count):
        host = MemoryHost.named(f"host{index}")
        enroll(database.owner_url, host)
        senders.append(Sender(root, host))
    return senders


def events_count(database: ReporterDatabase) -> int:
    try:
        with psycopg.connect(database.owner_url, autocommit=True, connect_timeout=2) as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except psycopg.OperationalError:
        return -1


class Load:
    """Hosts making runs and delivering them, each in its own thread, until `rounds` are done."""

    def __init__(self, senders: list[Sender], url: str, rounds: int, runs_per_round: int) -> None:
        self.senders, self.url = senders, url
        self.rounds, self.runs_per_round = rounds, runs_per_round
        self.threads = [threading.Thread(target=self._host, args=(sender,)) for sender in senders]
        self.errors: list[BaseException] = []

    def _host(self, sender: Sender) -> None:
        start = datetime.now(UTC) - timedelta(days=1)
        try:
            for round_number in range(self.rounds):
                for run in range(self.runs_per_round):
                    sender.run(start + timedelta(seconds=round_number * 60 + run))
                sender.deliver(self.url, deadline_seconds=1.0)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
            raise

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self.threads:
            thread.join(300)
        assert not any(thread.is_alive() for thread in self.threads), "a host thread hangs"
        assert not self.errors, self.errors

    def made(self) -> int:
        return sum(len(sender.made) for sender in self.senders)


def flush(senders: list[Sender], url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while any(sender.pending_ids() for sender in senders):
        assert time.monotonic() < deadline, "the spools did not empty"
        for sender in senders:
            sender.deliver(url, deadline_seconds=10)


def assert_all_stored_once(database: ReporterDatabase, senders: list[Sender]) -> None:
    for sender in senders:
        assert sender.rejected() == [], f"{sender.host.name} had manifests rejected"
        assert not sender.pending_ids()
    stored = stored_ids(database.owner_url)
    made = {manifest_id for sender in senders for manifest_id in sender.made}
    assert len(stored) == len(set(stored)), "a manifest is stored twice"
    assert set(stored) == made, f"lost: {len(made - set(stored))}, unexpected: {len(set(stored) - made)}"
    chains, breaks = chain_figures(database.owner_url)
    assert chains == {s.host.name: (len(s.made), len(s.made)) for s in senders}
    assert breaks == 0
    audit = run_audit(database)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]


def wait_until(condition: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- (a) the reporter SIGKILLed during a batch load ---------------------------------------------


def test_reporter_killed_during_a_batch_load_loses_nothing(reporter_db: ReporterDatabase, tmp_path: Path) -> None:
    senders = senders_for(reporter_db, tmp_path, 6)
    with reporter_process(reporter_db, tmp_path, **ONE_ADDRESS_FLEET) as reporter:
        with Load(senders, reporter.url, 40, 10) as load:
            wait_until(lambda: events_count(reporter_db) >= 400)
            reporter.kill()
            killed_with, made_by_then = events_count(reporter_db), load.made()
            acknowledged = {manifest_id for sender in senders for manifest_id in sender.acknowledged()}
            assert acknowledged <= set(stored_ids(reporter_db.owner_url)), "acknowledged but not stored"
            time.sleep(1.5)  # the hosts keep making runs and failing to deliver them
            reporter.start()
        flush(senders, reporter.url)
    assert 0 < killed_with < made_by_then
    assert_all_stored_once(reporter_db, senders)


# -- (b) PostgreSQL restarted (immediate stop) during a load ---------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[LocalCluster]:
    """A cluster of this test's own (fsync on): stopping it disturbs no other test."""
    with throwaway_cluster(fsync=True) as cluster:
        yield cluster


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgresql_restarted_during_a_load_loses_nothing(
    private_cluster: LocalCluster, mode: str, tmp_path: Path
) -> None:
    with psycopg.connect(private_cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bk")
    database = migrated(private_cluster.url("bk"))
    senders = senders_for(database, tmp_path, 4)
    with reporter_process(database, tmp_path, **ONE_ADDRESS_FLEET) as reporter:
        with Load(senders, reporter.url, 40, 8) as load:
            wait_until(lambda: events_count(database) >= 200)
            private_cluster.stop(mode)
            acknowledged = {manifest_id for sender in senders for manifest_id in sender.acknowledged()}
            time.sleep(2)  # deliveries meanwhile are answered 503 and stay in the spools
            private_cluster.start()
            assert acknowledged <= set(stored_ids(database.owner_url)), "acknowledged but not stored"
            assert load.made() > len(acknowledged)
        flush(senders, reporter.url)  # the same reporter process: it reconnects by itself
        assert_reporter_survived(reporter)
    assert_all_stored_once(database, senders)


def assert_reporter_survived(reporter: ReporterProcess) -> None:
    assert reporter.process is not None and reporter.process.poll() is None
    log = reporter.log.read_text()
    assert "Traceback" not in log, log[-3000:]


# -- (c) the reporter unreachable for a day's worth of runs --------------------------------------

JOBS = ("home", "etc", "db", "mail", "www")


def test_a_day_offline_is_delivered_oldest_first_with_chains_intact(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    senders = senders_for(reporter_db, tmp_path, 3)
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    with refusing_port() as away:
        for hour in range(24):
            for sender in senders:
                for job in JOBS:
                    sender.run(day_ago + timedelta(hours=hour), job=job)
                report = sender.deliver(away, deadline_seconds=0.05)
                assert report.delivered == 0 and report.stopped
    assert all(len(sender.pending_ids()) == 24 * len(JOBS) for sender in senders)
    with reporter_process(reporter_db, tmp_path) as reporter:
        # As the next runs would: a batch answered later than the host's request timeout (3 s) is
        # stored all the same, and its retry is answered 200.
        flush(senders, reporter.url)
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        for sender in senders:
            rows = conn.execute(
                "SELECT seq, received_at, finished_at FROM events WHERE host = %s ORDER BY seq", (sender.host.name,)
            ).fetchall()
            assert [row[0] for row in rows] == list(range(1, 24 * len(JOBS) + 1))
            received = [row[1] for row in rows]
            assert received == sorted(received), "not delivered oldest first"
            assert len(set(received)) >= 2, "120 manifests fit in one batch of 100?"
    assert_all_stored_once(reporter_db, senders)


# -- (d) a host crashing between signing and spooling --------------------------------------------


def _append_then_hang(root: str, host: MemoryHost, point: str, marker: str) -> None:
    """Append one manifest and freeze at `point` ("signed": before the spool write; "spooled":
    after it, before the chain state advances) until the parent kills this process."""
    sender = Sender(Path(root), host)
    real_put = Spool.put

    def signer(data: bytes) -> str:
        signature = host.signer(data)
        if point == "signed":
            Path(marker).write_bytes(data)
            time.sleep(600)
        return signature

    def put(spool: Spool, envelope: dict, seq: int, manifest_id: str) -> Path:
        path = real_put(spool, envelope, seq, manifest_id)
        if point == "spooled":
            Path(marker).write_text(envelope["manifest"])
            time.sleep(600)
        return path

    Spool.put = put  # type: ignore[method-assign]  # in this child process only
    doc = manifest.new_manifest("backup", "success", manifest.utc_now(), manifest.utc_now(), job="home")
    sender.chain.append(doc, signer)


def crash_at(root: Path, host: MemoryHost, point: str) -> str:
    """Run an append in a child process, SIGKILL it at `point`; the manifest text it had then."""
    marker = root / f"crash-{uuid.uuid4().hex}"
    child = multiprocessing.get_context("fork").Process(
        target=_append_then_hang, args=(str(root), host, point, str(marker))
    )
    child.start()
    wait_until(lambda: marker.exists() and marker.stat().st_size > 0, 60)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    return marker.read_text()


def test_a_host_killed_between_signing_and_spooling_neither_forks_nor_gaps(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    (sender,) = senders_for(reporter_db, tmp_path, 1)
    now = datetime.now(UTC)
    for minute in range(3):
        sender.run(now - timedelta(minutes=30 - minute))
    signed_never_spooled = crash_at(tmp_path, sender.host, "signed")
    orphan = crash_at(tmp_path, sender.host, "spooled")
    assert manifest.loads_strict(signed_never_spooled)["seq"] == 4 == manifest.loads_strict(orphan)["seq"]
    sender.made[manifest.loads_strict(orphan)["id"]] = orphan  # made by the killed run: the next one adopts it
    for minute in range(2):
        sender.run(now - timedelta(minutes=5 - minute))
    with reporter_process(reporter_db, tmp_path) as reporter:
        flush([sender], reporter.url)
    assert_all_stored_once(reporter_db, [sender])
    stored = set(stored_ids(reporter_db.owner_url))
    assert manifest.loads_strict(signed_never_spooled)["id"] not in stored
    assert manifest.loads_strict(orphan)["id"] in stored
    texts = {
        path.read_text()
        for path in (tmp_path / sender.host.name).rglob("*")
        if path.is_file() and path.suffix == ".json"
    }
    assert not any(manifest.loads_strict(signed_never_spooled)["id"] in text for text in texts)
