"""Helpers of the reliability suite: hosts that sign in memory, full table snapshots, the reporter
as a real `bk-reporter serve` process on loopback, and delivery senders built on the real spool,
chain and delivery code.

Hosts here sign with `cryptography`'s ed25519 in memory (the SSHSIG format of bk_evidence.sshsig,
without loading a key file per signature): 100,000 manifests must sign in seconds.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from reporter_fixtures import Host, ReporterDatabase

from bk_evidence import manifest, sshsig
from bk_evidence.chain import Chain
from bk_evidence.delivery import deliver
from bk_evidence.spool import Spool

NAMESPACE = sshsig.NAMESPACE
BK_REPORTER = Path(sys.executable).parent / "bk-reporter"


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def public_line_of(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode()


def sshsig_ed25519(
    private: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE, embedded_public: str | None = None
) -> str:
    """An armored SSHSIG made by `private`; `embedded_public` names another key in it (a forgery)."""
    public_blob = base64.b64decode((embedded_public or public_line_of(private)).split()[1])
    raw = private.sign(sshsig.signed_data(message, namespace, "sha512"))
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(public_blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(b"ssh-ed25519") + _string(raw))
    )
    return sshsig.armor(blob)


@dataclass
class MemoryHost(Host):
    """reporter_fixtures.Host whose ed25519 key lives in memory (no ssh-keygen per signature)."""

    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @classmethod
    def named(cls, name: str) -> MemoryHost:
        return cls(name, Path("/nonexistent/in-memory-key"))

    @property
    def public_line(self) -> str:
        return public_line_of(self.private)

    def sign(self, text: str, namespace: str = NAMESPACE) -> str:
        return sshsig_ed25519(self.private, text.encode("utf-8"), namespace)

    def signer(self, data: bytes) -> str:
        """For bk_evidence.chain.Chain.append."""
        return sshsig_ed25519(self.private, data)


# -- what the database holds ----------------------------------------------------------------------


def table_snapshot(url: str) -> dict[str, list[str]]:
    """Every row of every table of the reporter's schema, as sorted text (compare before/after)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"').fetchall())) for table in tables}


def stored_ids(url: str) -> list[str]:
    """Ids of all stored manifests, one entry per row (a duplicate row would show twice)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT id FROM events")]


def chain_figures(url: str) -> tuple[dict[str, tuple[int, int]], int]:
    """(events, last_seq) per host from host_chain, and the number of chain_breaks."""
    with psycopg.connect(url, autocommit=True) as conn:
        chains = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT host, events, last_seq FROM host_chain")}
        breaks = conn.execute("SELECT count(*) FROM chain_breaks").fetchone()[0]
    return chains, breaks


def run_audit(database: ReporterDatabase) -> subprocess.CompletedProcess[str]:
    """`bk-reporter audit` as an operator runs it."""
    env = dict(
        os.environ,
        BK_REPORTER_DATABASE_URL=database.app_url,
        BK_REPORTER_OWNER_DATABASE_URL=database.owner_url,
    )
    return subprocess.run(
        [str(BK_REPORTER), "audit"], env=env, capture_output=True, text=True, timeout=600, check=False
    )


# -- the reporter as a process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReporterProcess:
    """`bk-reporter serve` on 127.0.0.1 with a fixed port across restarts; logs appended to a file."""

    def __init__(self, database: ReporterDatabase, data_dir: Path, log: Path, **settings: str) -> None:
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = dict(
            os.environ,
            BK_REPORTER_DATABASE_URL=database.app_url,
            BK_REPORTER_OWNER_DATABASE_URL=database.owner_url,
            BK_REPORTER_DATA_DIR=str(data_dir),
            **{f"BK_REPORTER_{key.upper()}": value for key, value in settings.items()},
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            command = [str(BK_REPORTER), "serve", "--listen", f"127.0.0.1:{self.port}"]
            # Its own process group: a kill takes its verifying worker processes too, as systemd would.
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the reporter exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the reporter did not start")

    def kill(self) -> None:
        """SIGKILL to the server and its workers: no shutdown, no flush, connections cut."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def reporter_process(
    database: ReporterDatabase, directory: Path, log: Path | None = None, **settings: str
) -> Iterator[ReporterProcess]:
    reporter = ReporterProcess(database, directory / "reporter-data", log or directory / "reporter.log", **settings)
    reporter.start()
    try:
        yield reporter
    finally:
        reporter.stop()


# -- hosts delivering through the real spool and delivery code ----------------------------------


class Sender:
    """One host: bk_evidence Chain + Spool in a directory, delivering with bk_evidence.delivery."""

    def __init__(self, root: Path, host: MemoryHost) -> None:
        self.host = host
        self.chain = Chain(str(root / host.name / "state"), host.name, Spool(str(root / host.name / "spool")))
        self.made: dict[str, str] = {}  # id -> manifest text, everything this host signed and spooled

    def run(self, finished: datetime, job: str = "home", duration: timedelta = timedelta(minutes=3)) -> str:
        """Record one run's manifest (chain, sign, spool); its id."""
        doc = manifest.new_manifest("backup", "success", finished - duration, finished, job=job, cadence_seconds=3600)
        doc["snapshot"] = {"id": uuid.uuid4().hex + uuid.uuid4().hex}
        signed = self.chain.append(doc, self.host.signer)
        manifest_id = manifest.loads_strict(signed["manifest"])["id"]
        self.made[manifest_id] = signed["manifest"]
        return manifest_id

    def pending_ids(self) -> set[str]:
        return {path.stem.split("-", 1)[1] for path in self.chain.spool.pending()}

    def acknowledged(self) -> set[str]:
        """Made and gone from the outbox: the reporter answered 200/201 for them."""
        return set(self.made) - self.pending_ids()

    def deliver(self, url: str, deadline_seconds: float = 5.0) -> Any:
        self.chain.recover()
        return deliver(
            self.chain.spool, url, deadline_seconds=deadline_seconds, ready=self.chain.deliverable, log=lambda _m: None
        )

    def rejected(self) -> list[Path]:
        return self.chain.spool.rejected()
