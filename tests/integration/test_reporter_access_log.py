"""Every request leaves one access-log line: who asked what and the answer, never a body."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from support.signing_hosts import SigningHost

ACCESS_LOGGER = "bk_reporter.access"
FIELDS = ("method", "path", "status", "client", "code")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        {name: getattr(record, name) for name in FIELDS} for record in caplog.records if record.name == ACCESS_LOGGER
    ]


def test_each_request_is_logged_with_its_refusal_code_and_never_its_body(
    client: httpx.Client, web1: SigningHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    accepted = web1.envelope()
    forged_text = web1.text(job="secret-job-name")
    forged = {"manifest": forged_text, "signature": accepted["signature"]}

    assert client.post("/api/v1/manifests", json=accepted).status_code == 201
    assert client.post("/api/v1/manifests", json=forged).status_code == 401
    assert client.get("/healthz?token=not-logged").status_code == 200
    assert client.get("/no-such-page").status_code == 404
    deadline = time.monotonic() + 5  # the line is written after the answer is sent: the client may be first
    while len(access_lines(caplog)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert access_lines(caplog) == [
        {"method": "POST", "path": "/api/v1/manifests", "status": 201, "client": "127.0.0.1", "code": "stored"},
        {"method": "POST", "path": "/api/v1/manifests", "status": 401, "client": "127.0.0.1", "code": "bad_signature"},
        {"method": "GET", "path": "/healthz", "status": 200, "client": "127.0.0.1", "code": None},
        {"method": "GET", "path": "/no-such-page", "status": 404, "client": "127.0.0.1", "code": None},
    ]
    everything_logged = "\n".join(
        json.dumps(vars(record), default=str) for record in caplog.records if record.name == ACCESS_LOGGER
    )
    for secret in ("secret-job-name", "not-logged", "BEGIN SSH SIGNATURE", accepted["manifest"][:40]):
        assert secret not in everything_logged
