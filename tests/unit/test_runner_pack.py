"""The runner role's pack.py: one reproducible tar holding bk_evidence/ and bk_run/ (as the role calls it)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "roles" / "runner" / "files" / "pack.py"


def pack(out: Path, *inputs: str) -> dict:
    command = [sys.executable, str(PACK), str(out), "bk-run", *inputs]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def runner_inputs(reverse: bool = False) -> list[str]:
    """The role's arguments; ``reverse``: the packages and their files in the opposite order."""
    # The role packs the collection's galaxy.yml beside bk_evidence: bk's version on the host.
    evidence = [
        *sorted(str(path) for path in (REPO / "plugins" / "module_utils").glob("*.py")),
        str(REPO / "galaxy.yml"),
    ]
    program = sorted(str(path) for path in (REPO / "runner" / "bk_run").glob("*.py"))
    if reverse:
        return ["--into", "bk_run", *reversed(program), "--into", "bk_evidence", *reversed(evidence)]
    return ["--into", "bk_evidence", *evidence, "--into", "bk_run", *program]


def test_both_packages_go_into_one_tar_under_their_directories(tmp_path) -> None:
    packed = pack(tmp_path, *runner_inputs())
    assert {"bk_evidence/manifest.py", "bk_evidence/__init__.py", "bk_evidence/galaxy.yml", "bk_run/cli.py"} <= set(
        packed["files"]
    )
    assert not [name for name in packed["files"] if not name.startswith(("bk_evidence/", "bk_run/"))]
    with tarfile.open(packed["tar"]) as archive:
        members = archive.getmembers()
    assert [member.name for member in members] == packed["files"] == sorted(packed["files"])
    assert {(member.mode, member.mtime, member.uid, member.uname) for member in members} == {(0o644, 0, 0, "root")}


def test_the_same_files_give_the_same_bytes_whatever_their_order(tmp_path) -> None:
    first = pack(tmp_path / "a", *runner_inputs())
    second = pack(tmp_path / "b", *runner_inputs(reverse=True))
    assert first["hash"] == second["hash"]
    assert Path(first["tar"]).read_bytes() == Path(second["tar"]).read_bytes()


def test_files_without_into_are_stored_by_their_name(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.whl").write_bytes(b"1")
    packed = pack(tmp_path / "out", str(tmp_path / "in"))
    assert packed["files"] == ["one.whl"]


def test_a_required_file_that_is_missing_is_named_and_nothing_is_packed(tmp_path) -> None:
    # As the role calls it with a runner_source_dir that holds bk_evidence but no bk_run.
    evidence = [str(path) for path in (REPO / "plugins" / "module_utils").glob("*.py")]
    command = [
        sys.executable,
        str(PACK),
        str(tmp_path / "out"),
        "bk-run",
        "--require",
        "bk_evidence/manifest.py",
        "--require",
        "bk_run/cli.py",
        "--into",
        "bk_evidence",
        *evidence,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "bk_run/cli.py not among the files found" in result.stderr
    assert "bk_evidence/manifest.py" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_required_files_that_are_present_pack_as_without_the_option(tmp_path) -> None:
    plain = pack(tmp_path / "a", *runner_inputs())
    required = pack(
        tmp_path / "b", "--require", "bk_evidence/manifest.py", "--require", "bk_run/cli.py", *runner_inputs()
    )
    assert required["hash"] == plain["hash"]
    assert required["files"] == plain["files"]
