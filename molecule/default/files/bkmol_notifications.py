"""The reporter's notifications and enrolled keys: notify-once, notifications, enrolled."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import time
import tomllib
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from bkmol_hosts import CheckFailed, Json, exec_argv, read_file, run, show
from bkmol_reporter import Reporter

# --- subcommands: notify-once, notifications, enrolled (the reporter's notifications and keys) -------


def unit_command(host: str, unit: str) -> tuple[list[str], str, dict[str, str]]:
    """A service's argv, user and environment, as systemd runs it."""
    props = show(host, unit, ["ExecStart", "User", "Environment"])
    argv = exec_argv(props.get("ExecStart", ""))
    if not argv:
        raise CheckFailed(f"{host}: {unit} has no ExecStart")
    env = dict(item.split("=", 1) for item in shlex.split(props.get("Environment", "")) if "=" in item)
    return argv, props.get("User") or "root", env


def option(argv: Sequence[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def cmd_notify_once(args: argparse.Namespace) -> Json:
    """One evaluation with the notify service's own command, user and configuration, told to fire
    without waiting (--fire-after 0): deterministic, where the service's loop would wait minutes."""
    argv, user, env = unit_command(args.host, args.unit)
    argv = [*argv, "--once", "--fire-after", str(args.fire_after)]
    env_args = [f"{k}={v}" for k, v in sorted(env.items())]
    started = time.time()
    proc = run(args.host, ["runuser", "-u", user, "--", "env", *env_args, *argv], check=False, timeout=300)
    lines = proc.stderr.decode("utf-8", "replace").splitlines()
    problems = [] if proc.returncode == 0 else [f"{args.host}: notify --once exited {proc.returncode}: {lines[-5:]}"]
    return {
        "host": args.host,
        "started_at": started,
        "seconds": round(time.time() - started, 3),
        "exit_status": proc.returncode,
        "log": [line[-400:] for line in lines[-10:]],
        "problems": problems,
    }


def latest_event(reporter: Reporter, host: str, job: str, since: float) -> Json | None:
    """The newest backup event of a host's job that finished after `since` (epoch seconds)."""
    moment = dt.datetime.fromtimestamp(since, dt.UTC).isoformat().replace("+00:00", "Z")
    page = reporter.get("/api/v1/events", {"host": host, "kind": "backup", "since": moment, "limit": "1000"})
    found = [e for e in page["events"] if e.get("job") == job]
    if not found:
        return None
    event = found[-1]
    received = dt.datetime.fromisoformat(event["received_at"].replace("Z", "+00:00")).timestamp()
    return {
        **{k: event.get(k) for k in ("id", "seq", "status", "finished_at", "received_at")},
        "received_epoch": received,
    }


def cmd_notifications(args: argparse.Namespace) -> Json:
    """The messages the receiver got (after the first --skip lines) and, per --event HOST:JOB, the
    newest backup event since --since at the reporter with the time it was received."""
    raw = read_file(args.host, args.file) or ""
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    messages = [
        {
            "received_at": line["received_at"],
            "title": str((line.get("message") or {}).get("title", "")),
            "body": str((line.get("message") or {}).get("message", "")),
            "type": (line.get("message") or {}).get("type"),
        }
        for line in lines[args.skip :]
    ]
    events: Json = {}
    if args.event:
        reporter = Reporter(args.via)
        for pair in args.event:
            host, _sep, job = pair.partition(":")
            events[pair] = latest_event(reporter, host, job, args.since)
    problems = [f"no backup event of {pair} since {args.since}" for pair, event in events.items() if event is None]
    return {"total": len(lines), "messages": messages, "events": events, "problems": problems}


def cmd_enrolled(args: argparse.Namespace) -> Json:
    """`bk-reporter hosts list --json` as the role runs it: the schema owner, its pgpass beside the
    reporter's configuration. Rows sorted; the owner's password never leaves the host."""
    argv, _user, env = unit_command(args.host, args.unit)
    config = env.get("BK_REPORTER_CONFIG")
    if not config:
        raise CheckFailed(f"{args.host}: {args.unit} sets no BK_REPORTER_CONFIG")
    pgpass = f"{Path(config).parent}/owner.pgpass"
    entry = (read_file(args.host, pgpass) or "").strip().split(":")
    if len(entry) < 5:
        raise CheckFailed(f"{args.host}: {pgpass} is not a pgpass line")
    # The application's database URL, as the schema owner (the pgpass line's role).
    app_url = urllib.parse.urlsplit(str(tomllib.loads(read_file(args.host, config) or "").get("database_url", "")))
    if not app_url.hostname:
        raise CheckFailed(f"{args.host}: {config} has no database_url")
    netloc = f"{entry[3]}@{app_url.hostname}" + (f":{app_url.port}" if app_url.port else "")
    owner_url = urllib.parse.urlunsplit(app_url._replace(netloc=netloc))
    cli = [argv[0], "hosts", "list", "--json", "--data-dir", option(argv, "--data-dir") or "/var/lib/bk-reporter"]
    env = {"BK_REPORTER_CONFIG": config, "PGPASSFILE": pgpass, "BK_REPORTER_OWNER_DATABASE_URL": owner_url}
    proc = run(args.host, cli, env=env)
    rows = json.loads(proc.stdout)
    keys = sorted(
        ({k: row.get(k) for k in ("host", "key_type", "fingerprint", "enrolled_at", "retired_at")} for row in rows),
        key=lambda r: (r["host"], r["fingerprint"]),
    )
    per_host: dict[str, int] = {}
    for key in keys:
        if not key["retired_at"]:
            per_host[key["host"]] = per_host.get(key["host"], 0) + 1
    return {"keys": keys, "active_per_host": per_host, "problems": []}
