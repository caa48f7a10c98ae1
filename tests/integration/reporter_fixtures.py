"""Helpers for the reporter's integration tests: hosts with real OpenSSH keys, a reporter
served by uvicorn on 127.0.0.1, and row counts of every table.

Signatures here are made by stock `ssh-keygen -Y sign`, as a host without `cryptography`
would make them. The fixtures using these helpers live in conftest.py beside this file.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bk_evidence import manifest as bk_manifest
from bk_reporter import db, hosts
from bk_reporter.app import create_app
from bk_reporter.settings import Settings

NAMESPACE = "bk-manifest@v1"


def make_key(directory: Path, name: str, key_type: str = "ed25519") -> Path:
    path = directory / name
    options = ["-t", key_type] + (["-b", "3072"] if key_type == "rsa" else [])
    subprocess.run(["ssh-keygen", "-q", *options, "-N", "", "-C", name, "-f", str(path)], check=True)
    return path


def ssh_keygen_sign(key: Path, text: str, namespace: str = NAMESPACE) -> str:
    """An armored SSHSIG of the text's UTF-8 bytes, made by `ssh-keygen -Y sign`."""
    with tempfile.TemporaryDirectory() as scratch:
        message = Path(scratch) / "manifest.json"
        message.write_bytes(text.encode("utf-8"))
        subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace, str(message)], check=True)
        return Path(str(message) + ".sig").read_text()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Host:
    """A machine that signs manifests and keeps its chain, like bk-run does."""

    name: str
    key: Path
    seq: int = 0
    prev: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def public_line(self) -> str:
        return Path(str(self.key) + ".pub").read_text().strip()

    def document(
        self, ago: timedelta = timedelta(minutes=1), duration: timedelta = timedelta(minutes=5), **fields: Any
    ) -> dict[str, Any]:
        """The next manifest of the chain (not yet advanced), overridable field by field; None removes."""
        finished = datetime.now(UTC) - ago
        doc: dict[str, Any] = {
            "schema": "bk.manifest/v1",
            "id": str(uuid.uuid4()),
            "host": self.name,
            "seq": self.seq + 1,
            "prev": self.prev,
            "kind": "backup",
            "status": "success",
            "started_at": rfc3339(finished - duration),
            "finished_at": rfc3339(finished),
            "job": "home",
            "cadence_seconds": 86400,
            "repository": {"name": "hub", "url": f"rest:https://hub.example:8000/{self.name}/"},
            "snapshot": {"id": uuid.uuid4().hex + uuid.uuid4().hex},
            "stats": {
                "data_added": 1234,
                "files_new": 3,
                "files_changed": 2,
                "files_unmodified": 100,
                "total_bytes_processed": 98765,
            },
        }
        doc.update(fields)
        return {key: value for key, value in doc.items() if value is not None or key == "prev"}

    def text(self, **fields: Any) -> str:
        return bk_manifest.dumps(self.document(**fields))

    def advance(self, text: str) -> str:
        """Record `text` as the chain's newest manifest; returns it."""
        doc = json.loads(text)
        self.seq, self.prev = doc["seq"], bk_manifest.sha256_hex(text)
        self.texts.append(text)
        return text

    def sign(self, text: str, namespace: str = NAMESPACE) -> str:
        return ssh_keygen_sign(self.key, text, namespace)

    def envelope(self, text: str | None = None, **fields: Any) -> dict[str, str]:
        """A signed envelope of `text` (or of the next manifest, which advances the chain)."""
        if text is None:
            text = self.advance(self.text(**fields))
        return {"manifest": text, "signature": self.sign(text)}


def enroll(owner_url: str, host: Host) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key(host.name, host.public_line)])


def row_counts(url: str) -> dict[str, int]:
    """Rows in every table of the reporter's schema (to show that nothing was written)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in sorted(tables)}


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


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(
    database: ReporterDatabase, settings: Settings | None = None, **uvicorn_options: Any
) -> Iterator[LiveReporter]:
    """The reporter app served by uvicorn on 127.0.0.1 (a free port) in a thread."""
    settings = settings or Settings()
    sock = _free_socket()
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
