"""The web UI's building blocks: SVG charts, page protection, time formatting."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bk_reporter.web.charts import Point, line_chart, sparkline
from bk_reporter.web.security import CONTENT_SECURITY_POLICY, PageAuth, PageProtection
from bk_reporter.web.timefmt import age, relative


def test_sparkline_spans_the_box_from_lowest_to_highest() -> None:
    svg = sparkline([5, 1, 9], width=100, height=20)
    coords = re.search(r'points="([^"]+)"', svg).group(1).split()
    ys = [float(c.split(",")[1]) for c in coords]
    assert ys[2] == 2.0  # highest value at the top (minus padding)
    assert ys[1] == 18.0  # lowest at the bottom
    assert [float(c.split(",")[0]) for c in coords] == [2.0, 50.0, 98.0]


def test_empty_and_flat_series_render_without_division_by_zero() -> None:
    assert "no data" in sparkline([])
    assert "points=" in sparkline([3, 3, 3])
    assert "no data yet" in line_chart([], title="Duration")


def test_line_chart_escapes_labels() -> None:
    svg = line_chart([Point(0, 1, "<b>x</b>"), Point(1, 2, "y")], title="T & <U>", unit="s")
    assert "<b>" not in svg
    assert "&lt;b&gt;x&lt;/b&gt;" in svg
    assert "T &amp; &lt;U&gt;" in svg
    assert "min 1s · max 2s" in svg


def _app(auth: PageAuth) -> TestClient:
    async def page(request: object) -> PlainTextResponse:
        return PlainTextResponse("page")

    routes = [Route("/", page), Route("/api/v1/manifests", page, methods=["GET", "POST"])]
    return TestClient(PageProtection(Starlette(routes=routes), auth))


def test_security_headers_on_every_answer_and_no_auth_by_default() -> None:
    answer = _app(PageAuth()).get("/")
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_basic_auth_protects_pages_but_never_ingest() -> None:
    client = _app(PageAuth(basic_user="owner", basic_password="s3cret"))
    assert client.get("/").status_code == 401
    good = base64.b64encode(b"owner:s3cret").decode()
    bad = base64.b64encode(b"owner:wrong").decode()
    assert client.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert client.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.post("/api/v1/manifests").status_code == 200


def test_bearer_token() -> None:
    client = _app(PageAuth(bearer_token="tok"))
    assert client.get("/", headers={"Authorization": "Bearer tok"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer other"}).status_code == 401
    assert client.get("/").headers["www-authenticate"].startswith("Bearer")


def test_ages_read_naturally() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert age(timedelta(seconds=42)) == "42 s"
    assert age(timedelta(hours=5, minutes=3)) == "5 h 3 min"
    assert age(timedelta(days=3)) == "3 d"
    assert relative(now - timedelta(days=2, hours=4), now) == "2 d 4 h ago"
    assert relative(now + timedelta(minutes=20), now) == "in 20 min"
    assert relative(None, now) == "never"
