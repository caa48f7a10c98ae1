"""Per-client ingest limits, as an attack: a real `bk-reporter serve`, real HTTP from two addresses.

Linux answers every 127.0.0.0/8 address on loopback, so the flooding client binds 127.0.0.2
and the well-behaved host 127.0.0.1: two clients to the reporter, as two machines would be.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bk_evidence import manifest, sshsig
from bk_evidence.chain import Chain
from bk_evidence.delivery import deliver
from bk_evidence.spool import Spool
from support.reporters import ReporterDatabase, ReporterProcess, reporter_process
from support.signing_hosts import SigningHost

FLOODER = "127.0.0.2"
BURST = 5


@pytest.fixture
def limited(reporter_db: ReporterDatabase, tmp_path: Path):
    with reporter_process(reporter_db, tmp_path, ingest_requests_per_minute="6", ingest_burst=str(BURST)) as live:
        yield live


def flooder() -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=FLOODER), timeout=10)


def test_a_flooding_client_gets_429_while_another_clients_manifest_is_stored(
    limited: ReporterProcess, web1: SigningHost
) -> None:
    garbage = {"manifest": "x", "signature": "not a signature"}
    with flooder() as attacker:
        answers = [attacker.post(limited.url + "/api/v1/manifests", json=garbage) for _attempt in range(BURST + 5)]
        batch = attacker.post(limited.url + "/api/v1/manifests/batch", json=[garbage])
    assert [a.status_code for a in answers[:BURST]] == [401] * BURST  # the burst is answered as usual
    for answer in [*answers[BURST:], batch]:
        assert answer.status_code == 429
        body = answer.json()
        assert (body["status"], body["code"]) == (429, "rate_limited")
        assert FLOODER in body["message"]
        assert 1 <= int(answer.headers["retry-after"]) <= 10  # one token at 6 a minute
    stored = httpx.post(limited.url + "/api/v1/manifests", json=web1.envelope(), timeout=10)
    assert stored.status_code == 201, stored.text
    assert httpx.get(limited.url + "/healthz", timeout=10).json() == {"status": "ok"}
    metrics = httpx.get(limited.url + "/metrics", timeout=10).text
    assert 'bk_ingest_requests_total{endpoint="single",status="429"} 5.0' in metrics
    assert 'bk_ingest_requests_total{endpoint="batch",status="429"} 1.0' in metrics
    access = [json.loads(line) for line in limited.log.read_text().splitlines() if '"bk_reporter.access"' in line]
    limited_lines = [line for line in access if line.get("code") == "rate_limited"]
    assert len(limited_lines) == 6 and {line["client"] for line in limited_lines} == {FLOODER}


def test_a_limited_client_is_answered_before_its_body_is_sent(limited: ReporterProcess) -> None:
    with flooder() as attacker:
        for _attempt in range(BURST):
            attacker.post(limited.url + "/api/v1/manifests", content=b"{")
    address = urlsplit(limited.url)
    with socket.create_connection((address.hostname, address.port), timeout=5, source_address=(FLOODER, 0)) as conn:
        conn.sendall(
            b"POST /api/v1/manifests HTTP/1.1\r\nHost: reporter\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        started = time.monotonic()
        head = conn.recv(4096)  # not a byte of the announced body has been sent
    assert head.startswith(b"HTTP/1.1 429 "), head
    assert b"retry-after:" in head.lower()
    assert time.monotonic() - started < 5


def test_a_host_that_meets_the_limit_keeps_its_spool_and_delivers_later(
    limited: ReporterProcess, web1: SigningHost, tmp_path: Path
) -> None:
    """The sender's answer to 429 (plugins/module_utils/delivery.py): retry later, nothing rejected."""
    chain = Chain(str(tmp_path / "state"), "web1", Spool(str(tmp_path / "spool")))
    now = manifest.utc_now()
    for _index in range(3):
        chain.append(
            manifest.new_manifest("backup", "success", now, now), lambda data: sshsig.sign(data, str(web1.key))
        )
    for _index in range(BURST):  # the host's own address, 127.0.0.1, uses up its burst
        httpx.get(limited.url + "/healthz", timeout=10)
        httpx.post(limited.url + "/api/v1/manifests", content=b"{", timeout=10)
    report = deliver(chain.spool, limited.url, ready=chain.deliverable, deadline_seconds=1.0)
    assert (report.delivered, report.rejected, report.remaining) == (0, 0, 3)
    assert "429" in (report.stopped or "")
    assert chain.spool.rejected() == []
    time.sleep(10)  # one token at 6 a minute: one batch of all three
    report = deliver(chain.spool, limited.url, ready=chain.deliverable, deadline_seconds=5.0)
    assert (report.delivered, report.rejected, report.remaining) == (3, 0, 0)
