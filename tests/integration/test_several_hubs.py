"""Several hubs (issue 18): each hub serves and maintains only the clients that name it, and a
client that names no hub is served by none when there are several, so no repository is split
between two hubs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from support.playbooks import play

HERE = Path(__file__).parent / "several_hubs"


def _run(tmp_path: Path, inventory: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "rendered"
    out.mkdir()
    return play(inventory, HERE / "render.yml", "-e", f"bk_out={out}"), out


def _render(tmp_path: Path, inventory: Path = HERE / "inventory.yml") -> dict[str, object]:
    playbook, out = _run(tmp_path, inventory)
    assert playbook.returncode == 0, playbook.stdout + playbook.stderr
    return {path.name: json.loads(path.read_text()) for path in sorted(out.iterdir())}


def test_each_hub_serves_and_maintains_only_the_clients_naming_it(tmp_path: Path) -> None:
    rendered = _render(tmp_path)
    assert rendered["hub-a.clients.json"] == ["web1"]
    assert rendered["hub-b.clients.json"] == ["db1", "laptop"]
    policies = {
        hub: {repo["name"]: repo["policy"] for repo in rendered[f"{hub}.maintenance.json"]["repositories"]}
        for hub in ("hub-a", "hub-b")
    }
    assert policies["hub-a"] == {"web1": {"keep_within": "30d"}}
    assert set(policies["hub-b"]) == {"db1", "laptop"}
    assert policies["hub-b"]["db1"] == {"keep_last": 20}


def test_each_client_uses_the_hub_that_serves_it(tmp_path: Path) -> None:
    rendered = _render(tmp_path)
    uses = {name.removesuffix(".hub.json"): hub for name, hub in rendered.items() if name.endswith(".hub.json")}
    assert uses == {"web1": "hub-a", "db1": "hub-b", "laptop": "hub-b", "unassigned": ""}
    for client, hub in uses.items():
        serving = [name for name, clients in rendered.items() if name.endswith(".clients.json") and client in clients]
        assert serving == ([f"{hub}.clients.json"] if hub else []), client


def test_a_client_naming_no_hub_is_served_by_none_of_several(tmp_path: Path) -> None:
    rendered = _render(tmp_path)
    assert not any("unassigned" in clients for name, clients in rendered.items() if name.endswith(".clients.json"))


def test_with_one_hub_a_client_naming_none_is_served_by_it(tmp_path: Path) -> None:
    fleet = yaml.safe_load((HERE / "inventory.yml").read_text())
    del fleet["bk_hub"]["hosts"]["hub-b"]
    for client in fleet["bk_clients"]["hosts"].values():
        if client and client.get("client_hub_host") == "hub-b":
            del client["client_hub_host"]
    one_hub = tmp_path / "one-hub.yml"
    one_hub.write_text(yaml.safe_dump(fleet))
    assert sorted(_render(tmp_path, one_hub)["hub-a.clients.json"]) == ["db1", "laptop", "unassigned", "web1"]


def test_a_misspelt_retention_stops_its_hub_naming_the_client(tmp_path: Path) -> None:
    """The hub's bk-run validates maintenance.json before it is installed (where client_retention
    is read): a key a run would only warn about and ignore is refused, and nothing is written."""
    fleet = yaml.safe_load((HERE / "inventory.yml").read_text())
    fleet["bk_clients"]["hosts"]["db1"]["client_retention"] = {"keep_dayly": 7, "keep_last": 3}
    misspelt = tmp_path / "misspelt.yml"
    misspelt.write_text(yaml.safe_dump(fleet))
    playbook, out = _run(tmp_path, misspelt)
    output = playbook.stdout + playbook.stderr
    assert playbook.returncode != 0
    assert "repository db1: policy: ignoring unknown keys: keep_dayly" in output
    assert not (out / "hub-b.maintenance.json").exists()
    assert (out / "hub-a.maintenance.json").exists()
