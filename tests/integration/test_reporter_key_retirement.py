"""Keys are not only ever added (issue 15): the reporter role's enrolment, run by ansible-playbook
against a real reporter database, reports an active key no longer in the inventory, retires it only
when reporter_retire_absent_keys is true (never in check mode) and changes nothing the second time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from support.keys import make_key
from support.playbooks import play
from support.reporters import ReporterDatabase

HERE = Path(__file__).parent / "key_retirement"
BK_REPORTER = str(Path(sys.executable).parent / "bk-reporter")


def _play(db: ReporterDatabase, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    args = [
        "-e",
        f"bk_reporter={BK_REPORTER}",
        "-e",
        f"bk_database_url={db.owner_url}",
        "-e",
        f"bk_data_dir={data_dir}",
    ]
    result = play(HERE / "inventory.yml", HERE / "enroll.yml", *args, *extra, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _retired(db: ReporterDatabase, host: str) -> list[object]:
    with psycopg.connect(db.owner_url) as conn:
        return [row[0] for row in conn.execute("SELECT retired_at FROM host_keys WHERE host = %s", (host,))]


def _changed(output: str) -> int:
    return int(output.split("PLAY RECAP", 1)[1].split("changed=", 1)[1].split(maxsplit=1)[0])


def test_an_absent_hosts_key_is_reported_then_retired_only_when_asked_and_once(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    gone = make_key(tmp_path, "gone1")
    env = dict(
        os.environ, BK_REPORTER_DATABASE_URL=reporter_db.owner_url, BK_REPORTER_OWNER_DATABASE_URL=reporter_db.owner_url
    )
    subprocess.run(
        [BK_REPORTER, "hosts", "add", "gone1", "--key", Path(f"{gone}.pub").read_text(), "--data-dir", str(tmp_path)],
        env=env,
        check=True,
        capture_output=True,
    )

    reported = _play(reporter_db, tmp_path)
    assert "Active keys no longer in the inventory or facts: gone1 SHA256:" in reported.stdout
    assert _retired(reporter_db, "gone1") == [None]
    assert _retired(reporter_db, "web1") == [None] * len(_retired(reporter_db, "web1")) != []

    _play(reporter_db, tmp_path, "--check", "-e", "reporter_retire_absent_keys=true")
    assert _retired(reporter_db, "gone1") == [None]

    retired = _play(reporter_db, tmp_path, "-e", "reporter_retire_absent_keys=true")
    assert _changed(retired.stdout) == 1
    (retired_at,) = _retired(reporter_db, "gone1")
    assert retired_at is not None  # the row stays: the key still verifies what it signed

    again = _play(reporter_db, tmp_path, "-e", "reporter_retire_absent_keys=true")
    assert _changed(again.stdout) == 0
    assert "no longer in the inventory" not in again.stdout


def _warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The run's Ansible warnings, each on one line (the display wraps long ones)."""
    text = " ".join((result.stdout + result.stderr).split())
    return [part.split(" [", 1)[0].strip() for part in text.split("[WARNING]: ")[1:]]


def test_one_active_key_of_each_type_is_no_warning(reporter_db: ReporterDatabase, tmp_path: Path) -> None:
    played = _play(reporter_db, tmp_path)
    assert [w for w in _warnings(played) if "active" in w or "SSH host key facts" in w] == []


def test_a_second_active_key_of_a_type_is_a_warning_in_the_cli_and_the_play(
    reporter_db: ReporterDatabase, tmp_path: Path
) -> None:
    env = dict(
        os.environ, BK_REPORTER_DATABASE_URL=reporter_db.owner_url, BK_REPORTER_OWNER_DATABASE_URL=reporter_db.owner_url
    )
    for name in ("old", "new"):
        key = make_key(tmp_path, name)
        line = Path(f"{key}.pub").read_text()
        subprocess.run(
            [BK_REPORTER, "hosts", "add", "db1", "--key", line, "--data-dir", str(tmp_path)], env=env, check=True
        )
    listed = subprocess.run(
        [BK_REPORTER, "hosts", "list", "--json", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "warning: db1 has 2 active ssh-ed25519 keys" in listed.stderr
    old, new = (row["fingerprint"] for row in json.loads(listed.stdout) if row["host"] == "db1")

    played = _play(reporter_db, tmp_path, "-e", '{"reporter_enroll_hosts": ["web1", "db9"]}')
    doubled = [w for w in _warnings(played) if w.startswith("db1 has 2 active ssh-ed25519 keys")]
    assert doubled == [
        f"db1 has 2 active ssh-ed25519 keys ({old}, {new}): retire the old one"
        " with bk-reporter hosts retire db1 FINGERPRINT"
    ], played.stdout + played.stderr
    assert [w for w in _warnings(played) if "SSH host key facts" in w] == [
        "No SSH host key facts for db9: their manifests will be refused until their keys are enrolled"
        " (gather their facts in the same run, as playbooks/site.yml does)."
    ]
    assert "WARNING: warning:" not in played.stdout  # no debug task dressed as a warning
