"""offsite_late on a real database (a snapshot at the hub but not yet at the destination it copies
to, for longer than cadence x factor), and the factor set in the inventory reaching `bk-reporter
notify`: the reporter role's notify-routes.yml rendered by ansible-playbook, read by the CLI."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import yaml

from bk_reporter.notify.alerts import Thresholds
from bk_reporter.notify.cli import TUNABLES
from bk_reporter.notify.evaluator import evaluate_once
from bk_reporter.notify.lifecycle import Policy
from support.keys import make_key
from support.playbooks import play
from support.reporters import LiveReporter, ReporterDatabase, enroll
from support.signing_hosts import SigningHost, rfc3339
from support.tools import BK_REPORTER

HERE = Path(__file__).parent / "notify_tunables"
CADENCE = timedelta(hours=1)
NOW_POLICY = Policy(fire_after=timedelta(0))


def _post(reporter: LiveReporter, envelope: dict[str, str]) -> None:
    response = httpx.post(f"{reporter.url}/api/v1/manifests", json=envelope, timeout=30)
    assert response.status_code == 201, response.text


def _hub_waiting_for_offsite(reporter: LiveReporter, tmp_path: Path, arrived_ago: timedelta) -> datetime:
    """A hub that copies to destination b2 every CADENCE, and a snapshot that arrived at it
    `arrived_ago` and is not at b2 yet; when it arrived."""
    hub = SigningHost("hub1", make_key(tmp_path, "hub1"))
    enroll(reporter.database.owner_url, hub)
    fields = {"job": None, "snapshot": None, "stats": None, "repository": {"name": "web1"}}
    copied, waiting = "aa" * 32, "bb" * 32
    _post(
        reporter,
        hub.envelope(
            kind="offsite-copy",
            cadence_seconds=int(CADENCE.total_seconds()),
            offsite={"destination": "b2", "snapshots": [copied]},
            ago=arrived_ago + timedelta(hours=2),
            **fields,
        ),
    )
    arrived = datetime.now(UTC) - arrived_ago
    receipt = {"snapshots": [{"id": waiting, "size": 2048, "arrived_at": rfc3339(arrived)}]}
    _post(reporter, hub.envelope(kind="hub-receipt", cadence_seconds=None, receipt=receipt, **fields))
    return arrived


def _offsite_late(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT kind FROM alert_current_state WHERE host = 'web1' AND condition = 'offsite_late'"
        ).fetchone()
    return row[0] if row else None


def test_a_snapshot_not_offsite_within_cadence_times_factor_fires_offsite_late_and_not_before(
    reporter: LiveReporter, reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    arrived = _hub_waiting_for_offsite(reporter, tmp_path, arrived_ago=timedelta(minutes=10))
    thresholds = Thresholds(offsite_cadence_factor=2)
    within = evaluate_once(reporter_db.app_url, [], arrived + 1.9 * CADENCE, policy=NOW_POLICY, thresholds=thresholds)
    assert within.evaluated and _offsite_late(reporter_db.app_url) is None

    late = evaluate_once(reporter_db.app_url, [], arrived + 2.1 * CADENCE, policy=NOW_POLICY, thresholds=thresholds)
    assert late.transitions >= 1
    assert _offsite_late(reporter_db.app_url) == "fire"
    with psycopg.connect(reporter_db.app_url) as conn:
        (summary, since) = conn.execute(
            "SELECT summary, since FROM alert_current_state WHERE condition = 'offsite_late'"
        ).fetchone()
    assert summary.startswith("web1: 1 snapshot(s) not at offsite b2 within 2 h"), summary
    assert abs(since - (arrived + 2 * CADENCE)) < timedelta(seconds=1)


def _render(out: Path) -> None:
    played = play(HERE / "inventory.yml", HERE / "render.yml", "-e", f"bk_out={out}")
    assert played.returncode == 0, played.stdout + played.stderr


def _notify_once(reporter_db: ReporterDatabase, routes: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BK_REPORTER_")}
    env["BK_REPORTER_DATABASE_URL"] = reporter_db.app_url
    command = [str(BK_REPORTER), "notify", "--routes", str(routes), "--once", "--data-dir", str(data_dir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_the_offsite_cadence_factor_set_in_the_inventory_is_the_one_bk_reporter_notify_uses(
    reporter: LiveReporter, reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    out = tmp_path / "rendered"
    out.mkdir()
    _render(out)
    stock = yaml.safe_load((out / "stock.yml").read_text())
    assert {key: stock[key] for key in TUNABLES} == {key: default for key, (_f, default, _u, _h) in TUNABLES.items()}
    assert yaml.safe_load((out / "tuned.yml").read_text())["offsite_cadence_factor"] == 4

    # Three cadences late: late for the default factor (2), not for the inventory's (4).
    _hub_waiting_for_offsite(reporter, tmp_path, arrived_ago=3 * CADENCE)
    tuned = _notify_once(reporter_db, out / "tuned.yml", tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    assert "offsite_cadence_factor=4" in tuned.stderr
    assert _offsite_late(reporter_db.app_url) is None

    flagged = _notify_once(reporter_db, out / "stock.yml", tmp_path)
    assert flagged.returncode == 0, flagged.stderr
    assert "offsite_cadence_factor=2" in flagged.stderr
    assert _offsite_late(reporter_db.app_url) == "fire"
