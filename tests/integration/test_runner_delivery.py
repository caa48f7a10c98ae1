"""Delivery to a loopback reporter: per-item outcomes, bounded time when the reporter is away."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bk_evidence import manifest, sshsig
from bk_evidence.chain import Chain
from bk_evidence.delivery import DeliveryReport, deliver, reachable
from bk_evidence.spool import Spool
from support.fake_reporter import FakeReporter
from support.keys import make_key, public_line
from support.net import dropping_listener, hanging_up_listener, refusing_port, silent_listener


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Chain, Path]:
    key = make_key(tmp_path, "ed25519")
    chain = Chain(str(tmp_path / "state"), "web1", Spool(str(tmp_path / "spool")))
    return chain, key


def append(chain: Chain, key: Path, count: int = 1) -> list[dict]:
    now = manifest.utc_now()
    return [
        chain.append(manifest.new_manifest("backup", "success", now, now), lambda data: sshsig.sign(data, str(key)))
        for _index in range(count)
    ]


def deliver_to_a_fake_reporter(
    chain: Chain, key: Path, *, force_status: int | None = None, max_items: int | None = None, **options: Any
) -> DeliveryReport:
    """One delivery of the outbox to a fake reporter that knows web1's key and answers as told."""
    with FakeReporter({"web1": [public_line(key)]}) as reporter:
        reporter.force_status, reporter.max_items = force_status, max_items
        return deliver(chain.spool, reporter.url, **options)


def test_delivers_oldest_first_and_empties_the_outbox(setup: tuple[Chain, Path]) -> None:
    chain, key = setup
    append(chain, key, 5)
    with FakeReporter({"web1": [public_line(key)]}) as reporter:
        report = deliver(chain.spool, reporter.url, ready=chain.deliverable)
        assert (report.delivered, report.rejected, report.remaining, report.stopped) == (5, 0, 0, None)
        assert [doc["seq"] for doc in reporter.manifests()] == [1, 2, 3, 4, 5]
    assert chain.spool.pending() == []


def test_a_retry_of_stored_bytes_is_accepted(setup: tuple[Chain, Path]) -> None:
    chain, key = setup
    (envelope,) = append(chain, key)
    with FakeReporter({"web1": [public_line(key)]}) as reporter:
        deliver(chain.spool, reporter.url)
        chain.spool.put(envelope, 1, json.loads(envelope["manifest"])["id"])
        report = deliver(chain.spool, reporter.url)
    assert report.delivered == 1 and chain.spool.pending() == []


def test_client_errors_move_to_rejected_and_say_so(
    setup: tuple[Chain, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    chain, key = setup
    append(chain, key, 3)
    stranger = make_key(tmp_path, "stranger")
    now = manifest.utc_now()
    Chain(str(tmp_path / "other-state"), "web2", chain.spool).append(
        manifest.new_manifest("backup", "success", now, now), lambda data: sshsig.sign(data, str(stranger))
    )
    (tmp_path / "spool" / "outbox" / "000000000009-garbage.json").write_text("{not json")
    report = deliver_to_a_fake_reporter(chain, key)
    assert (report.delivered, report.rejected, report.remaining) == (3, 2, 0)
    rejected = chain.spool.rejected()
    assert len(rejected) == 2
    reasons = sorted(path.with_suffix(".reason").read_text() for path in rejected)
    assert reasons[0].startswith("401 bad_signature")
    assert reasons[1].startswith("unreadable spool file")
    assert "MANIFEST REJECTED" in capsys.readouterr().err


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_server_trouble_keeps_everything_within_the_deadline(setup: tuple[Chain, Path], status: int) -> None:
    chain, key = setup
    append(chain, key, 2)
    with FakeReporter({"web1": [public_line(key)]}) as reporter:
        reporter.force_status = status
        started = time.monotonic()
        report = deliver(chain.spool, reporter.url, deadline_seconds=1.0)
        elapsed = time.monotonic() - started
        assert reporter.requests >= 2, "transient answers are retried with backoff"
    assert report.remaining == 2 and report.delivered == 0 and report.stopped
    assert elapsed < 1.5


def test_an_unexpected_whole_request_answer_stops_without_rejecting(setup: tuple[Chain, Path]) -> None:
    chain, key = setup
    append(chain, key, 2)
    report = deliver_to_a_fake_reporter(chain, key, force_status=404)
    assert report.remaining == 2 and report.rejected == 0 and "404" in report.stopped


def test_too_large_batches_are_split(setup: tuple[Chain, Path]) -> None:
    chain, key = setup
    append(chain, key, 5)
    report = deliver_to_a_fake_reporter(chain, key, max_items=2)
    assert report.delivered == 5 and report.remaining == 0


def test_only_ready_envelopes_leave(setup: tuple[Chain, Path]) -> None:
    chain, key = setup
    append(chain, key, 3)
    report = deliver_to_a_fake_reporter(chain, key, ready=lambda doc: doc["seq"] != 2)
    assert report.delivered == 2 and [path.name[:12] for path in chain.spool.pending()] == ["000000000002"]


@pytest.mark.parametrize("endpoint", [refusing_port, silent_listener, dropping_listener, hanging_up_listener])
def test_an_absent_reporter_costs_at_most_the_deadline(setup: tuple[Chain, Path], endpoint: object) -> None:
    """The deadline (1 s) is shorter than one request's timeout (3 s): the deadline must win."""
    chain, key = setup
    append(chain, key, 2)
    with endpoint() as url:  # type: ignore[operator]
        started = time.monotonic()
        report = deliver(chain.spool, url, deadline_seconds=1.0)
        elapsed = time.monotonic() - started
    assert report.remaining == 2 and report.delivered == 0 and report.stopped
    assert elapsed < 2.0


@pytest.mark.parametrize("endpoint", [refusing_port, silent_listener, dropping_listener, hanging_up_listener])
def test_a_report_says_the_reporter_was_out_of_reach(setup: tuple[Chain, Path], endpoint: object) -> None:
    """Timeouts, refused and reset connections mark the report unreachable (bk-run then skips its later attempt)."""
    chain, key = setup
    append(chain, key)
    with endpoint() as url:  # type: ignore[operator]
        report = deliver(chain.spool, url, deadline_seconds=1.0)
    assert report.unreachable and report.remaining == 1


def test_a_reporter_that_answers_is_not_out_of_reach(setup: tuple[Chain, Path]) -> None:
    chain, key = setup
    append(chain, key)
    report = deliver_to_a_fake_reporter(chain, key, force_status=503, deadline_seconds=1.0)
    assert report.stopped and not report.unreachable


def test_reachable_is_a_bounded_tcp_probe() -> None:
    with refusing_port() as url:
        assert not reachable(url, 1.0)
    with dropping_listener() as url:
        assert not reachable(url, 0.5)
    with silent_listener() as url:
        assert reachable(url, 1.0)
