"""Notifications over real protocols on loopback: a signed failing manifest is ingested by the live
reporter, the evaluator decides, Apprise delivers to an HTTP receiver (ntfy, JSON webhook) and to an
aiosmtpd SMTP server; the history is append-only and one evaluator runs at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller

from bk_reporter.notify import store
from bk_reporter.notify.channels import Route, send
from bk_reporter.notify.evaluator import backoff, evaluate_once
from bk_reporter.notify.lifecycle import Policy
from bk_reporter.pgcluster import LocalCluster
from support.keys import make_key
from support.net import free_port
from support.reporters import ReporterDatabase, enroll
from support.signing_hosts import SigningHost

NOW_POLICY = Policy(fire_after=timedelta(0))
CAUSE = "Fatal: unable to open config file: rest:https://bk:hunter2@hub.example:8000/web1/ connection refused"


@dataclass
class Received:
    posts: list[tuple[str, dict]] = field(default_factory=list)
    mails: list = field(default_factory=list)
    pings: list[str] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    arrived_at: list[float] = field(default_factory=list)

    def note(self) -> None:
        self.arrived_at.append(time.monotonic())
        self.arrived.set()


@pytest.fixture
def received() -> Received:
    return Received()


@pytest.fixture
def http_receiver(received: Received) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.posts.append((self.path, json.loads(body)))
            received.note()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_GET(self) -> None:
            received.pings.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp_receiver(received: Received) -> Iterator[int]:
    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            received.mails.append(envelope)
            received.note()
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
def routes(http_receiver: int, smtp_receiver: int) -> list[Route]:
    return [
        Route("ntfy", (f"ntfy://127.0.0.1:{http_receiver}/bk-alerts",)),
        Route("webhook", (f"json://127.0.0.1:{http_receiver}/hook",)),
        Route(
            "mail",
            (f"mailto://127.0.0.1:{smtp_receiver}?from=bk@example.org&to=ops@example.org",),
            severities=frozenset({"critical", "security"}),
        ),
    ]


def _ingest(reporter_url: str, host: SigningHost, **fields: object) -> float:
    envelope = host.envelope(**fields)  # signed by ssh-keygen before the clock starts
    started = time.monotonic()
    response = httpx.post(f"{reporter_url}/api/v1/manifests", json=envelope, timeout=30)
    assert response.status_code in (200, 201), response.text
    return started


def _failing(host: SigningHost) -> dict:
    return {"status": "failure", "snapshot": None, "stats": None, "error": {"exit_code": 1, "message": CAUSE}}


def _outcomes(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT route, kind, outcome FROM notification_delivery_state ORDER BY transition_id, route"
        ).fetchall()


def test_failing_manifest_is_told_once_with_its_scrubbed_cause_on_ntfy_webhook_and_email_then_recovers(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase, routes: list[Route], received: Received
):
    started = _ingest(reporter.url, web1, **_failing(web1))
    ingested = time.monotonic()
    result = evaluate_once(reporter_db.app_url, routes, datetime.now(UTC), policy=NOW_POLICY)
    evaluated = time.monotonic()
    assert result.evaluated and result.transitions == 1 and result.sent == 3 and result.failed == 0
    latency = max(received.arrived_at) - started
    print(
        f"failing manifest ingest -> last message received: {latency * 1000:.1f} ms (ingest answered"
        f" {(ingested - started) * 1000:.1f} ms, evaluation returned {(evaluated - started) * 1000:.1f} ms, arrivals"
        f" {[round((t - started) * 1000) for t in received.arrived_at]} ms)"
    )

    by_path = dict(received.posts)
    ntfy, hook = by_path["/"], by_path["/hook"]
    assert ntfy["topic"] == "bk-alerts"
    assert ntfy["title"] == hook["title"] == "[bk] PROBLEM: web1/home failing"
    for body in (ntfy["message"], hook["message"]):
        assert body.startswith("web1 job home: latest run failed: Fatal: unable to open config file")
        assert "connection refused" in body and "hunter2" not in body
    assert hook["type"] == "failure" and hook["version"] == "1.0"
    (mail,) = received.mails
    assert mail.mail_from == "bk@example.org" and mail.rcpt_tos == ["ops@example.org"]
    parsed = message_from_bytes(mail.content, policy=email_policy)
    assert parsed["Subject"] == "[bk] PROBLEM: web1/home failing"
    assert "hunter2" not in mail.content.decode()
    assert _outcomes(reporter_db.app_url) == [
        ("mail", "fire", "sent"),
        ("ntfy", "fire", "sent"),
        ("webhook", "fire", "sent"),
    ]

    again = evaluate_once(reporter_db.app_url, routes, datetime.now(UTC), policy=NOW_POLICY)
    assert (again.transitions, again.sent) == (0, 0)
    assert len(received.posts) == 2 and len(received.mails) == 1

    _ingest(reporter.url, web1)
    recovered = evaluate_once(reporter_db.app_url, routes, datetime.now(UTC), policy=NOW_POLICY)
    assert (recovered.transitions, recovered.sent) == (1, 3)
    assert {body["title"] for _path, body in received.posts[2:]} == {"[bk] RESOLVED: web1/home failing"}


def test_crash_between_send_and_record_repeats_the_message_never_drops_it(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase, routes: list[Route], received: Received
):
    _ingest(reporter.url, web1, **_failing(web1))
    webhook = [r for r in routes if r.name == "webhook"]

    def send_then_crash(route: Route, title: str, body: str, severity: str) -> str | None:
        send(route, title, body, severity)
        raise SystemExit("killed after sending, before recording")

    with pytest.raises(SystemExit):
        evaluate_once(reporter_db.app_url, webhook, datetime.now(UTC), policy=NOW_POLICY, sender=send_then_crash)
    assert _outcomes(reporter_db.app_url) == [("webhook", "fire", "pending")]
    result = evaluate_once(reporter_db.app_url, webhook, datetime.now(UTC), policy=NOW_POLICY)
    assert (result.transitions, result.sent) == (0, 1)
    assert [body["title"] for _path, body in received.posts] == ["[bk] PROBLEM: web1/home failing"] * 2
    assert _outcomes(reporter_db.app_url) == [("webhook", "fire", "sent")]


def test_a_failing_channel_is_retried_with_backoff_and_its_failure_is_recorded_masked(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase
):
    _ingest(reporter.url, web1, **_failing(web1))
    dead = [Route("dead", (f"json://bk:token123@127.0.0.1:{free_port()}/hook",))]
    now = datetime.now(UTC)
    first = evaluate_once(reporter_db.app_url, dead, now, policy=NOW_POLICY)
    assert (first.sent, first.failed) == (0, 1)
    assert "token123" not in " ".join(first.errors) and "json://***" in first.errors[0]
    assert evaluate_once(reporter_db.app_url, dead, now + backoff(1) / 2, policy=NOW_POLICY).failed == 0
    assert evaluate_once(reporter_db.app_url, dead, now + backoff(1), policy=NOW_POLICY).failed == 1
    with psycopg.connect(reporter_db.app_url) as conn:
        rows = conn.execute("SELECT attempt, outcome, error FROM notification_attempts ORDER BY id").fetchall()
    assert [(a, o) for a, o, _error in rows] == [(1, "pending"), (1, "failed"), (2, "failed")]
    assert all("token123" not in (error or "") for _attempt, _outcome, error in rows)


def test_two_evaluators_on_one_database_never_evaluate_at_once(reporter_db: ReporterDatabase):
    with psycopg.connect(reporter_db.app_url, autocommit=True) as other, store.evaluator_lock(other) as held:
        assert held
        assert evaluate_once(reporter_db.app_url, [], datetime.now(UTC)).evaluated is False
    assert evaluate_once(reporter_db.app_url, [], datetime.now(UTC)).evaluated is True


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE alert_transitions SET kind = 'recover'",
        "DELETE FROM alert_transitions",
        "UPDATE notification_attempts SET outcome = 'sent'",
        "DELETE FROM notification_attempts",
        "TRUNCATE alert_silences",
        "UPDATE alert_silences SET until = now()",
    ],
)
def test_the_application_role_cannot_rewrite_notification_history(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase, statement: str
):
    _ingest(reporter.url, web1, **_failing(web1))
    evaluate_once(
        reporter_db.app_url,
        [Route("dead", (f"json://127.0.0.1:{free_port()}/",))],
        datetime.now(UTC),
        policy=NOW_POLICY,
    )
    with psycopg.connect(reporter_db.app_url) as conn:
        store.add_silence(conn, "web1", "home", datetime.now(UTC) + timedelta(days=1), "rebuild")
    before = _history(reporter_db.owner_url)
    with psycopg.connect(reporter_db.app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)
    assert _history(reporter_db.owner_url) == before


def _history(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return tuple(
            conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("alert_transitions", "notification_attempts", "alert_silences")
        )


def _bk_reporter(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BK_REPORTER_")}
    command = [str(Path(sys.executable).parent / "bk-reporter"), *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_cli_notify_refuses_a_readable_routes_file_then_tells_pings_and_honours_a_cli_silence(
    tmp_path: Path, http_receiver: int, received: Received
):
    data_dir = Path(tempfile.mkdtemp(prefix="bk-notify-"))
    data_dir.chmod(0o755)
    try:
        for name in ("web1", "web2"):
            key = make_key(tmp_path, name)
            public = Path(f"{key}.pub").read_text().strip()
            assert _bk_reporter(data_dir, "hosts", "add", name, "--key", public).returncode == 0
        routes = tmp_path / "routes.yml"
        ping = f"http://127.0.0.1:{http_receiver}/ping/abc"
        routes.write_text(
            f"routes:\n  hook:\n    urls: ['json://127.0.0.1:{http_receiver}/hook']\nhealthcheck_url: {ping}\n"
        )
        routes.chmod(0o644)
        refused = _bk_reporter(data_dir, "notify", "--routes", str(routes), "--once")
        assert refused.returncode == 2 and "chmod 600" in refused.stderr
        assert received.posts == []

        past = _bk_reporter(data_dir, "silence", "web2", "--until", "2020-01-01")
        assert past.returncode == 2 and "in the past" in past.stderr
        silenced = _bk_reporter(data_dir, "silence", "web2", "--until", "2099-12-24", "--reason", "rebuild")
        assert silenced.returncode == 0, silenced.stderr
        routes.chmod(0o600)
        told = _bk_reporter(data_dir, "notify", "--routes", str(routes), "--once", "--fire-after", "0")
        assert told.returncode == 0, told.stderr
        assert [body["title"] for _path, body in received.posts] == ["[bk] PROBLEM: web1 never_reported"]
        assert received.pings == ["/ping/abc"]
    finally:
        LocalCluster.under(data_dir / "postgres").stop()
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)


def test_notifications_page_api_and_metrics_show_what_was_sent_and_what_failed(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase, routes: list[Route]
):
    _ingest(reporter.url, web1, **_failing(web1))
    dead = Route("dead", (f"json://127.0.0.1:{free_port()}/hook",))
    webhook = next(r for r in routes if r.name == "webhook")
    evaluate_once(reporter_db.app_url, [webhook, dead], datetime.now(UTC), policy=NOW_POLICY)
    with httpx.Client(base_url=reporter.url, timeout=30) as http:
        document = http.get("/api/v1/notifications").json()
        page = http.get("/notifications")
        metrics = http.get("/metrics").text
        refused = http.post("/notifications", data={"host": "web1"})
    outcomes = {(d["route"], d["outcome"], d["kind"]) for d in document["deliveries"]}
    assert outcomes == {("webhook", "sent", "fire"), ("dead", "failed", "fire")}
    (alert,) = document["alerts"]
    assert (alert["host"], alert["job"], alert["condition"], alert["kind"]) == ("web1", "home", "failing", "fire")
    assert page.status_code == 200 and 'data-route="dead" data-outcome="failed"' in page.text
    assert "delivery failed" in page.text
    assert 'bk_notifications_total{outcome="sent"} 1' in metrics
    assert 'bk_notifications_total{outcome="failed"} 1' in metrics
    assert "bk_notifications_undelivered 1" in metrics and "bk_alerts_firing 1" in metrics
    assert refused.status_code == 405


def test_several_clients_failing_to_reach_one_hub_are_one_grouped_message_not_one_per_client(
    reporter, reporter_db: ReporterDatabase, tmp_path: Path, routes: list[Route], received: Received
):
    clients = [SigningHost(f"web{n}", make_key(tmp_path, f"web{n}")) for n in range(1, 4)]
    for client in clients:
        enroll(reporter_db.owner_url, client)
        _ingest(reporter.url, client, **_failing(client))
    webhook = [r for r in routes if r.name == "webhook"]
    result = evaluate_once(reporter_db.app_url, webhook, datetime.now(UTC), policy=NOW_POLICY)
    assert (result.transitions, result.sent) == (4, 1)
    ((path, body),) = received.posts
    assert path == "/hook"
    assert body["title"] == "[bk] PROBLEM: hub.example:8000 hub_unreachable"
    assert "3 hosts affected: web1, web2, web3" in body["message"]
    with psycopg.connect(reporter_db.app_url) as conn:
        held = conn.execute("SELECT host FROM alert_current_state WHERE kind = 'held' ORDER BY host").fetchall()
    assert [host for (host,) in held] == ["web1", "web2", "web3"]


def test_a_backlog_after_a_day_away_is_judged_by_the_manifests_times_without_a_storm(
    reporter, reporter_db: ReporterDatabase, tmp_path: Path, routes: list[Route], received: Received
):
    recovered, broken = (SigningHost(name, make_key(tmp_path, name)) for name in ("web1", "web2"))
    for host in (recovered, broken):
        enroll(reporter_db.owner_url, host)
    # What the spools deliver when the reporter comes back: a day of manifests, oldest first.
    _ingest(reporter.url, recovered, ago=timedelta(hours=20), **_failing(recovered))
    # web1 backs up to a local repository: no hub receipt is expected of it.
    _ingest(reporter.url, recovered, ago=timedelta(hours=10), repository={"name": "local", "url": "/srv/restic/web1"})
    _ingest(reporter.url, broken, ago=timedelta(hours=20), **_failing(broken))
    webhook = [r for r in routes if r.name == "webhook"]
    result = evaluate_once(reporter_db.app_url, webhook, datetime.now(UTC), policy=Policy())
    assert (result.transitions, result.sent) == (1, 1)
    ((_path, body),) = received.posts
    assert body["title"] == "[bk] PROBLEM: web2/home failing"
    with psycopg.connect(reporter_db.app_url) as conn:
        (since,) = conn.execute("SELECT since FROM alert_current_state WHERE host = 'web2'").fetchone()
    assert timedelta(hours=19) < datetime.now(UTC) - since < timedelta(hours=21)


def test_a_hub_receipt_showing_a_nearly_full_disk_fires_one_hub_space_alert(
    reporter, reporter_db: ReporterDatabase, tmp_path: Path, routes: list[Route], received: Received
):
    hub = SigningHost("hub", make_key(tmp_path, "hub"))
    enroll(reporter_db.owner_url, hub)
    receipt = {
        "snapshots": [],
        "verified": "sha256",
        "disk": {"free_bytes": 3 * 2**30, "total_bytes": 100 * 2**30},
    }
    _ingest(
        reporter.url,
        hub,
        kind="hub-receipt",
        job=None,
        cadence_seconds=None,
        snapshot=None,
        stats=None,
        schema="bk.manifest/v1.1",
        repository={"name": "web1", "url": "rest:https://hub.example:8000/web1/"},
        receipt=receipt,
    )
    result = evaluate_once(reporter_db.app_url, routes, datetime.now(UTC), policy=NOW_POLICY)
    with psycopg.connect(reporter_db.app_url) as conn:
        firing = conn.execute(
            "SELECT host, condition FROM alert_current_state WHERE kind IN ('fire', 'repeat')"
        ).fetchall()
    assert ("hub", "hub_space") in firing
    assert any("3.0 % free" in body["message"] for _path, body in received.posts), received.posts
    assert result.failed == 0


def _conditions(url: str) -> dict[tuple[str, str], str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT host, condition, kind FROM alert_current_state").fetchall()
    return {(host, condition): kind for host, condition, kind in rows}


def test_a_host_whose_enrolled_key_signs_nothing_for_a_week_fires_silent_key(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase
):
    _ingest(reporter.url, web1)
    now = datetime.now(UTC)
    evaluate_once(reporter_db.app_url, [], now, policy=NOW_POLICY)
    assert ("web1", "silent_key") not in _conditions(reporter_db.app_url)
    evaluate_once(reporter_db.app_url, [], now + timedelta(days=8), policy=NOW_POLICY)
    assert _conditions(reporter_db.app_url)[("web1", "silent_key")] == "fire"


def test_refused_manifests_are_told_once_per_claimed_host_through_a_silence_then_recover(
    reporter, web1: SigningHost, reporter_db: ReporterDatabase, routes: list[Route], received: Received, tmp_path: Path
):
    stranger = SigningHost("web1", make_key(tmp_path, "stranger"))
    db1 = SigningHost("db1", make_key(tmp_path, "db1"))
    enroll(reporter_db.owner_url, db1)
    text = SigningHost("web2", db1.key).text()
    envelopes = [stranger.envelope(), stranger.envelope(), {"manifest": text, "signature": db1.sign(text)}]
    codes = [httpx.post(f"{reporter.url}/api/v1/manifests", json=e, timeout=30).json()["code"] for e in envelopes]
    assert codes == ["unknown_key", "unknown_key", "key_not_for_host"]
    with psycopg.connect(reporter_db.owner_url) as conn:
        times = dict(
            conn.execute(
                "SELECT claimed_host, array[min(received_at), max(received_at)] FROM refusals GROUP BY 1"
            ).fetchall()
        )
        store.add_silence(conn, "web1", "", datetime.now(UTC) + timedelta(days=1), "rebuild")  # not for this
    webhook = [r for r in routes if r.name == "webhook"]
    now = datetime.now(UTC)
    evaluate_once(reporter_db.app_url, webhook, now, policy=NOW_POLICY)
    told = {body["title"]: body for _path, body in received.posts if "refused" in body["title"]}
    assert sorted(told) == ["[bk] PROBLEM: web1 refused", "[bk] PROBLEM: web2 refused"]
    web1_body, web2_body = told["[bk] PROBLEM: web1 refused"], told["[bk] PROBLEM: web2 refused"]
    first, last = times["web1"]
    assert web1_body["message"] == (
        f"web1: 2 manifest(s) refused (unknown_key x2), first {first:%Y-%m-%d %H:%M:%S} UTC,"
        f" last {last:%Y-%m-%d %H:%M:%S} UTC, from 127.0.0.1"
    )
    first, last = times["web2"]
    assert web2_body["message"] == (
        f"web2: 1 manifest(s) refused (key_not_for_host x1), first {first:%Y-%m-%d %H:%M:%S} UTC,"
        f" last {last:%Y-%m-%d %H:%M:%S} UTC, from 127.0.0.1"
    )
    for body in (web1_body, web2_body):
        assert (body["type"], body["version"]) == ("failure", "1.0")
    with psycopg.connect(reporter_db.app_url) as conn:
        kinds = conn.execute(
            "SELECT host, kind, severity FROM alert_current_state WHERE condition = 'refused' ORDER BY host"
        ).fetchall()
    assert kinds == [("web1", "fire", "security"), ("web2", "fire", "security")]

    posts = len(received.posts)
    assert evaluate_once(reporter_db.app_url, webhook, now + timedelta(hours=1), policy=NOW_POLICY).sent == 0
    assert len(received.posts) == posts  # still within the window: no second message
    later = now + timedelta(hours=24, minutes=1)  # no refusal for either host in the last 24 h
    evaluate_once(reporter_db.app_url, webhook, later, policy=NOW_POLICY)
    resolved = sorted(body["title"] for _path, body in received.posts[posts:] if "refused" in body["title"])
    assert resolved == ["[bk] RESOLVED: web1 refused", "[bk] RESOLVED: web2 refused"]
