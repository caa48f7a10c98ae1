"""Several hubs kept apart: each hub serves, receipts, maintains and copies offsite only the clients
naming it (issue 18). The expected split comes from the scenario's inventory (`--hub HUB=CLIENT,...`);
everything compared with it is read from the hubs and the reporter.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Sequence

from bkmol_hosts import CheckFailed, Json, list_dir, read_json, run
from bkmol_reporter import Reporter, manifests
from bkmol_restic import hub_data_dir

# --- subcommand: hubs ------------------------------------------------------------------------


def parse_split(values: Sequence[str]) -> dict[str, list[str]]:
    """`HUB=CLIENT,CLIENT` arguments as {hub: [clients]}; a client under two hubs is an error."""
    split: dict[str, list[str]] = {}
    for value in values:
        hub, sep, clients = value.partition("=")
        if not sep or not hub:
            raise CheckFailed(f"--hub {value!r}: expected HUB=CLIENT,CLIENT")
        split[hub] = sorted(c for c in clients.split(",") if c)
    every = [c for clients in split.values() for c in clients]
    if len(set(every)) != len(every):
        raise CheckFailed(f"a client is expected on two hubs: {split}")
    return split


def compare(label: str, found: Sequence[str], own: Sequence[str], others: Sequence[str]) -> list[str]:
    """Problems when `found` is not exactly the hub's own clients, naming any other hub's client."""
    problems = []
    foreign = sorted(set(found) & set(others))
    if foreign:
        problems.append(f"{label}: holds other hubs' clients {foreign}")
    if sorted(set(found)) != sorted(own):
        problems.append(f"{label}: {sorted(set(found))}, expected exactly {sorted(own)}")
    return problems


def served_repositories(hub: str) -> list[str]:
    """The repositories in the rest-server's data directory (its hidden entries are the server's own)."""
    data_dir = hub_data_dir(hub)
    return [name for name in list_dir(hub, data_dir) if not name.startswith(".")]


def maintained_repositories(hub: str) -> list[str]:
    cfg = read_json(hub, "/etc/bk/maintenance.json", {}) or {}
    return [str(repo.get("name")) for repo in cfg.get("repositories", [])]


def offsite_repositories(hub: str) -> dict[str, list[str]]:
    """Per destination of the hub (/etc/bk/offsite/*.json), the repositories at its remote, as
    rclone lists them with the destination's own configuration."""
    out: dict[str, list[str]] = {}
    for name in list_dir(hub, "/etc/bk/offsite"):
        if not name.endswith(".json"):
            continue
        dest = read_json(hub, f"/etc/bk/offsite/{name}", {}) or {}
        argv = ["rclone", "--config", dest["rclone_config"], "lsf", "--dirs-only", dest["remote"]]
        listing = run(hub, argv).stdout.decode()
        out[dest["name"]] = sorted(line.rstrip("/") for line in listing.splitlines() if line.strip())
    return out


def claimed_snapshots(reporter: Reporter, clients: Sequence[str]) -> dict[str, str]:
    """Snapshot id -> client, for every backup manifest of the clients that names a snapshot."""
    claimed = {}
    for client in clients:
        for doc, _text, _sig in manifests(reporter.events(client)):
            snap = (doc.get("snapshot") or {}).get("id")
            if doc.get("kind") == "backup" and snap:
                claimed[snap] = client
    return claimed


def receipt_problems(
    reporter: Reporter, hub: str, own: Sequence[str], claimed: dict[str, str]
) -> tuple[Json, list[str]]:
    """The hub's receipts name only its own clients' repositories and snapshots."""
    repositories: set[str] = set()
    receipted: set[str] = set()
    for doc, _text, _sig in manifests(reporter.events(hub)):
        if doc.get("kind") != "hub-receipt":
            continue
        repositories.add((doc.get("repository") or {}).get("name", ""))
        receipted |= {snap["id"] for snap in (doc.get("receipt") or {}).get("snapshots", [])}
    problems = []
    if not repositories <= set(own):
        problems.append(f"{hub}: receipts name repositories {sorted(repositories - set(own))} of no client of it")
    foreign = sorted(f"{s[:12]} ({claimed.get(s, 'no claim')})" for s in receipted if claimed.get(s) not in own)
    if foreign:
        problems.append(f"{hub}: receipts name snapshots no client of it claimed: {foreign[:10]}")
    missing = sorted(set(own) - repositories)
    if missing:
        problems.append(f"{hub}: no receipt for its clients {missing}")
    return {"repositories": sorted(repositories), "snapshots": len(receipted)}, problems


def lineage_problems(reporter: Reporter, hub: str, client: str) -> tuple[Json, list[str]]:
    """The reporter's snapshot lineage of a client: every snapshot received, from its own hub."""
    detail = reporter.get(f"/api/v1/hosts/{urllib.parse.quote(client, safe='')}")
    snapshots = detail.get("snapshots") or []
    problems = []
    if not snapshots:
        problems.append(f"{client}: the reporter's lineage shows no snapshot")
    for snap in snapshots:
        if not snap.get("received") or snap.get("hub_host") != hub:
            problems.append(
                f"{client}: snapshot {snap['snapshot_id'][:12]} received={snap.get('received')} "
                f"hub_host={snap.get('hub_host')}, expected received from {hub}"
            )
    seen = {
        "snapshots": len(snapshots),
        "received": sum(1 for s in snapshots if s.get("received")),
        "hubs": sorted({str(s.get("hub_host")) for s in snapshots}),
    }
    return seen, problems


def cmd_hubs(args: argparse.Namespace) -> Json:
    split = parse_split(args.hub)
    every = sorted(c for clients in split.values() for c in clients)
    reporter = Reporter(args.via)
    claimed = claimed_snapshots(reporter, every)
    problems: list[str] = []
    result: dict[str, Json] = {}
    for hub, own in split.items():
        others = sorted(set(every) - set(own))
        served = served_repositories(hub)
        maintained = maintained_repositories(hub)
        offsite = offsite_repositories(hub)
        problems += compare(f"{hub}: rest-server data directory", served, own, others)
        problems += compare(f"{hub}: maintenance.json", maintained, own, others)
        if not offsite:
            problems.append(f"{hub}: no offsite destination")
        for destination, repos in offsite.items():
            problems += compare(f"{hub}: offsite {destination}", repos, own, others)
        receipts, found = receipt_problems(reporter, hub, own, claimed)
        problems += found
        lineage = {}
        for client in own:
            lineage[client], found = lineage_problems(reporter, hub, client)
            problems += found
        result[hub] = {
            "clients": own,
            "served": served,
            "maintained": maintained,
            "offsite": offsite,
            "receipts": receipts,
            "lineage": lineage,
        }
    return {"hubs": result, "problems": problems}
