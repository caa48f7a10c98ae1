"""The pages' logic without a database: filters and cursors, chain verdicts, re-verification, units."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bk_evidence import sshsig
from bk_reporter.web.charts import Point, line_chart
from bk_reporter.web.pages import (
    BadRequest,
    Cursor,
    Filters,
    link_checks,
    page_number,
    pretty_manifest,
    verify_now,
)
from bk_reporter.web.routes import install_pages
from bk_reporter.web.security import CONTENT_SECURITY_POLICY, PageAuth
from bk_reporter.web.timefmt import absolute_tag, duration, time_tag
from bk_reporter.web.units import size

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_filters_read_and_write_query_strings() -> None:
    filters = Filters.from_query({"state": "stale", "group": "db", "page": "3"})
    assert filters == Filters(state="stale", group="db", job=None, page=3)
    assert filters.url(page=4) == "/?state=stale&group=db&page=4"
    assert filters.url(state=None) == "/?group=db"  # a changed filter starts again at page 1
    assert Filters().url() == "/"
    assert Filters.from_query({"group": "a&b"}).url() == "/?group=a%26b"


@pytest.mark.parametrize(
    "params", [{"state": "sleepy"}, {"page": "0"}, {"page": "two"}, {"group": "x" * 201}, {"job": "a\x00b"}]
)
def test_unusable_filters_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        Filters.from_query(params)


def test_page_numbers() -> None:
    assert page_number({}) == 1
    assert page_number({"page": "7"}) == 7
    for bad in ("0", "-1", "1.5", "100001"):
        with pytest.raises(BadRequest):
            page_number({"page": bad})


def test_timeline_cursor_round_trips_to_the_microsecond() -> None:
    cursor = Cursor(datetime(2026, 11, 20, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4())
    assert Cursor.parse(cursor.token()) == cursor
    assert Cursor.parse(None) is None
    for token in ("nonsense", "12.not-a-uuid", f"x.{uuid.uuid4()}"):
        with pytest.raises(BadRequest):
            Cursor.parse(token)


def _event(**changes: Any) -> dict[str, Any]:
    row = {
        "seq": 5,
        "prev": "a" * 64,
        "sha256": "b" * 64,
        "previous_id": uuid.uuid4(),
        "previous_sha256": "a" * 64,
        "next_id": uuid.uuid4(),
        "next_prev": "b" * 64,
        "chain_last_seq": 9,
    }
    return row | changes


def marks(row: dict[str, Any]) -> list[str]:
    return [check.mark for check in link_checks(row)]


def test_link_checks_name_what_holds_and_what_does_not() -> None:
    assert marks(_event()) == ["ok", "ok"]
    assert marks(_event(previous_sha256="c" * 64)) == ["bad", "ok"]  # a fork before
    assert marks(_event(next_prev="c" * 64)) == ["ok", "bad"]  # a fork after
    assert marks(_event(previous_id=None)) == ["warn", "ok"]  # a gap before
    assert marks(_event(next_id=None)) == ["ok", "warn"]  # a gap after
    assert marks(_event(next_id=None, chain_last_seq=5)) == ["ok", "ok"]  # the newest
    assert marks(_event(seq=1, prev=None)) == ["ok", "ok"]
    assert marks(_event(seq=1)) == ["bad", "ok"]  # seq 1 naming a predecessor


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    key = tmp_path_factory.mktemp("key") / "host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    manifest = '{"host":"web-01","seq":1}'
    return {
        "manifest": manifest,
        "signature": sshsig.sign(manifest.encode(), str(key)),
        "public_key": " ".join(Path(f"{key}.pub").read_text().split()[:2]),
    }


def test_stored_signatures_are_verified_again(signed: dict[str, Any]) -> None:
    assert verify_now(signed).mark == "ok"
    assert verify_now(signed | {"manifest": signed["manifest"].replace("1", "2")}).mark == "bad"
    assert verify_now(signed | {"public_key": None}).mark == "bad"


def test_the_manifest_is_indented_for_reading() -> None:
    assert pretty_manifest('{"a":{"b":"<x>"}}') == '{\n  "a": {\n    "b": "<x>"\n  }\n}'


def test_sizes_and_durations_read_naturally() -> None:
    assert [size(n) for n in (0, 512, 1536, 23 * 2**20 + 2**19, 1.21 * 2**30, 3 * 2**50)] == [
        "0 B",
        "512 B",
        "1.50 KiB",
        "23.5 MiB",
        "1.21 GiB",
        "3.00 PiB",
    ]
    assert size(None) == "—"
    assert [duration(s) for s in (42, 252, 3900, None)] == ["42 s", "4 min 12 s", "1 h 5 min", "—"]


def test_time_tags_carry_the_utc_instant_for_the_viewers_zone() -> None:
    moment = datetime(2026, 11, 23, 13, 30, tzinfo=UTC) + timedelta(hours=-3)
    assert str(time_tag(moment, NOW)) == (
        '<time class="rel" datetime="2026-11-23T10:30:00+00:00" title="2026-11-23 10:30 UTC">1 h 30 min ago</time>'
    )
    assert 'class="abs"' in absolute_tag(moment) and ">2026-11-23 10:30 UTC<" in absolute_tag(moment)
    assert "never" in time_tag(None, NOW)


def test_chart_dots_can_be_marked_and_the_axis_labelled() -> None:
    svg = line_chart([Point(0, 1, "ok"), Point(1, 3, "failed", "fail")], title="Duration", x_labels=("a", "b"))
    assert svg.count("<circle") == 2 and 'class="fail"' in svg
    assert '<div class="axis"><span>a</span><span>b</span></div>' in svg
    assert "style=" not in svg  # the CSP allows no inline styles


def test_installed_pages_serve_their_static_files_under_the_policy() -> None:
    app = Starlette()
    install_pages(app, PageAuth())
    with TestClient(app) as client:
        for path, kind in (("/static/bk.css", "text/css"), ("/static/localtime.js", "javascript")):
            answer = client.get(path)
            assert answer.status_code == 200 and kind in answer.headers["content-type"]
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert client.get("/static/missing.css").status_code == 404
    protected = Starlette()
    install_pages(protected, PageAuth(bearer_token="t0ken"))
    with TestClient(protected) as client:
        assert client.get("/static/bk.css").status_code == 401
