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
from bk_reporter.notify.channels import RoutesError, load_healthcheck_url, load_routes
from bk_reporter.notify.evaluator import evaluate_once
from bk_reporter.notify.lifecycle import Policy
from bk_reporter.settings import Settings

log = logging.getLogger("bk_reporter.notify")


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    notify = commands.add_parser("notify", parents=[common], help="evaluate the fleet and send notifications")
    notify.add_argument("--routes", type=Path, required=True, metavar="FILE", help="routes file (YAML, mode 0600)")
    notify.add_argument("--interval", type=float, default=60.0, metavar="SECONDS", help="between evaluations")
    notify.add_argument("--once", action="store_true", help="evaluate once and exit")
    notify.add_argument("--repeat-interval", type=float, default=24.0, metavar="HOURS", help="repeat while bad")
    notify.add_argument("--fire-after", type=float, default=5.0, metavar="MINUTES", help="damp shorter flaps")
    notify.add_argument(
        "--silent-key-days", type=float, default=7.0, metavar="DAYS", help="a host's keys quiet this long"
    )
    notify.add_argument(
        "--offsite-cadence-factor", type=float, default=2.0, help="offsite copy late after this many cadences"
    )
    notify.add_argument("--hub-min-free-percent", type=float, default=10.0, help="hub free space alert below this")
    notify.add_argument(
        "--refused-window-hours",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="a refused-manifests alert (security) clears this long after the host's last refusal",
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
    policy = Policy(
        repeat_interval=timedelta(hours=args.repeat_interval), fire_after=timedelta(minutes=args.fire_after)
    )
    thresholds = Thresholds(
        silent_key_after=timedelta(days=args.silent_key_days),
        offsite_cadence_factor=args.offsite_cadence_factor,
        hub_min_free_fraction=args.hub_min_free_percent / 100,
        refused_window=timedelta(hours=args.refused_window_hours),
    )
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
            time.sleep(args.interval)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {"notify": _notify, "silence": _silence}
