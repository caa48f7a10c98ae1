"""The reporter's overview shows every lab host with a confirmed backup.

Run against a running fleet: `make demo` runs it against http://127.0.0.1:8080, the
molecule scenario's verify against its own reporter container. It asserts on the
reporter's API (`GET /api/v1/hosts`) and saves a screenshot of the overview page taken
by headless Chromium under tests/output/.

Environment:
  BK_REPORTER_URL      the reporter's base URL (default http://127.0.0.1:8080). When it
                       is set explicitly, an unreachable reporter is a failure; otherwise
                       the test is skipped (no fleet is running).
  BK_EXPECT_HOSTS      comma-separated hosts that must show a confirmed backup (default:
                       every host the reporter lists with a backup job).
  BK_SCREENSHOT        file name of the screenshot under tests/output/ (default
                       demo-overview.png).
  BK_OVERVIEW_PATH     path of the overview page (default /).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from support.browser import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output"
URL = os.environ.get("BK_REPORTER_URL", "http://127.0.0.1:8080").rstrip("/")
EXPLICIT = "BK_REPORTER_URL" in os.environ
EXPECT = [h for h in os.environ.get("BK_EXPECT_HOSTS", "").split(",") if h]
SHOT = os.environ.get("BK_SCREENSHOT", "demo-overview.png")
OVERVIEW = os.environ.get("BK_OVERVIEW_PATH", "/")


def get_json(path: str) -> Any:
    with urllib.request.urlopen(URL + path, timeout=10) as answer:
        return json.loads(answer.read().decode("utf-8"))


@pytest.fixture(scope="module")
def hosts_api() -> dict[str, Any]:
    try:
        return get_json("/api/v1/hosts")
    except (urllib.error.URLError, OSError) as exc:
        if EXPLICIT:
            pytest.fail(f"the reporter at {URL} does not answer: {exc}")
        pytest.skip(f"no reporter at {URL} (start one with `make demo`)")


def backup_jobs(host: dict[str, Any]) -> list[dict[str, Any]]:
    return [job for job in host.get("jobs") or [] if job.get("kind") == "backup"]


def expected_hosts(hosts_api: dict[str, Any]) -> list[str]:
    return EXPECT or sorted(h["host"] for h in hosts_api["hosts"] if backup_jobs(h))


def test_every_host_has_a_confirmed_backup(hosts_api: dict[str, Any]) -> None:
    """Per host: a backup job whose last run succeeded, and its snapshot confirmed by a hub receipt."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    evidence: dict[str, Any] = {"hosts": hosts_api}
    by_host = {h["host"]: h for h in hosts_api["hosts"]}
    expected = expected_hosts(hosts_api)
    assert expected, f"the reporter lists no host with a backup job: {hosts_api}"
    missing = [h for h in expected if h not in by_host]
    assert not missing, f"hosts missing from /api/v1/hosts: {missing}"
    problems = []
    for name in expected:
        detail = get_json(f"/api/v1/hosts/{urllib.parse.quote(name)}")
        evidence[name] = detail
        received = {s["snapshot_id"] for s in detail.get("snapshots") or [] if s.get("received")}
        good = [
            job
            for job in backup_jobs(by_host[name])
            if job["last_status"] == "success"
            and job["last_success_at"]
            and job["state"] == "ok"
            and job["last_snapshot_id"] in received
        ]
        if not good:
            problems.append(
                f"{name}: no backup job with a successful, hub-confirmed last snapshot: {backup_jobs(by_host[name])}"
            )
        chain = by_host[name].get("chain") or {}
        if chain.get("missing") or chain.get("breaks"):
            problems.append(f"{name}: the reporter sees a broken chain: {chain}")
    (OUTPUT / (Path(SHOT).stem + "-hosts.json")).write_text(json.dumps(evidence, indent=2, sort_keys=True))
    assert not problems, "\n".join(problems)


def test_overview_screenshot(hosts_api: Any, tmp_path: Path) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / SHOT
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, ignore_https_errors=True)
            answer = page.goto(URL + OVERVIEW, wait_until="networkidle", timeout=30_000)
            assert answer is not None, f"no answer from {URL + OVERVIEW}"
            assert answer.status < 400, f"{URL + OVERVIEW} answered {answer.status}"
            page.screenshot(path=str(shot), full_page=True)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert shot.stat().st_size > 1000, "the screenshot is empty"
    names = expected_hosts(hosts_api)
    if "text/html" in (answer.headers.get("content-type") or ""):
        absent = [h for h in names if h not in body]
        assert not absent, f"the overview page does not show {absent}"
