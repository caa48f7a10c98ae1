"""A root attacker on a client forges its setup facts; with Ansible's default inject_facts_as_vars
they would override its inventory (issue 15). The attack runs for real: the lying host's Python
loads fact_shadowing/sitecustomize.py, which adds runner_host_name, client_retention and its own
ed25519 key to what setup returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.playbooks import play

HERE = Path(__file__).parent / "fact_shadowing"


def _attacker_key(tmp_path: Path) -> str:
    key = tmp_path / "attacker"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return (tmp_path / "attacker.pub").read_text().split()[1]


@pytest.fixture
def lying_python(tmp_path: Path) -> Path:
    wrapper = tmp_path / "lying-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={HERE} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _render(
    tmp_path: Path, lying_python: Path, lie: dict[str, object] | None, guard: bool = True
) -> tuple[int, str, Path]:
    out = tmp_path / "rendered"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, ANSIBLE_INJECT_FACT_VARS="True", BK_LYING_PYTHON=str(lying_python), ANSIBLE_NOCOLOR="1")
    env.pop("BK_LIE_FILE", None)
    if lie is not None:
        lie_file = tmp_path / "lie.json"
        lie_file.write_text(json.dumps(lie))
        env["BK_LIE_FILE"] = str(lie_file)
    playbook = play(
        HERE / "inventory.yml", HERE / "render.yml", "-e", f"bk_out={out}", "-e", f"bk_guard={guard}", env=env
    )
    return playbook.returncode, playbook.stdout + playbook.stderr, out


def _lie(tmp_path: Path) -> dict[str, object]:
    return {
        "runner_host_name": "web1",
        "client_retention": {"keep_last": 1},
        "ansible_ssh_host_key_ed25519_public": _attacker_key(tmp_path),
        "ansible_ssh_host_key_ed25519_public_keytype": "ssh-ed25519",
    }


def _policies(out: Path) -> dict[str, object]:
    return {repo["name"]: repo["policy"] for repo in json.loads((out / "maintenance.json").read_text())["repositories"]}


def test_forged_facts_reach_the_host_variables_without_the_guard(tmp_path: Path, lying_python: Path) -> None:
    """The lie is real: left unguarded, the hub renders the lying client's forged retention."""
    lie = _lie(tmp_path)
    returncode, output, out = _render(tmp_path, lying_python, lie, guard=False)
    assert returncode == 0, output
    assert _policies(out)["evil"] == {"keep_last": 1}
    assert _policies(out)["web1"] == {"keep_within": "30d", "keep_last": 10}


def test_forged_facts_cannot_enrol_a_key_under_another_hosts_name(tmp_path: Path, lying_python: Path) -> None:
    """Even unguarded, the attacker's key is enrolled only under its own inventory name."""
    lie = _lie(tmp_path)
    returncode, output, out = _render(tmp_path, lying_python, lie, guard=False)
    assert returncode == 0, output
    wanted = json.loads((out / "wanted_keys.json").read_text())["missing"]
    attacker = f"ssh-ed25519 {lie['ansible_ssh_host_key_ed25519_public']}"
    assert [item["host"] for item in wanted if item["key"] == attacker] == ["evil"]


def test_lying_host_is_stopped_and_the_hub_renders_nothing_new(tmp_path: Path, lying_python: Path) -> None:
    """With the guard (site.yml's first play, every role's entry), the lying host stops with an error
    naming the forged variables, the hub refuses to use them, and nothing it renders changes."""
    returncode, output, out = _render(tmp_path, lying_python, None)
    assert returncode == 0, output
    honest = {name: (out / name).read_bytes() for name in ("maintenance.json", "wanted_keys.json")}
    assert _policies(out)["evil"] == {"keep_within": "14d"}

    returncode, output, out = _render(tmp_path, lying_python, _lie(tmp_path))
    assert returncode != 0
    assert "Facts of evil carry bk variables (runner_host_name, client_retention)" in output
    assert _recap(output) == {"evil": 1, "hub1": 1, "web1": 0}
    assert {name: (out / name).read_bytes() for name in honest} == honest


def test_a_forged_computed_value_stops_the_host(tmp_path: Path, lying_python: Path) -> None:
    """The roles' computed values (_client_hub, ...) are bk variables too: a role may read one where
    the task setting it did not run, and there the forged fact would be its value."""
    returncode, output, _out = _render(tmp_path, lying_python, {"_client_hub": "hub1", "ansible__hub_served": ["evil"]})
    assert returncode != 0
    assert "Facts of evil carry bk variables (_client_hub, _hub_served)" in output
    assert _recap(output) == {"evil": 1, "hub1": 1, "web1": 0}


def test_a_client_forging_its_hub_still_stops_the_hub_it_would_leave(tmp_path: Path, lying_python: Path) -> None:
    """Which clients a hub serves comes from every client's client_hub_host, so a client that
    forges its own to leave its hub (and take its policy and credential out of that hub's files)
    stops that hub too, not only the one it names."""
    returncode, output, out = _render(tmp_path, lying_python, None)
    assert returncode == 0, output
    honest = (out / "maintenance.json").read_bytes()
    returncode, output, out = _render(tmp_path, lying_python, {"client_hub_host": "elsewhere"})
    assert returncode != 0
    assert "Facts of evil carry bk variables (client_hub_host)" in output
    assert _recap(output) == {"evil": 1, "hub1": 1, "web1": 0}
    assert (out / "maintenance.json").read_bytes() == honest


def _recap(output: str) -> dict[str, int]:
    """failed= per host from the PLAY RECAP."""
    recap = output.split("PLAY RECAP", 1)[1]
    return {
        line.split()[0]: int(line.split("failed=", 1)[1].split()[0]) for line in recap.splitlines() if "failed=" in line
    }
