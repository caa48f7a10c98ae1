"""Parsing restic/rclone output (samples captured from restic 0.14.0) and scrubbing secrets."""

from __future__ import annotations

import json

import pytest

from bk_evidence import restic_output

SUMMARY = {
    "message_type": "summary",
    "files_new": 1,
    "files_changed": 0,
    "files_unmodified": 0,
    "dirs_new": 1,
    "dirs_changed": 0,
    "dirs_unmodified": 0,
    "data_blobs": 1,
    "tree_blobs": 2,
    "data_added": 700,
    "total_files_processed": 1,
    "total_bytes_processed": 3,
    "total_duration": 0.216710511,
    "snapshot_id": "65ae9c44",
}
STATUS = {"message_type": "status", "percent_done": 0.5, "total_files": 1, "bytes_done": 1}
SNAPSHOT = {
    "time": "2026-11-23T03:35:33.641198351Z",
    "parent": "65ae9c44becfbc2c1fca8e38fe4aa6dde289e25b05c8e1fa46ce1155ebf025ca",
    "tree": "ee102bd0e696a2a53c16d9e49d7b1972525cb208a57e7bcc3decd5243dd56bce",
    "paths": ["/tmp/rr/data"],
    "hostname": "vm",
    "username": "root",
    "id": "2f5026894accf62174f1c5ea9ccfa3bd936568f334bdad46b1eb6b1d29aa5790",
    "short_id": "2f502689",
}
PRUNE = """loading indexes...
to repack:             0 blobs / 0 B
this removes:          0 blobs / 0 B
to delete:            12 blobs / 1.234 MiB
total prune:          12 blobs / 1.234 MiB
remaining:             3 blobs / 540 B
unused size after prune: 0 B (0.00% of remaining size)
done
"""


def test_backup_summary_is_the_last_summary_line() -> None:
    stdout = "\n".join([json.dumps(STATUS), "not json", json.dumps(SUMMARY), ""])
    assert restic_output.backup_summary(stdout) == SUMMARY
    assert restic_output.backup_summary(json.dumps(STATUS)) is None


def test_stats_keep_restic_figures_only() -> None:
    stats = restic_output.stats_from_summary(SUMMARY)
    assert set(stats) == set(restic_output.STATS_FIELDS)
    assert stats["total_duration"] == SUMMARY["total_duration"]
    assert "snapshot_id" not in stats


def test_snapshot_section() -> None:
    section = restic_output.snapshot_section(SNAPSHOT)
    assert section == {
        "id": SNAPSHOT["id"],
        "short_id": "2f502689",
        "paths": ["/tmp/rr/data"],
        "tags": [],
        "parent": SNAPSHOT["parent"],
        "time": SNAPSHOT["time"],
    }
    assert restic_output.parse_snapshots(json.dumps([SNAPSHOT])) == [SNAPSHOT]
    with pytest.raises(ValueError):
        restic_output.parse_snapshots("{}")


def test_forget_result() -> None:
    removed_snapshot = dict(SNAPSHOT, id="65ae9c44" + "0" * 56)
    stdout = json.dumps([{"tags": None, "keep": [SNAPSHOT], "remove": [removed_snapshot], "reasons": []}])
    assert restic_output.forget_result(stdout) == ([removed_snapshot["id"]], [SNAPSHOT["id"]])
    assert restic_output.forget_result(json.dumps([{"keep": [SNAPSHOT], "remove": None}])) == ([], [SNAPSHOT["id"]])
    assert restic_output.forget_result("") == ([], [])


def test_prune_figures() -> None:
    assert restic_output.prune_figures(PRUNE) == {
        "pruned_blobs": 12,
        "pruned_size": "1.234 MiB",
        "remaining_blobs": 3,
        "remaining_size": "540 B",
    }


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n", "0.14.0"),
        ("rclone v1.60.1-DEV\n- os/version: debian 12.11 (64 bit)\n", "1.60.1-DEV"),
        ("", None),
        ("no digits here", None),
    ],
)
def test_tool_version(output: str, version: str | None) -> None:
    assert restic_output.tool_version(output) == version


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("rest:https://web1:pw@hub.example:8000/web1/", "rest:https://hub.example:8000/web1/"),
        ("rest:http://hub:8000/web1/", "rest:http://hub:8000/web1/"),
        ("s3:https://key:secret@s3.example/bucket", "s3:https://s3.example/bucket"),
        ("sftp:backup@host:/srv/restic", "sftp:backup@host:/srv/restic"),
        ("/srv/restic/web1", "/srv/restic/web1"),
    ],
)
def test_strip_url_credentials(url: str, stripped: str) -> None:
    assert restic_output.strip_url_credentials(url) == stripped


def test_scrub_removes_secrets_and_url_credentials() -> None:
    text = "password hunter2hunter2 and rest:https://web1:s3cret@hub/web1/ failed"
    scrubbed = restic_output.scrub(text, ["hunter2hunter2", ""])
    assert "hunter2" not in scrubbed
    assert "s3cret" not in scrubbed
    assert scrubbed == "password *** and rest:https://***@hub/web1/ failed"


def test_tail_cuts_at_a_line_boundary() -> None:
    text = "".join(f"line {n}\n" for n in range(100))
    cut = restic_output.tail(text, 30)
    assert len(cut) <= 30
    assert cut.startswith("line ") and cut.endswith("line 99\n")
    assert restic_output.tail("short", 30) == "short"
    assert restic_output.tail("x" * 50, 30) == "x" * 30
