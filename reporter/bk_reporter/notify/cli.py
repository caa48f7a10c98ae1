"""`bk-reporter notify` (the evaluator loop) and `bk-reporter silence` (the only way to silence).

The evaluator is its own process, not a task inside `serve`: only it reads the routes file with
the channels' secrets, a slow channel never delays ingest, and the advisory lock lets several run
(one per replica, say) with exactly one evaluating at a time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bk_reporter import db
from bk_reporter.notify import store
from bk_reporter.notify.alerts import Thresholds
from bk_reporter.notify.channels import RoutesError, load_healthcheck_url, load_routes, load_tunables
from bk_reporter.notify.evaluator import evaluate_once
from bk_reporter.notify.lifecycle import Policy
from bk_reporter.settings import Settings

log = logging.getLogger("bk_reporter.notify")


# The evaluator's tunables: a flag, else the routes file's key of the same name, else the default
# (the policy's and thresholds' own), so a deployment writes them once, into the file it writes
# anyway. key -> (flag, default, unit, help).
TUNABLES: dict[str, tuple[str, float, str, str]] = {
    "interval_seconds": ("--interval", 60.0, "SECONDS", "between evaluations"),
    "repeat_interval_hours": (
        "--repeat-interval",
        Policy().repeat_interval / timedelta(hours=1),
        "HOURS",
        "repeat while bad",
    ),
    "fire_after_minutes": ("--fire-after", Policy().fire_after / timedelta(minutes=1), "MINUTES", "damp shorter flaps"),
    "silent_key_days": (
        "--silent-key-days",
        Thresholds().silent_key_after / timedelta(days=1),
        "DAYS",
        "alert when a host's active keys signed nothing this long",
    ),
    "offsite_cadence_factor": (
        "--offsite-cadence-factor",
        Thresholds().offsite_cadence_factor,
        "FACTOR",
        "an offsite copy is late after this many of its destination's cadences",
    ),
    "offsite_without_cadence_hours": (
        "--offsite-without-cadence",
        Thresholds().offsite_without_cadence / timedelta(hours=1),
        "HOURS",
        "an offsite copy is late after this long when its destination declares no cadence",
    ),
    "hub_min_free_percent": (
        "--hub-min-free-percent",
        Thresholds().hub_min_free_fraction * 100,
        "PERCENT",
        "alert when a hub's free space is below this",
    ),
    "refused_window_hours": (
        "--refused-window-hours",
        Thresholds().refused_window / timedelta(hours=1),
        "HOURS",
        "a refused-manifests alert (security) clears this long after the host's last refusal",
    ),
}


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    notify = commands.add_parser("notify", parents=[common], help="evaluate the fleet and send notifications")
    notify.add_argument("--routes", type=Path, required=True, metavar="FILE", help="routes file (YAML, mode 0600)")
    notify.add_argument("--once", action="store_true", help="evaluate once and exit")
    for key, (flag, default, unit, text) in TUNABLES.items():
        notify.add_argument(
            flag,
            dest=key,
            type=float,
            default=None,
            metavar=unit,
            help=f"{text} (default: the routes file's {key}, else {default:g})",
        )
    notify.add_argument(
        "--healthcheck-url",
        default=None,
        help="Healthchecks-compatible ping after each evaluation (default: the routes file's healthcheck_url)",
    )
    silence = commands.add_parser("silence", parents=[common], help="silence a host (or one job) until a time")
    silence.add_argument("host")
    silence.add_argument("--job", default="", help="only this job (default: every job of the host)")
    silence.add_argument("--until", required=True, help="ISO date or time, UTC unless it says otherwise")
    silence.add_argument("--reason", default=None)


def _until(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SystemExit(f"bk-reporter silence: --until {text!r} is not an ISO date or time (2026-12-24)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _silence(settings: Settings, args: argparse.Namespace) -> int:
    until = _until(args.until)
    if until <= datetime.now(UTC):
        print(f"bk-reporter silence: --until {args.until} is in the past", file=sys.stderr)
        return 2
    with db.database(settings) as targets, psycopg.connect(targets.app_url) as conn:
        store.add_silence(conn, args.host, args.job, until, args.reason)
    what = f"{args.host} job {args.job}" if args.job else f"{args.host} (every job)"
    print(f"silenced {what} until {until.isoformat()} (security events are never silenced)")
    return 0


def _notify(settings: Settings, args: argparse.Namespace) -> int:
    try:
        routes = load_routes(args.routes)
        healthcheck_url = args.healthcheck_url or load_healthcheck_url(args.routes)
    except (RoutesError, OSError) as exc:
        print(f"bk-reporter notify: {exc}", file=sys.stderr)
        return 2
    try:
        tunables = load_tunables(args.routes, {key: value[1] for key, value in TUNABLES.items()})
    except (RoutesError, OSError) as exc:
        print(f"bk-reporter notify: {exc}", file=sys.stderr)
        return 2
    tunables.update({key: getattr(args, key) for key in TUNABLES if getattr(args, key) is not None})
    policy = Policy(
        repeat_interval=timedelta(hours=tunables["repeat_interval_hours"]),
        fire_after=timedelta(minutes=tunables["fire_after_minutes"]),
    )
    thresholds = Thresholds(
        silent_key_after=timedelta(days=tunables["silent_key_days"]),
        offsite_cadence_factor=tunables["offsite_cadence_factor"],
        offsite_without_cadence=timedelta(hours=tunables["offsite_without_cadence_hours"]),
        hub_min_free_fraction=tunables["hub_min_free_percent"] / 100,
        refused_window=timedelta(hours=tunables["refused_window_hours"]),
    )
    log.info("notify: %s", ", ".join(f"{key}={value:g}" for key, value in sorted(tunables.items())))
    with db.database(settings) as targets:
        while True:
            result = evaluate_once(
                targets.app_url,
                routes,
                datetime.now(UTC),
                policy=policy,
                healthcheck_url=healthcheck_url,
                thresholds=thresholds,
            )
            log.info(
                "evaluation: evaluated=%s transitions=%d sent=%d failed=%d",
                result.evaluated,
                result.transitions,
                result.sent,
                result.failed,
            )
            if args.once:
                return 1 if result.failed else 0
            time.sleep(tunables["interval_seconds"])


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {"notify": _notify, "silence": _silence}
