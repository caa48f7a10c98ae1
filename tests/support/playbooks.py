"""A playbook of the given tasks, run by ansible-playbook on localhost with the collection of this tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from support.tools import LOCAL_PLAYBOOK

REPO = Path(__file__).resolve().parents[2]


def run_playbook(tmp_path: Path, tasks: list[dict], *options: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    return subprocess.run(
        [*LOCAL_PLAYBOOK, *options, str(playbook)], env=env, capture_output=True, text=True, check=False
    )


def play(
    inventory: Path, playbook: Path, *options: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook on a test's own inventory and playbook, colourless; the caller checks the result."""
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(playbook), *options],
        env=dict(env if env is not None else os.environ, ANSIBLE_NOCOLOR="1"),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
