"""The web pages in headless Chromium against a running reporter with the fixture fleet.

Every page must render without console errors, CSP violations or failed requests, show the
facts the fixture implies, offer no action, and leave a screenshot in tests/output/screenshots/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from bk_reporter.pgcluster import LocalCluster
from bk_reporter.web.pages import PAGE_SIZE, TIMELINE_PAGE
from bk_reporter.web.security import CONTENT_SECURITY_POLICY
from bk_reporter.web.timefmt import age
from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.reporters import LiveReporter, serving
from support.web_fleet import SCENARIOS, StoredFleet, stored_fleet

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[1] / "output" / "screenshots"
WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
VIEWER_ZONE = "Asia/Kolkata"  # +05:30 all year: the pages must show it, not UTC
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture(scope="module")
def fleet(pg_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> StoredFleet:
    return stored_fleet(pg_cluster, tmp_path_factory.mktemp("fleet-keys"))


@pytest.fixture(scope="module")
def reporter(fleet: StoredFleet) -> Iterator[LiveReporter]:
    with serving(fleet.database) as live:
        yield live


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    home = tmp_path_factory.mktemp("chromium-home")
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env)
        yield launched
        launched.close()


@dataclass
class Problems:
    """Everything a page must not produce: console errors and warnings, CSP violations, failed loads."""

    seen: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on(
            "console",
            lambda m: self.seen.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: self.seen.append(f"page error: {e}"))
        page.on("dialog", lambda d: self.seen.append(f"dialog: {d.message}"))
        page.on("requestfailed", lambda r: self.seen.append(f"request failed: {r.url}"))
        page.on("response", lambda r: self.seen.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)


Opener = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, reporter: LiveReporter) -> Iterator[Opener]:
    """Open a page in a fresh browser context (viewer in VIEWER_ZONE), screenshot it, check it stayed clean."""
    contexts = []
    problems = Problems()

    def open_(path: str, shot: str, viewport: dict[str, int] | None = None) -> Page:
        context = browser.new_context(viewport=viewport or WIDE, timezone_id=VIEWER_ZONE, locale="en-US")
        contexts.append(context)
        context.add_init_script(WATCH_CSP)
        page = context.new_page()
        problems.watch(page)
        answer = page.goto(reporter.url + path, wait_until="networkidle")
        assert answer is not None and answer.status == 200, f"{path} answered {answer and answer.status}"
        problems.seen.extend(f"CSP violation: {v}" for v in page.evaluate("window.__csp"))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)
        assert page.locator("button, input, select, textarea, form").count() == 0, f"{path} offers an action"
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems.seen == []


def rows(page: Page, selector: str) -> list[dict[str, str]]:
    return page.eval_on_selector_all(selector, "rows => rows.map(r => ({...r.dataset, text: r.innerText}))")


# -- the fleet overview ---------------------------------------------------------------------


def test_overview_counts_every_state_and_lists_worst_first(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page("/", "overview")
    chips = {name: int(page.locator(f".chips a.s-{name} b").inner_text()) for name in ("stale", "missing", "failing")}
    assert chips == {"stale": 1, "missing": len(SCENARIOS.missing), "failing": 2}
    for state in ("gap", "unconfirmed", "late", "ok"):
        assert int(page.locator(f".chips a.s-{state} b").inner_text()) >= 1, state
    listed = rows(page, "table.fleet tbody tr")
    assert len(listed) == PAGE_SIZE
    ranks = [("stale", "missing", "failing", "gap", "unconfirmed", "late", "ok").index(r["state"]) for r in listed]
    assert ranks == sorted(ranks), "not worst first"
    assert listed[0]["host"] == SCENARIOS.stale


def test_a_stale_host_is_listed_as_stale_with_its_age(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page("/?state=stale", "overview-stale")
    (row,) = rows(page, "table.fleet tbody tr")
    assert row["host"] == SCENARIOS.stale and row["state"] == "stale"
    assert fleet.facts.stale_last_success is not None
    silent_for = age(datetime.now(UTC) - fleet.facts.stale_last_success)
    assert silent_for.startswith("5 d")
    assert f"no success for {silent_for}" in row["text"]
    assert f"{silent_for} ago" in row["text"]


def test_overview_filters_by_state_group_and_job(open_page: Opener) -> None:
    gaps = rows(open_page("/?state=gap", "overview-gap"), "table.fleet tbody tr")
    assert {r["host"] for r in gaps} == {SCENARIOS.gap, SCENARIOS.fork}
    assert any("3 manifests missing" in r["text"] for r in gaps if r["host"] == SCENARIOS.gap)
    assert any("1 broken link" in r["text"] for r in gaps if r["host"] == SCENARIOS.fork)
    group = rows(open_page("/?group=db", "overview-group-db"), "table.fleet tbody tr")
    assert group and {r["host"][:3] for r in group} == {"db-"}
    job = rows(open_page("/?job=postgres", "overview-job-postgres"), "table.fleet tbody tr")
    assert [(r["host"], "postgres" in r["text"]) for r in job] == [("db-01", True)]


def test_overview_pages_through_every_row(open_page: Opener) -> None:
    first = open_page("/", "overview-page-1")
    total = int(first.locator(".chips a.chip b").first.inner_text())
    first.locator(".pager a[rel=next]").click()
    first.wait_for_load_state("networkidle")
    assert first.url.endswith("/?page=2")
    second = rows(first, "table.fleet tbody tr")
    assert len(second) == total - PAGE_SIZE
    assert second[-1]["state"] == "ok"


def test_overview_fits_a_phone(open_page: Opener) -> None:
    page = open_page("/", "overview-phone", PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator("table.fleet thead").is_hidden()  # rows become cards
    assert page.locator("table.fleet tbody tr").first.is_visible()


def test_times_are_shown_in_the_viewers_time_zone(open_page: Opener) -> None:
    page = open_page("/?state=late", "overview-late")
    absolute = page.locator("table.fleet time.abs").first
    assert "GMT+5:30" in absolute.inner_text()
    relative = page.locator("table.fleet time.rel").first
    assert relative.inner_text() == "1 d 9 h ago"  # the late host's last success, 33 h before
    assert "GMT+5:30" in (relative.get_attribute("title") or "")


# -- the host page --------------------------------------------------------------------------


def test_host_page_shows_the_gap_on_the_right_host(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page(f"/hosts/{SCENARIOS.gap}", "host-gap")
    assert page.locator("h1 .state").inner_text() == "gap"
    first, last = fleet.facts.gap_seqs
    assert page.locator("ul.gaps li").all_inner_texts() == [
        f"seq {first}\N{EN DASH}{last} (3 manifests withheld, lost or not yet delivered)"
    ]
    assert page.locator("ul.unclaimed li").count() >= 1  # the hub received snapshots that no stored manifest claims
    intact = open_page("/hosts/web-01", "host-intact")
    assert "Intact: seq 1 to" in intact.locator("section.chain").inner_text()


def test_host_page_shows_the_fork(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page(f"/hosts/{SCENARIOS.fork}", "host-fork")
    breaks = page.locator("table.breaks tbody tr")
    assert breaks.count() == 1
    assert breaks.first.locator("td").first.inner_text() == f"seq {fleet.facts.fork_seq}"


def test_host_page_lineage_marks_each_confirmation(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page(f"/hosts/{SCENARIOS.unconfirmed}", "host-unconfirmed")
    lineage = rows(page, "table.lineage tbody tr")
    newest, older = lineage[0], lineage[1:]
    assert newest["snapshot"] == fleet.facts.unconfirmed_snapshot
    assert "no receipt yet" in newest["text"]
    assert older and all("✓ hub-01" in r["text"] for r in older)
    assert any("✓ b2-eu" in r["text"] for r in older)


def test_host_page_shows_drills_and_trends(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page(f"/hosts/{SCENARIOS.failed_drill}", "host-drills")
    failed = page.locator("table.drills tbody tr").first
    assert "failure" in failed.inner_text()
    assert failed.locator("td[data-label=Mismatches]").inner_text() == str(fleet.facts.failed_drill_mismatches)
    assert failed.locator("code.path").count() == fleet.facts.failed_drill_mismatches
    assert page.locator("table.drills tbody tr.drill-success").count() >= 5
    charts = page.locator("figure.chart svg polyline")
    assert charts.count() == 6  # duration, data added, files changed for each of its two backup jobs


def _timeline_rows(page: Page) -> list[tuple[str, int]]:
    """(finished_at, seq) of each timeline row; finished_at as the <time> element's ISO value."""
    times = page.locator("table.timeline td[data-label=Finished] time.abs").evaluate_all(
        "els => els.map(e => e.getAttribute('datetime'))"
    )
    seqs = [int(s) for s in page.locator("table.timeline td[data-label=Seq]").all_inner_texts()]
    return list(zip(times, seqs, strict=True))


