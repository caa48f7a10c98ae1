"""The reporter role's wheelhouse build on the controller, as several reporter hosts run it at once.

Under the free strategy every host of bk_reporter runs the build (run_once is not honoured), so
two or three builds of one wheelhouse overlap. The role's own shell text runs here with a stand-in
for pip that writes its wheels slowly, as a slow index would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "roles" / "reporter" / "tasks" / "build.yml"
WHEELS = ("bk_reporter-1.0-py3-none-any.whl", "psycopg-3.2-cp311-manylinux_2_28_x86_64.whl", "uvicorn-0.30-py3.whl")

# `python -m pip wheel ... --wheel-dir DIR ...` and `python -m pip download ... --dest DIR ...`:
# each wheel written a piece at a time, so that overlapping builds interleave.
FAKE_PIP = """#!/bin/bash
set -eu
[ -n "${PIP_FAILS:-}" ] && exit 3
dir=""; previous=""
for argument in "$@"; do
  case "$previous" in --wheel-dir|--dest) dir="$argument" ;; esac
  previous="$argument"
done
mkdir -p "$dir"
case " $* " in
  *" wheel "*) wheels="bk_reporter-1.0-py3-none-any.whl" ;;
  *) wheels="psycopg-3.2-cp311-manylinux_2_28_x86_64.whl uvicorn-0.30-py3.whl" ;;
esac
for wheel in $wheels; do
  for part in 1 2 3; do printf 'part %s of %s\\n' "$part" "$wheel" >> "$dir/$wheel"; sleep 0.05; done
done
"""


def build_task() -> dict:
    return next(task for task in yaml.safe_load(BUILD.read_text()) if task["name"].startswith("Build the wheelhouse"))


def start_build(tmp_path: Path, wheelhouse: Path, **env: str) -> subprocess.Popen[str]:
    pip = tmp_path / "python"
    pip.write_text(FAKE_PIP)
    pip.chmod(0o755)
    variables = {"PY": str(pip), "DEST": str(wheelhouse), "SOURCE": str(REPO), "PYVER": "3.11", "PYTAG": "311"}
    variables |= {"ARCH": "x86_64", "CONSTRAINTS": "", **env}
    command = build_task()["ansible.builtin.shell"]["cmd"]
    return subprocess.Popen(
        ["/bin/bash", "-c", command], env={**os.environ, **variables}, text=True, stderr=subprocess.PIPE
    )


def test_the_task_builds_where_the_role_names_the_wheelhouse() -> None:
    task = build_task()
    assert task["ansible.builtin.shell"]["creates"] == "{{ _reporter_wheelhouse }}"
    assert task["environment"]["DEST"] == "{{ _reporter_wheelhouse }}"


def test_three_hosts_building_at_once_leave_one_complete_wheelhouse_and_nothing_else(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "cache" / "0123abcd-cp311-x86_64"
    wheelhouse.parent.mkdir()
    builds = [start_build(tmp_path, wheelhouse) for _host in range(3)]
    errors = [build.communicate(timeout=60)[1] for build in builds]
    assert [build.returncode for build in builds] == [0, 0, 0], errors
    assert sorted(path.name for path in wheelhouse.iterdir()) == sorted(WHEELS)
    for wheel in wheelhouse.iterdir():  # every wheel whole, written by one build only
        assert wheel.read_text().count("part") == 3, wheel.name
    assert [path.name for path in wheelhouse.parent.iterdir()] == [wheelhouse.name]


def test_a_failing_build_leaves_neither_a_wheelhouse_nor_its_scratch_directory(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "cache" / "0123abcd-cp311-x86_64"
    wheelhouse.parent.mkdir()
    build = start_build(tmp_path, wheelhouse, PIP_FAILS="1")
    build.communicate(timeout=60)
    assert build.returncode != 0
    assert list(wheelhouse.parent.iterdir()) == []
