"""The bkfleet.backup.files module, run by ansible-playbook on localhost: one run puts every directory and
file in place, check mode writes nothing, a second run changes nothing, and drifted modes are put back."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from support.playbooks import run_playbook


def put(
    tmp_path: Path,
    files: list[dict],
    *options: str,
    read: tuple[str, ...] = (),
    prune: list[dict] | None = None,
    listing: list[dict] | None = None,
) -> dict:
    """The module's result for FILES (the paths to READ, the directories to PRUNE and to list), saved by the play
    and read back."""
    result = tmp_path / "result.json"
    arguments = {"files": files, "read": list(read), "prune": prune or [], "list": listing or []}
    tasks = [
        {"bkfleet.backup.files": arguments, "register": "put"},
        {
            "ansible.builtin.copy": {"content": "{{ put | to_json }}", "dest": str(result), "mode": "0600"},
            "check_mode": False,
        },
    ]
    played = run_playbook(tmp_path, tasks, *options)
    assert played.returncode == 0, played.stdout + played.stderr
    return json.loads(result.read_text())


def wanted(root: Path) -> list[dict]:
    return [
        {"path": str(root / "etc" / "bk"), "state": "directory", "mode": "0750"},
        {"path": str(root / "etc" / "bk" / "bk.json"), "content": '{"host": "web1"}\n'},
        {"path": str(root / "etc" / "bk" / "secret"), "content": "s3cret\n", "mode": "0600"},
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_one_run_creates_directories_with_their_parents_and_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = put(tmp_path, wanted(root))
    assert result["changed"] is True
    assert result["changed_paths"] == [entry["path"] for entry in wanted(root)]
    # Missing parents get the directory's own mode, as ansible.builtin.file gives them.
    assert mode(root) == 0o750 and mode(root / "etc") == 0o750 and mode(root / "etc" / "bk") == 0o750
    assert (root / "etc" / "bk" / "bk.json").read_text() == '{"host": "web1"}\n'
    assert mode(root / "etc" / "bk" / "bk.json") == 0o644
    assert mode(root / "etc" / "bk" / "secret") == 0o600


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    put(tmp_path, wanted(root))
    again = put(tmp_path, wanted(root))
    assert again["changed"] is False
    assert again["changed_paths"] == []


def test_check_mode_reports_the_changes_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = put(tmp_path, wanted(root), "--check", "--diff")
    assert result["changed_paths"] == [entry["path"] for entry in wanted(root)]
    assert not root.exists()
    assert [diff["after"] for diff in result["diff"]] == ['{"host": "web1"}\n', "s3cret\n"]


def test_changed_content_and_drifted_modes_are_put_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    put(tmp_path, wanted(root))
    config = root / "etc" / "bk" / "bk.json"
    config.write_text("{}\n")
    (root / "etc" / "bk" / "secret").chmod(0o644)
    result = put(tmp_path, wanted(root))
    assert result["changed_paths"] == [str(config), str(root / "etc" / "bk" / "secret")]
    assert config.read_text() == '{"host": "web1"}\n'
    assert mode(root / "etc" / "bk" / "secret") == 0o600


def test_a_path_of_the_wrong_kind_fails_naming_it(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    played = run_playbook(tmp_path, [{"bkfleet.backup.files": {"files": [{"path": str(taken), "state": "directory"}]}}])
    assert played.returncode != 0
    assert f"{taken} exists and is not a directory" in played.stdout


def test_attributes_put_back_the_mode_of_a_file_another_tool_wrote_and_leave_its_content(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    entry = {"path": str(key), "state": "attributes", "mode": "0640"}
    assert put(tmp_path, [entry], "--check")["changed_paths"] == [str(key)]
    assert mode(key) == 0o644
    assert put(tmp_path, [entry])["changed_paths"] == [str(key)]
    assert mode(key) == 0o640
    assert key.read_text() == "-----BEGIN PRIVATE KEY-----\n"
    assert put(tmp_path, [entry])["changed_paths"] == []


def test_attributes_of_a_missing_path_fail_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "ca.key"
    entry = {"path": str(missing), "state": "attributes", "mode": "0600"}
    played = run_playbook(tmp_path, [{"bkfleet.backup.files": {"files": [entry]}}])
    assert played.returncode != 0
    assert f"{missing} does not exist" in played.stdout
    assert not missing.exists()


def test_read_returns_the_files_as_they_were_before_the_run_and_null_for_a_missing_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    marker = root / "etc" / "bk" / "bk.json"
    put(tmp_path, wanted(root))
    marker.write_text("an older version\n")
    missing = root / "etc" / "bk" / "absent"
    result = put(tmp_path, wanted(root), read=(str(marker), str(missing)))
    assert result["contents"] == {str(marker): "an older version\n", str(missing): None}
    assert result["changed_paths"] == [str(marker)]
    assert marker.read_text() == '{"host": "web1"}\n'


def test_prune_removes_only_the_matching_files_not_given_and_check_mode_keeps_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    put(tmp_path, wanted(root))
    directory = root / "etc" / "bk"
    stray, other, subdirectory = directory / "old.json", directory / "notes.txt", directory / "kept.json.d"
    stray.write_text("{}\n")
    other.write_text("not ours\n")
    subdirectory.mkdir()
    prune = [{"path": str(directory) + "/", "patterns": ["*.json", "secret"]}]

    checked = put(tmp_path, wanted(root), "--check", prune=prune)
    assert checked["changed_paths"] == [str(stray)]
    assert stray.exists()

    pruned = put(tmp_path, wanted(root), prune=prune)
    assert pruned["changed_paths"] == [str(stray)]
    assert not stray.exists()
    assert other.exists() and subdirectory.is_dir()
    assert (directory / "bk.json").exists() and (directory / "secret").exists()
    assert put(tmp_path, wanted(root), prune=prune)["changed"] is False


def test_prune_leaves_a_missing_directory_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = put(tmp_path, wanted(root), prune=[{"path": str(tmp_path / "absent"), "patterns": ["*"]}])
    assert result["changed_paths"] == [entry["path"] for entry in wanted(root)]


def test_list_returns_the_matching_files_as_they_were_before_the_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    put(tmp_path, wanted(root))
    directory = root / "etc" / "bk"
    (directory / "old.json").write_text("{}\n")
    (directory / "kept.json.d").mkdir()
    new = {"path": str(directory / "new.json"), "content": "{}\n"}
    listing = [{"path": str(directory), "patterns": ["*.json"]}, {"path": str(tmp_path / "absent"), "patterns": ["*"]}]

    result = put(tmp_path, [*wanted(root), new], listing=listing)
    assert result["listed"] == [str(directory / "bk.json"), str(directory / "old.json")]
    assert result["changed_paths"] == [new["path"]]
    assert (directory / "old.json").exists()
    assert result["units"] == {}