def test_host_timeline_pages_newest_first(open_page: Opener) -> None:
    page = open_page("/hosts/web-01", "host-timeline")
    first = _timeline_rows(page)
    assert len(first) == TIMELINE_PAGE
    first_times = [finished for finished, seq in first]
    assert first_times == sorted(first_times, reverse=True)
    page.locator("#timeline .pager a[rel=next]").click()
    page.wait_for_load_state("networkidle")
    older = _timeline_rows(page)
    assert older and older[0][0] <= first[-1][0]
    assert not {seq for finished, seq in first} & {seq for finished, seq in older}


def test_host_page_on_a_phone(open_page: Opener) -> None:
    page = open_page(f"/hosts/{SCENARIOS.unconfirmed}", "host-phone", PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


# -- stale and missing ----------------------------------------------------------------------


def test_overdue_page_says_by_how_much_and_who_never_reported(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page("/overdue", "overdue")
    overdue = {r["host"]: r for r in rows(page, "table.overdue tbody tr")}
    assert set(overdue) == {SCENARIOS.stale, SCENARIOS.late}
    assert page.locator("h2 .count").all_inner_texts() == ["2", str(len(SCENARIOS.missing))]
    assert overdue[SCENARIOS.stale]["state"] == "stale"
    assert "4 d 2 h" in overdue[SCENARIOS.stale]["text"]  # daily cadence, silent for 5 d 2 h
    assert overdue[SCENARIOS.late]["state"] == "late"
    assert re.search(r"\b9 h", overdue[SCENARIOS.late]["text"])  # due 24 h after a run 33 h ago
    never = [r["host"] for r in rows(page, "table.never tbody tr")]
    assert sorted(never) == sorted(SCENARIOS.missing)
    page.locator("table.never a.host").first.click()
    page.wait_for_load_state("networkidle")
    assert page.locator("h1 .state").inner_text() == "missing"
    assert "No signed manifest from" in page.locator("section.never").inner_text()


# -- one event ------------------------------------------------------------------------------


def test_event_page_shows_the_manifest_escaped_and_who_signed_it(open_page: Opener, fleet: StoredFleet) -> None:
    page = open_page(f"/events/{fleet.facts.failing_event_id}", "event-failure")
    assert page.locator("dd code.fp").inner_text() == fleet.facts.fingerprints[SCENARIOS.failing]
    assert "Verified on receipt" in page.locator("p.verified").inner_text()
    assert page.locator("p.check .m-ok").count() == 1
    manifest = page.locator("pre.manifest").inner_text()
    assert "<script>alert('x')</script>" in manifest  # shown as text: the dialog watcher saw nothing run
    assert f'"host": "{SCENARIOS.failing}"' in manifest
    assert page.locator("ul.checks .m-ok").count() == 2  # links back to seq - 1; newest of its chain


def test_event_page_of_a_forked_manifest(open_page: Opener) -> None:
    page = open_page(f"/hosts/{SCENARIOS.fork}", "host-fork-again")
    page.locator("table.breaks a").click()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SCREENSHOTS / "event-fork.png"), full_page=True)
    assert page.locator("ul.checks .m-bad").count() == 1
    assert "a fork or a rewritten history" in page.locator("ul.checks").inner_text()
    assert page.locator("p.check .m-ok").count() == 1  # forked, but signed by the host's enrolled key


# -- answers without a browser --------------------------------------------------------------


def test_pages_send_the_strict_policy_and_refuse_bad_input(reporter: LiveReporter) -> None:
    with httpx.Client(base_url=reporter.url, timeout=30) as client:
        for path in ("/", "/overdue", "/hosts/web-01", "/static/bk.css"):
            assert client.get(path).headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert client.get("/hosts/no-such-host").status_code == 404
        assert client.get("/events/not-a-uuid").status_code == 404
        assert client.get("/events/00000000-0000-4000-8000-000000000000").status_code == 404
        assert client.get("/?state=sleepy").status_code == 400
        assert client.get("/?page=0").status_code == 400
        assert client.get("/overdue?page=-1").status_code == 400
        assert client.get("/hosts/web-01?before=nonsense").status_code == 400
        assert "db;dur=" in client.get("/").headers["server-timing"]
