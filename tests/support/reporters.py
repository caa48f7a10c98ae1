"""The reporter under test: a migrated database (owner and application connections), the app served
by uvicorn in a thread, `bk-reporter serve` as a process, and `bk-reporter audit` as an operator
runs it. Every server here listens on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bk_reporter import db, hosts
from bk_reporter.app import create_app
from bk_reporter.settings import Settings
from support.net import bound_socket, free_port
from support.signing_hosts import SigningHost
from support.tools import BK_REPORTER

# Settings for a fleet simulated on loopback: every host is 127.0.0.1, one client to the
# per-client ingest limits (bk_reporter.ratelimit), which such a load would otherwise measure.
ONE_ADDRESS_LIMITS = {"ingest_requests_per_minute": 100_000_000, "ingest_burst": 100_000_000}
ONE_ADDRESS_FLEET = {key: str(value) for key, value in ONE_ADDRESS_LIMITS.items()}  # as environment variables


def enroll(owner_url: str, host: SigningHost) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key(host.name, host.public_line)])


def as_user(url: str, user: str) -> str:
    params = conninfo_to_dict(url)
    params["user"] = user
    return make_conninfo(**params)


@dataclass(frozen=True)
class ReporterDatabase:
    owner_url: str
    app_url: str


def migrated(pg_url: str) -> ReporterDatabase:
    settings = Settings()
    db.migrate(pg_url, settings.app_role)
    return ReporterDatabase(owner_url=pg_url, app_url=as_user(pg_url, settings.app_role))


@dataclass
class LiveReporter:
    url: str
    settings: Settings
    database: ReporterDatabase


@contextmanager
def serving(
    database: ReporterDatabase, settings: Settings | None = None, **uvicorn_options: Any
) -> Iterator[LiveReporter]:
    """The reporter app served by uvicorn on 127.0.0.1 (a free port) in a thread."""
    settings = settings or Settings()
    sock = bound_socket()
    config = uvicorn.Config(
        create_app(settings, database.app_url), log_config=None, access_log=False, lifespan="on", **uvicorn_options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the reporter did not start")
        time.sleep(0.02)
    scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
    try:
        yield LiveReporter(f"{scheme}://127.0.0.1:{sock.getsockname()[1]}", settings, database)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


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
