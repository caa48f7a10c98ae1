"""Secrets never leak: the real runner (`bk-run`, real restic, an append-only `rclone serve restic`
hub on loopback) delivers to a real reporter process, with known secret values: the repository
passwords and the hub credential (also a wrong one). Runs include failures whose stderr carries
the password and the credentialed URL. Then everything captured is searched for the secrets: the
runner's stdout and stderr, its state and spool files, the reporter's log, every row of every
table (the manifests and signatures as stored), and what the API, metrics and pages show.

The molecule scenario checks the lab's ansible output and journals the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest

from bk_reporter import hosts
from support.database import table_snapshot
from support.hubs import append_only_hub
from support.keys import public_line
from support.reporters import ReporterDatabase, reporter_process
from support.runner_hosts import RunnerHost, initialized_repository
from support.tools import RESTIC

pytestmark = pytest.mark.skipif(
    not (os.path.exists(RESTIC) and shutil.which("rclone")), reason="restic and rclone are needed"
)


def hits(secret_values: list[str], captured: dict[str, str]) -> list[str]:
    return [
        f"{source}: {value[:6]}..." for source, text in captured.items() for value in secret_values if value in text
    ]


def files_under(*roots: Path) -> dict[str, str]:
    return {str(path): path.read_text(errors="replace") for root in roots for path in root.rglob("*") if path.is_file()}


def hub_repository(host: RunnerHost, url: str, name: str, password: str) -> dict[str, str]:
    """A job's repository entry: a repository file holding the credentialed URL, a password file."""
    location, password_file = host.root / f"{name}.repository", host.root / f"{name}.password"
    location.write_text(url + "\n")
    password_file.write_text(password + "\n")
    for path in (location, password_file):
        path.chmod(0o600)
    return {"name": name, "repository_file": str(location), "password_file": str(password_file)}


def reporter_views(url: str) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=60) as client:
        paths = ["/api/v1/hosts", "/api/v1/hosts/web1", "/api/v1/events?limit=1000", "/metrics", "/", "/hosts/web1"]
        views = {path: client.get(path).text for path in paths}
        for event in json.loads(views["/api/v1/events?limit=1000"])["events"]:
            for path in (f"/api/v1/events/{event['id']}", f"/events/{event['id']}"):
                views[path] = client.get(path).text
    return views


def test_no_secret_reaches_any_output(reporter_db: ReporterDatabase, tmp_path: Path) -> None:
    repository_password, hub_password, wrong_hub_password = (f"s3cr3t-{secrets.token_hex(10)}" for _n in range(3))
    for directory in ("template", "web1", "hub"):
        (tmp_path / directory).mkdir()
    host = RunnerHost(tmp_path / "web1", initialized_repository(tmp_path / "template"))
    with psycopg.connect(reporter_db.owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key("web1", public_line(host.key))])
    with (
        append_only_hub(tmp_path / "hub", password=hub_password) as hub_url,
        reporter_process(reporter_db, tmp_path, log_level="debug") as reporter,
    ):
        good = hub_repository(host, hub_url, "hub", repository_password)
        restic_env = dict(os.environ, RESTIC_PASSWORD_FILE=good["password_file"])
        restic_env["RESTIC_REPOSITORY_FILE"] = good["repository_file"]
        subprocess.run([RESTIC, "init", "-q"], env=restic_env, check=True, capture_output=True)
        bad = hub_repository(host, hub_url.replace(hub_password, wrong_hub_password), "badhub", repository_password)
        host.settings(reporter_url=reporter.url)
        host.job("home", repositories=[good])
        leak = f"echo leaked: $(cat {good['password_file']}) $(cat {good['repository_file']}); "
        host.job("leaky", repositories=[good], pre=[leak + leak.replace("echo", "echo >&2") + "exit 4"])
        host.job("broken", repositories=[bad])
        runs = {
            "backup home": host.run("backup", "home"),
            "backup leaky": host.run("backup", "leaky"),
            "backup broken": host.run("backup", "broken"),
            "status": host.run("status"),
        }
        views = reporter_views(reporter.url)
    assert [runs[name].returncode for name in ("backup home", "backup leaky", "backup broken")] == [0, 1, 1]
    events = json.loads(views["/api/v1/events?limit=1000"])["events"]
    assert len(events) == 3, "every run's manifest reached the reporter"
    leaky = next(json.loads(views[f"/api/v1/events/{e['id']}"]) for e in events if e.get("job") == "leaky")
    assert "***" in json.dumps(leaky), "the failing pre command's stderr, masked, is in its manifest"

    captured: dict[str, str] = {}
    for name, run in runs.items():
        captured[f"bk-run {name} stdout"], captured[f"bk-run {name} stderr"] = run.stdout, run.stderr
    captured |= files_under(host.root / "state", host.root / "spool")
    captured["restic output"] = host.restic_log.read_text() if host.restic_log.exists() else ""
    captured["reporter log"] = reporter.log.read_text()
    captured |= {
        f"table {name}": "\n".join(rows) for name, rows in table_snapshot(reporter_db.owner_url, without=()).items()
    }
    captured |= {f"GET {path}": text for path, text in views.items()}
    secret_values = [repository_password, hub_password, wrong_hub_password]
    assert hits(secret_values, files_under(host.root)), "the search finds secrets where they are meant to be"
    assert hits(secret_values, captured) == []
