"""A separate ingest listener lets hosts deliver while the pages stay behind credentials."""

from __future__ import annotations

from pathlib import Path

import httpx

from support.keys import make_key
from support.net import free_port
from support.reporters import ReporterDatabase, enroll, reporter_process
from support.signing_hosts import SigningHost

TOKEN = "page-t0ken-for-the-test"


def test_the_ingest_listener_serves_ingest_and_health_and_nothing_else(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    web1 = SigningHost("web1", make_key(tmp_path, "web1"))
    enroll(reporter_db.owner_url, web1)
    ingest_port = free_port()
    with reporter_process(
        reporter_db, tmp_path, ingest_listen=f"127.0.0.1:{ingest_port}", page_bearer_token=TOKEN
    ) as reporter:
        ingest = f"http://127.0.0.1:{ingest_port}"
        assert httpx.post(f"{ingest}/api/v1/manifests", json=web1.envelope(), timeout=30).status_code == 201
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{ingest}/healthz", headers=headers, timeout=10).status_code == 200
        # Even with the token, the ingest listener shows no page, API read or metrics.
        for path in ("/", "/api/v1/hosts", "/api/v1/events", "/metrics", "/hosts/web1"):
            assert httpx.get(ingest + path, headers=headers, timeout=10).status_code == 404, path
        assert httpx.get(reporter.url + "/", timeout=10).status_code == 401
        assert httpx.get(reporter.url + "/", headers=headers, timeout=10).status_code == 200
        log = reporter.log.read_text()
    assert '"code": "ingest_listener"' in log
