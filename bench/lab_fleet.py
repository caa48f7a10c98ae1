"""A lab fleet of any size for the converge benchmark, under a name prefix of its own.

    .venv/bin/python bench/lab_fleet.py --hosts 12 --prefix cv- --output .cache/bench/cv-12.yml

prints the container names (for `BK_LAB_HOSTS`) and writes an inventory: tests/lab/inventory.yml with
every host renamed to PREFIX+name (container name == hostname on the podman network, so the prefix
keeps this fleet apart from the demo's and molecule's), plus clients client3, client4, ... shaped
like client1 until the fleet has HOSTS hosts.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LAB_INVENTORY = REPO / "tests" / "lab" / "inventory.yml"


def renamed(hosts: dict | None, prefix: str) -> dict:
    return {prefix + name: value for name, value in (hosts or {}).items()}


def fleet(hosts: int, prefix: str) -> dict:
    """The lab inventory with HOSTS hosts named PREFIX+name."""
    inventory = copy.deepcopy(yaml.safe_load(LAB_INVENTORY.read_text()))
    root = inventory["all"]
    root["vars"]["runner_reporter_url"] = f"http://{prefix}reporter:8080"
    for group in root["children"].values():
        group["hosts"] = renamed(group.get("hosts"), prefix)
    clients = root["children"]["bk_clients"]["hosts"]
    template = clients[prefix + "client1"]
    number = 3
    while len(names(inventory)) < hosts:
        clients[f"{prefix}client{number}"] = {
            **copy.deepcopy(template),
            "client_repository_password": f"lab-c{number}-repo-Hk3v9QpZr2Lm8XwT",
            "client_hub_password": f"lab-c{number}-hub-Yq7Rt2Vx9Bn4Kp1S",
        }
        number += 1
    return inventory


def names(inventory: dict) -> list[str]:
    return list(dict.fromkeys(host for group in inventory["all"]["children"].values() for host in group["hosts"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4, help="hosts in the fleet (at least the lab's 4)")
    parser.add_argument("--prefix", default="cv-", help="prefix of every host and container name")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    inventory = fleet(args.hosts, args.prefix)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(inventory, indent=1) + "\n")
    print(" ".join(names(inventory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
