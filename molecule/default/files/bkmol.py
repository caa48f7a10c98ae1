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
from collections.abc import Callable, Sequence
from typing import Any

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
from bkmol_hosts import CheckFailed, Json
from bkmol_hubs import cmd_hubs
from bkmol_notifications import cmd_enrolled, cmd_notifications, cmd_notify_once
from bkmol_offsite import cmd_offsite, cmd_offsite_keeps
from bkmol_pg_restore import cmd_pg_restore
from bkmol_reporter import cmd_reporter_up, cmd_reporter_url
from bkmol_retention import cmd_retention
from bkmol_secrets import cmd_secrets

# --- main ----------------------------------------------------------------------------------------

Argument = tuple[tuple[str, ...], dict[str, Any]]


def argument(*flags: str, **options: Any) -> Argument:
    """What one `add_argument(*flags, **options)` call of a subcommand adds."""
    return flags, options


# The arguments several subcommands take alike.
HOST = argument("host")
HOSTS = argument("hosts", nargs="+")
JOB = argument("job")
CLIENTS = argument("clients", nargs="+")
DESTINATION = argument("destination")
VIA = argument("--via", required=True)
HUB = argument("--hub", required=True)
REPOSITORY_LABEL = argument("--repository-label", default="hub")

# (name, the check it runs, its line in the top-level --help, its arguments in the order they are added)
Subcommand = tuple[str, Callable[[argparse.Namespace], Json], str, tuple[Argument, ...]]

SUBCOMMANDS: tuple[Subcommand, ...] = (
    ("units", cmd_units, "bk timers and services of hosts", (HOSTS,)),
    ("state", cmd_state, "chain state, outbox and runs of a host", (HOST,)),
    (
        "fire",
        cmd_fire,
        "make timers elapse now and wait for their services",
        (
            argument("pairs", nargs="+", metavar="HOST:TIMER"),
            argument("--timeout", type=float, default=300),
            argument("--expect", choices=["success", "any"], default="success"),
            argument("--stop-after", type=float, default=None, metavar="SECONDS", help="stop a run still going then"),
        ),
    ),
    (
        "snapshots",
        cmd_snapshots,
        "a client job's snapshots and the hub's snapshot files",
        (
            HOST,
            JOB,
            HUB,
            REPOSITORY_LABEL,
            argument("--newer-than", type=float, default=0, help="epoch seconds: a snapshot at least this new exists"),
        ),
    ),
    (
        "chain",
        cmd_chain,
        "the reporter's manifests of hosts, verified against the hosts",
        (
            argument("--via", required=True, help="instance whose bk.json names the reporter"),
            argument("--expect-empty-outbox", action="store_true"),
            HOSTS,
        ),
    ),
    (
        "receipts",
        cmd_receipts,
        "hub receipts confirm the clients' claimed snapshots",
        (VIA, HUB, REPOSITORY_LABEL, CLIENTS),
    ),
    (
        "append-only",
        cmd_append_only,
        "forget refused; another client's repository refused",
        (HOST, JOB, argument("--other", required=True), REPOSITORY_LABEL),
    ),
    (
        "compare",
        cmd_compare,
        "compare two file trees across instances",
        (
            argument("src_host"),
            argument("src_root"),
            argument("dst_host"),
            argument("dst_root"),
            argument("sub", nargs="*"),
            argument("--exclusive", action="store_true", help="the destination holds nothing but SUB"),
        ),
    ),
    (
        "offsite",
        cmd_offsite,
        "read an offsite copy with restic directly",
        (
            HUB,
            argument("--via", default=None, help="check the reporter's offsite-copy manifests too"),
            DESTINATION,
            CLIENTS,
        ),
    ),
    (
        "hubs",
        cmd_hubs,
        "each hub serves, receipts, maintains and copies only its own clients",
        (
            VIA,
            argument(
                "--hub", action="append", required=True, metavar="HUB=CLIENT,CLIENT", help="a hub and its clients"
            ),
        ),
    ),
    (
        "offsite-keeps",
        cmd_offsite_keeps,
        "what retention removed on the hub is still offsite",
        (HUB, argument("--state", required=True, help="the plan written by `retention before`"), DESTINATION),
    ),
    (
        "manifest",
        cmd_manifest,
        "the reporter holds a recent signed manifest of a kind from a host",
        (VIA, argument("--since", type=float, default=0), HOST, argument("kind")),
    ),
    (
        "reporter-up",
        cmd_reporter_up,
        "wait until the reporter answers",
        (VIA, argument("--timeout", type=float, default=120)),
    ),
    (
        "reporter-url",
        cmd_reporter_url,
        "the reporter's URL, and at its container's address",
        (VIA, argument("--network", default="bk-molecule"), argument("reporter")),
    ),
    (
        "pg-restore",
        cmd_pg_restore,
        "restore a job's database dump into a fresh database and compare",
        (HOST, JOB, argument("--fresh", default="bk_molecule_restored"), REPOSITORY_LABEL),
    ),
    (
        "retention",
        cmd_retention,
        "the hub's maintenance removes exactly what the policy says",
        (
            argument("phase", choices=["before", "after"]),
            HUB,
            argument("--via", default=None),
            argument("--state", required=True),
            argument("repos", nargs="+"),
        ),
    ),
    (
        "notify-once",
        cmd_notify_once,
        "one evaluation of the reporter's notify service, firing at once",
        (
            argument("--fire-after", type=float, default=0, metavar="MINUTES"),
            HOST,
            argument("unit", help="the notify service (`bk-reporter notify`), as `units` found it"),
        ),
    ),
    (
        "notifications",
        cmd_notifications,
        "messages a receiver file holds; the backup events behind them",
        (
            argument("--skip", type=int, default=0, help="lines already seen"),
            argument("--via", default=None),
            argument("--event", action="append", default=[], metavar="HOST:JOB"),
            argument("--since", type=float, default=0, help="epoch seconds: events finished after this"),
            HOST,
            argument("file"),
        ),
    ),
    (
        "enrolled",
        cmd_enrolled,
        "the reporter's enrolled keys (bk-reporter hosts list --json)",
        (HOST, argument("unit", help="a bk-reporter service whose environment names the configuration")),
    ),
    (
        "secrets",
        cmd_secrets,
        "secrets appear in no output, journal, spool or manifest",
        (
            argument("--via", default=None, help="scan the reporter's manifests too"),
            argument("--file", dest="files", action="append", default=[]),
            argument("--manifest-host", dest="manifest_hosts", action="append", default=[]),
            argument("--min-secrets", type=int, default=1),
            HOSTS,
        ),
    ),
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name, run, summary, arguments in SUBCOMMANDS:
        command = sub.add_parser(name, help=summary)
        for flags, options in arguments:
            command.add_argument(*flags, **options)
        command.set_defaults(func=run)
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
