"""Slow clients cannot exhaust the reporter: headers and bodies that drip in are cut off.

The attack: hundreds of loopback connections that each send one byte every second, some
within the request headers (of a first request, or of the next one on a kept-alive connection),
some within an ingest body, while the pages and /healthz are asked for. Every loop here is
bounded; the drip stops by itself.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx

from support.reporters import ReporterDatabase, reporter_process

HEADER_DRIPPERS = 400
NEXT_HEADER_DRIPPERS = 20
BODY_DRIPPERS = 20
TIMEOUT_SECONDS = 3
DRIP_ROUNDS = 10  # one byte a second per connection: well past both timeouts
ANSWER_WITHIN_SECONDS = 3.0


def _open(port: int, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first_bytes)
    sock.setblocking(False)
    return sock


def _open_after_one_answer(port: int) -> socket.socket:
    """A kept-alive connection that was answered once and is now sending its next request's headers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: reporter\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, body = answer.split(b"\r\n\r\n", 1)
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    sock.sendall(b"GET / HTTP/1.1\r\nHost: reporter\r\nX-Slow: ")
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (or answered, then closed it)."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 408")


def _drip(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.send(b"x")


def test_dripping_clients_are_cut_off_while_pages_and_health_still_answer(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    settings = {"header_timeout_seconds": str(TIMEOUT_SECONDS), "body_timeout_seconds": str(TIMEOUT_SECONDS)}
    with reporter_process(reporter_db, tmp_path, **settings) as reporter:
        header_drippers = [
            _open(reporter.port, b"GET / HTTP/1.1\r\nHost: reporter\r\nX-Slow: ") for _dripper in range(HEADER_DRIPPERS)
        ]
        header_drippers += [_open_after_one_answer(reporter.port) for _dripper in range(NEXT_HEADER_DRIPPERS)]
        body_drippers = [
            _open(
                reporter.port,
                b"POST /api/v1/manifests HTTP/1.1\r\nHost: reporter\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{",
            )
            for _dripper in range(BODY_DRIPPERS)
        ]
        slowest_answer = 0.0
        try:
            for _round in range(DRIP_ROUNDS):
                for sock in header_drippers + body_drippers:
                    _drip(sock)
                for path in ("/healthz", "/"):
                    started = time.monotonic()
                    response = httpx.get(reporter.url + path, timeout=ANSWER_WITHIN_SECONDS * 2)
                    slowest_answer = max(slowest_answer, time.monotonic() - started)
                    assert response.status_code == 200, (path, response.status_code)
                time.sleep(1)
            still_open_headers = [sock for sock in header_drippers if not _closed_by_server(sock)]
            still_open_bodies = [sock for sock in body_drippers if not _closed_by_server(sock)]
        finally:
            for sock in header_drippers + body_drippers:
                sock.close()
        log = reporter.log.read_text()

    assert slowest_answer < ANSWER_WITHIN_SECONDS
    assert (len(still_open_headers), len(still_open_bodies)) == (0, 0)
    assert '"code": "body_timeout"' in log
