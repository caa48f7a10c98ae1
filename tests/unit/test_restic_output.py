"""Parsing restic/rclone output (samples captured from restic 0.14.0, 0.18.0 and 0.19.1) and
scrubbing secrets."""

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
# restic 0.18.0 and 0.19.1 print the same fields
SUMMARY_0_18 = dict(
    SUMMARY,
    data_added_packed=5662,
    backup_start="2026-12-03T10:26:43.612085337Z",
    backup_end="2026-12-03T10:26:44.291207346Z",
    snapshot_id="f7e74bdf1491ac3a87f6962bfea915107932c54e4aebf5074f46912f8c9f3bd5",
)
# restic 0.18.0, backup --skip-if-unchanged of unchanged files: no snapshot, and two figures it cannot mean
SKIPPED_0_18 = {
    "message_type": "summary",
    "files_new": 0,
    "files_changed": 0,
    "files_unmodified": 2,
    "dirs_new": 0,
    "dirs_changed": 0,
    "dirs_unmodified": 1,
    "data_blobs": 0,
    "tree_blobs": 0,
    "data_added": 0,
    "data_added_packed": 0,
    "total_files_processed": 2,
    "total_bytes_processed": 5100,
    "total_duration": -9223372036.854776,
    "backup_start": "2026-12-03T10:28:56.254579827Z",
    "backup_end": "0001-01-01T00:00:00Z",
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
    assert set(stats) == set(restic_output.STATS_FIELDS) - {"data_added_packed"}
    assert stats["total_duration"] == SUMMARY["total_duration"]
    assert "snapshot_id" not in stats


def test_stats_keep_every_figure_of_restic_0_18() -> None:
    stats = restic_output.stats_from_summary(SUMMARY_0_18)
    assert stats == {name: value for name, value in SUMMARY_0_18.items() if name not in ("message_type", "snapshot_id")}
    assert {"data_added_packed", "backup_start", "backup_end"} <= set(stats)


def test_stats_leave_out_figures_restic_0_18_cannot_mean() -> None:
    stats = restic_output.stats_from_summary(SKIPPED_0_18)
    assert "total_duration" not in stats and "backup_end" not in stats
    assert stats["backup_start"] == SKIPPED_0_18["backup_start"] and stats["files_unmodified"] == 2


# what each restic printed on stderr for each failure (restic ... backup --json)
FAILURES = [
    (
        "no_repository",
        1,
        "Fatal: unable to open config file: stat /r/config: no such file or directory\n"
        "Is there a repository at the following location?\n/r\n",
    ),
    (
        "no_repository",
        10,
        '{"message_type":"exit_error","code":10,"message":"Fatal: repository does not exist: '
        'unable to open config file: stat /r/config: no such file or directory"}\n',
    ),
    (  # restic 0.14 against a port where nothing listens
        "repository_unreachable",
        1,
        'Fatal: unable to open config file: client.Head: Head "http://127.0.0.1:9/web1/config": dial tcp '
        "127.0.0.1:9: connect: connection refused\nIs there a repository at the following location?\n"
        "rest:http://127.0.0.1:9/web1/\n",
    ),
    ("wrong_password", 1, "Fatal: wrong password or no key found\n"),
    (
        "wrong_password",
        12,
        '{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}\n',
    ),
    ("lock_failed", 1, "unable to create lock in backend: repository is already locked exclusively by PID 6241\n"),
    ("lock_failed", 11, '{"message_type":"exit_error","code":11,"message":"unable to create lock in backend"}\n'),
    ("incomplete_snapshot", 3, "Warning: at least one source file could not be read\n"),
    ("interrupted", 130, "signal interrupt received, cleaning up\n"),
    (None, 1, "Fatal: unable to save snapshot: context canceled\n"),
]


@pytest.mark.parametrize(("cause", "code", "stderr"), FAILURES)
def test_failure_causes_are_the_same_on_every_restic(cause: str | None, code: int, stderr: str) -> None:
    assert restic_output.failure_cause(code, stderr) == cause
    if cause:
        assert restic_output.FAILURE_CAUSES[cause]


def test_exit_error_is_restics_last_word() -> None:
    stderr = 'Load(<snapshot/12345678>) failed\n{"message_type":"exit_error","code":1,"message":"failed to load"}\n'
    assert restic_output.exit_error(stderr) == {"message_type": "exit_error", "code": 1, "message": "failed to load"}
    assert restic_output.exit_error("Fatal: invalid id\n") is None


@pytest.mark.parametrize(
    ("text", "found"), [("0.14.0", (0, 14)), ("0.19.1", (0, 19)), ("1.0.0-dev", (1, 0)), (None, None)]
)
def test_restic_version_tuple(text: str | None, found: tuple[int, int] | None) -> None:
    assert restic_output.restic_version_tuple(text) == found


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
