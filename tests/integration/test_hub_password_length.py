"""The hub refuses credentials shorter than 24 characters: it hashes them with bcrypt cost 6, which
only a long random secret makes safe against an offline guess of a stolen htpasswd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "hub"
# The served clients and their credentials come from vars/main.yml, read as the play's vars_files.
CHECKS = ("Check the hub configuration",)


def _check(tmp_path: Path, maintenance_password: str, client_password: str) -> subprocess.CompletedProcess[str]:
    tasks = [task for task in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text()) if task["name"] in CHECKS]
    (tmp_path / "checks.yml").write_text(yaml.safe_dump(tasks))
    (tmp_path / "play.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": True,  # the checks read the distribution (package or release)
                    "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
                    "tasks": [{"ansible.builtin.include_tasks": str(tmp_path / "checks.yml")}],
                }
            ]
        )
    )
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"hosts": {"localhost": local, "web1": {}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    extra = {
        "hub_clients": ["web1"],
        "hub_rest_server_sha256": "0" * 64,
        "hub_maintenance_password": maintenance_password,
        "client_hub_password": client_password,
    }
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(tmp_path / "inventory.yml"),
            str(tmp_path / "play.yml"),
            "-e",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_23_character_client_password_is_refused_naming_the_client(tmp_path: Path) -> None:
    result = _check(tmp_path, "m" * 24, "c" * 23)
    assert result.returncode != 0
    assert "need 24 or more characters" in result.stdout and "too short for: web1" in result.stdout


def test_a_23_character_maintenance_password_is_refused(tmp_path: Path) -> None:
    result = _check(tmp_path, "m" * 23, "c" * 24)
    assert result.returncode != 0
    assert "hub_maintenance_password | length >= 24" in result.stdout


def test_24_character_passwords_are_accepted(tmp_path: Path) -> None:
    result = _check(tmp_path, "m" * 24, "c" * 24)
    assert result.returncode == 0, result.stdout
