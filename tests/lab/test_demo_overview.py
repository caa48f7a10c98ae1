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
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output"
URL = os.environ.get("BK_REPORTER_URL", "http://127.0.0.1:8080").rstrip("/")
EXPLICIT = "BK_REPORTER_URL" in os.environ
EXPECT = [h for h in os.environ.get("BK_EXPECT_HOSTS", "").split(",") if h]
SHOT = os.environ.get("BK_SCREENSHOT", "demo-overview.png")
OVERVIEW = os.environ.get("BK_OVERVIEW_PATH", "/")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Keys the reporter may use for the parts of a host/job entry this test reads.
SUCCESS_KEYS = ("last_success", "last_success_at", "last_successful_at")
CONFIRM_KEYS = ("confirmed", "hub_confirmed", "receipt_confirmed", "confirmed_by_hub")


def get_json(path: str) -> Any:
    with urllib.request.urlopen(URL + path, timeout=10) as answer:
        return json.loads(answer.read().decode("utf-8"))


@pytest.fixture(scope="module")
def hosts_api() -> Any:
    try:
        return get_json("/api/v1/hosts")
    except (urllib.error.URLError, OSError) as exc:
        if EXPLICIT:
            pytest.fail(f"the reporter at {URL} does not answer: {exc}")
        pytest.skip(f"no reporter at {URL} (start one with `make demo`)")


def entries(payload: Any) -> list[dict[str, Any]]:
    """Host entries of /api/v1/hosts: a list, or an object holding the list."""
    if isinstance(payload, dict):
        for key in ("hosts", "items", "data"):
            if isinstance(payload.get(key), list):
                return payload[key]
        return [dict(v, host=k) if isinstance(v, dict) else {"host": k} for k, v in payload.items()]
    return list(payload)


def host_name(entry: dict[str, Any]) -> str:
    return str(entry.get("host") or entry.get("name") or "")


def backup_jobs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The entry's backup jobs (entries may be per host with `jobs`, or per host and job)."""
    jobs = entry.get("jobs")
    rows = jobs if isinstance(jobs, list) else [entry]
    return [j for j in rows if (j.get("kind") or "backup") == "backup" and (j.get("job") or j.get("name"))]


def confirmed(job: dict[str, Any]) -> bool:
    succeeded = any(job.get(k) for k in SUCCESS_KEYS) or job.get("status") == "success"
    flags = [job[k] for k in CONFIRM_KEYS if k in job]
    return bool(succeeded and (all(bool(f) for f in flags) if flags else True))


def test_every_host_has_a_confirmed_backup(hosts_api: Any) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / (Path(SHOT).stem + "-hosts.json")).write_text(json.dumps(hosts_api, indent=2, sort_keys=True))
    by_host: dict[str, list[dict[str, Any]]] = {}
    for entry in entries(hosts_api):
        by_host.setdefault(host_name(entry), []).extend(backup_jobs(entry))
    expected = EXPECT or sorted(h for h, jobs in by_host.items() if jobs)
    assert expected, f"the reporter lists no host with a backup job: {hosts_api}"
    missing = [h for h in expected if h not in by_host]
    assert not missing, f"hosts missing from /api/v1/hosts: {missing}"
    unconfirmed = {h: by_host[h] for h in expected if not any(confirmed(j) for j in by_host[h])}
    assert not unconfirmed, f"hosts without a confirmed backup: {json.dumps(unconfirmed, default=str)[:2000]}"


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
    names = EXPECT or sorted(host_name(e) for e in entries(hosts_api) if backup_jobs(e))
    if "text/html" in (answer.headers.get("content-type") or ""):
        absent = [h for h in names if h not in body]
        assert not absent, f"the overview page does not show {absent}"
