"""Evidence gathering and checks for the molecule scenario's verify step.

Runs on the machine (the molecule controller) and reaches the instances with
``podman exec``, so that secrets read from the hosts never pass through Ansible
module arguments or results (and so never reach a log). Every subcommand prints
one JSON object: what it saw, and ``problems``, a list of human sentences. The
exit status is 1 when ``problems`` is not empty, 0 otherwise; verify.yml asserts
on the JSON.

The checks read the hosts' own configuration as the runner contract
(docs/runner.md) defines it: /etc/bk/bk.json, /etc/bk/jobs/*.json,
/etc/bk/hub.json, /etc/bk/maintenance.json, /etc/bk/offsite/*.json, the chain
state and the spool. Nothing here knows the roles' variable names.

This file is the entry point (the argument parser and main); the checks live in the bkmol_*.py
modules beside it, one per concern, imported by name (Python puts a script's directory first on
sys.path).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from bkmol_backups import (
    cmd_append_only,
    cmd_chain,
    cmd_compare,
    cmd_fire,
    cmd_manifest,
    cmd_receipts,
    cmd_snapshots,
    cmd_state,
    cmd_units,
)
from bkmol_hosts import CheckFailed
from bkmol_hubs import cmd_hubs
from bkmol_notifications import cmd_enrolled, cmd_notifications, cmd_notify_once
from bkmol_offsite import cmd_offsite, cmd_offsite_keeps
from bkmol_pg_restore import cmd_pg_restore
from bkmol_reporter import cmd_reporter_up, cmd_reporter_url
from bkmol_retention import cmd_retention
from bkmol_secrets import cmd_secrets

# --- main ----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:  # noqa: PLR0915 (one flat list of subcommands reads best)
    top = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("units", help="bk timers and services of hosts")
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=cmd_units)

    p = sub.add_parser("state", help="chain state, outbox and runs of a host")
    p.add_argument("host")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("fire", help="make timers elapse now and wait for their services")
    p.add_argument("pairs", nargs="+", metavar="HOST:TIMER")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--expect", choices=["success", "any"], default="success")
    p.add_argument("--stop-after", type=float, default=None, metavar="SECONDS", help="stop a run still going then")
    p.set_defaults(func=cmd_fire)

    p = sub.add_parser("snapshots", help="a client job's snapshots and the hub's snapshot files")
    p.add_argument("host")
    p.add_argument("job")
    p.add_argument("--hub", required=True)
    p.add_argument("--repository-label", default="hub")
    p.add_argument("--newer-than", type=float, default=0, help="epoch seconds: a snapshot at least this new exists")
    p.set_defaults(func=cmd_snapshots)

    p = sub.add_parser("chain", help="the reporter's manifests of hosts, verified against the hosts")
    p.add_argument("--via", required=True, help="instance whose bk.json names the reporter")
    p.add_argument("--expect-empty-outbox", action="store_true")
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("receipts", help="hub receipts confirm the clients' claimed snapshots")
    p.add_argument("--via", required=True)
    p.add_argument("--hub", required=True)
    p.add_argument("--repository-label", default="hub")
    p.add_argument("clients", nargs="+")
    p.set_defaults(func=cmd_receipts)

    p = sub.add_parser("append-only", help="forget refused; another client's repository refused")
    p.add_argument("host")
    p.add_argument("job")
    p.add_argument("--other", required=True)
    p.add_argument("--repository-label", default="hub")
    p.set_defaults(func=cmd_append_only)

    p = sub.add_parser("compare", help="compare two file trees across instances")
    p.add_argument("src_host")
    p.add_argument("src_root")
    p.add_argument("dst_host")
    p.add_argument("dst_root")
    p.add_argument("sub", nargs="*")
    p.add_argument("--exclusive", action="store_true", help="the destination holds nothing but SUB")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("offsite", help="read an offsite copy with restic directly")
    p.add_argument("--hub", required=True)
    p.add_argument("--via", default=None, help="check the reporter's offsite-copy manifests too")
    p.add_argument("destination")
    p.add_argument("clients", nargs="+")
    p.set_defaults(func=cmd_offsite)

    p = sub.add_parser("hubs", help="each hub serves, receipts, maintains and copies only its own clients")
    p.add_argument("--via", required=True)
    p.add_argument("--hub", action="append", required=True, metavar="HUB=CLIENT,CLIENT", help="a hub and its clients")
    p.set_defaults(func=cmd_hubs)

    p = sub.add_parser("offsite-keeps", help="what retention removed on the hub is still offsite")
    p.add_argument("--hub", required=True)
    p.add_argument("--state", required=True, help="the plan written by `retention before`")
    p.add_argument("destination")
    p.set_defaults(func=cmd_offsite_keeps)

    p = sub.add_parser("manifest", help="the reporter holds a recent signed manifest of a kind from a host")
    p.add_argument("--via", required=True)
    p.add_argument("--since", type=float, default=0)
    p.add_argument("host")
    p.add_argument("kind")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("reporter-up", help="wait until the reporter answers")
    p.add_argument("--via", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(func=cmd_reporter_up)

    p = sub.add_parser("reporter-url", help="the reporter's URL, and at its container's address")
    p.add_argument("--via", required=True)
    p.add_argument("--network", default="bk-molecule")
    p.add_argument("reporter")
    p.set_defaults(func=cmd_reporter_url)

    p = sub.add_parser("pg-restore", help="restore a job's database dump into a fresh database and compare")
    p.add_argument("host")
    p.add_argument("job")
    p.add_argument("--fresh", default="bk_molecule_restored")
    p.add_argument("--repository-label", default="hub")
    p.set_defaults(func=cmd_pg_restore)

    p = sub.add_parser("retention", help="the hub's maintenance removes exactly what the policy says")
    p.add_argument("phase", choices=["before", "after"])
    p.add_argument("--hub", required=True)
    p.add_argument("--via", default=None)
    p.add_argument("--state", required=True)
    p.add_argument("repos", nargs="+")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("notify-once", help="one evaluation of the reporter's notify service, firing at once")
    p.add_argument("--fire-after", type=float, default=0, metavar="MINUTES")
    p.add_argument("host")
    p.add_argument("unit", help="the notify service (`bk-reporter notify`), as `units` found it")
    p.set_defaults(func=cmd_notify_once)

    p = sub.add_parser("notifications", help="messages a receiver file holds; the backup events behind them")
    p.add_argument("--skip", type=int, default=0, help="lines already seen")
    p.add_argument("--via", default=None)
    p.add_argument("--event", action="append", default=[], metavar="HOST:JOB")
    p.add_argument("--since", type=float, default=0, help="epoch seconds: events finished after this")
    p.add_argument("host")
    p.add_argument("file")
    p.set_defaults(func=cmd_notifications)

    p = sub.add_parser("enrolled", help="the reporter's enrolled keys (bk-reporter hosts list --json)")
    p.add_argument("host")
    p.add_argument("unit", help="a bk-reporter service whose environment names the configuration")
    p.set_defaults(func=cmd_enrolled)

    p = sub.add_parser("secrets", help="secrets appear in no output, journal, spool or manifest")
    p.add_argument("--via", default=None, help="scan the reporter's manifests too")
    p.add_argument("--file", dest="files", action="append", default=[])
    p.add_argument("--manifest-host", dest="manifest_hosts", action="append", default=[])
    p.add_argument("--min-secrets", type=int, default=1)
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=cmd_secrets)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.func(args)
    except CheckFailed as exc:
        result = {"problems": [str(exc)]}
    except Exception as exc:  # a broken check must fail with its reason, as JSON
        result = {"problems": [f"{type(exc).__name__}: {exc}"]}
    # Credentials in URLs never leave this program, whatever a tool printed.
    print(re.sub(r"//[^/@\s\"]*:[^/@\s\"]*@", "//***@", json.dumps(result, indent=1, sort_keys=True)))
    return 1 if result.get("problems") else 0


if __name__ == "__main__":
    sys.exit(main())
