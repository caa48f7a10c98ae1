# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``bk-run``: the host runner (commands and configuration: docs/runner.md).

Standard library only. The exit status is the work's, never the delivery's."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from bk_evidence.files import LockTimeout
from bk_evidence.recorder import BK_VERSION, Recorder
from bk_evidence.settings import ConfigError, Settings

from .config import Hub, Job, Maintenance, Offsite
from .jobs import backup, check
from .maintenance import maintain
from .offsite import offsite_copy
from .receipts import receipts

DEFAULT_CONFIG_DIR = "/etc/bk"
USAGE_ERROR = 2


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=1, sort_keys=True) + "\n")


def _job_command(work: Callable[..., Any]) -> Callable[[Settings, Recorder, argparse.Namespace], int]:
    def command(settings: Settings, recorder: Recorder, args: argparse.Namespace) -> int:
        job = Job(settings.config_dir, args.job)
        status, envelopes = work(settings, job, recorder)
        if args.json:
            _print_json({"exit_code": status, "envelopes": envelopes})
        return int(status)

    return command


def _receipts(settings: Settings, recorder: Recorder, _args: argparse.Namespace) -> int:
    return receipts(settings, Hub(settings.config_dir), recorder)


def _maintain(settings: Settings, recorder: Recorder, args: argparse.Namespace) -> int:
    maintenance = Maintenance(settings.config_dir, settings.state_dir)
    unknown = sorted(set(args.repositories) - {repository.name for repository in maintenance.repositories})
    if unknown:
        raise ConfigError("not in maintenance.json: %s" % ", ".join(unknown))
    return maintain(settings, maintenance, recorder, args.repositories)


def _offsite(settings: Settings, recorder: Recorder, args: argparse.Namespace) -> int:
    return offsite_copy(settings, Offsite(settings.config_dir, settings.state_dir, args.destination), recorder)


def validate(kind: str, path: str) -> Optional[str]:
    """What is wrong with a configuration file before it is installed, or None.

    Stricter than a run: what a run would only warn about (an unknown key, such as a
    misspelt keep_daily) is refused here, so that it never reaches the host."""
    warnings = io.StringIO()
    problems = []
    try:
        with contextlib.redirect_stderr(warnings):
            if kind == "maintenance":
                Maintenance(os.path.dirname(path), "/var/lib/bk", path=path)
    except ConfigError as exc:
        problems.append(str(exc))
    problems[:0] = [line[len("bk: ") :] for line in warnings.getvalue().splitlines() if line.startswith("bk: ")]
    return "; ".join(problems) or None


def _validate(args: argparse.Namespace) -> int:
    problem = validate(args.kind, args.file)
    if problem:
        sys.stderr.write("bk: %s\n" % problem)
        return USAGE_ERROR
    return 0


def _flush(settings: Settings, recorder: Recorder, _args: argparse.Namespace) -> int:
    if not settings.reporter_url:
        sys.stderr.write(
            "bk: no reporter_url configured; %d manifests wait in the spool\n" % len(recorder.spool.pending())
        )
        return 0
    report = recorder.deliver_quietly(settings.flush_deadline_seconds)
    if report is not None:
        sys.stdout.write(_describe_delivery(report.as_dict()) + "\n")
    return 0


def _describe_delivery(report: Dict[str, Any]) -> str:
    text = "delivered %(delivered)d, rejected %(rejected)d, %(remaining)d waiting" % report
    return text + (" (%s)" % report["stopped"] if report["stopped"] else "")


def status_report(settings: Settings, recorder: Recorder) -> Dict[str, Any]:
    """What ``bk-run status --json`` prints."""
    pending = recorder.spool.pending()
    rejected = recorder.spool.rejected()
    return {
        "host": settings.host,
        "bk": BK_VERSION,
        "chain": {"seq": recorder.chain.state().seq, "last_sha256": recorder.chain.state().last_sha256},
        "reporter_url": settings.reporter_url,
        "spool": {
            "pending": len(pending),
            "oldest_pending": pending[0].name if pending else None,
            "rejected": [path.name for path in rejected],
            "directory": str(recorder.spool.directory),
        },
        "runs": recorder.runs.entries(),
    }


def _status(settings: Settings, recorder: Recorder, args: argparse.Namespace) -> int:
    report = status_report(settings, recorder)
    if args.json:
        _print_json(report)
    else:
        sys.stdout.write(_status_text(report))
    return 0


def _status_text(report: Dict[str, Any]) -> str:
    spool = report["spool"]
    lines = [
        "host %s, chain at seq %d" % (report["host"], report["chain"]["seq"]),
        "reporter %s" % (report["reporter_url"] or "(none configured)"),
        "spool %s: %d waiting%s"
        % (
            spool["directory"],
            spool["pending"],
            ", oldest %s" % spool["oldest_pending"] if spool["oldest_pending"] else "",
        ),
    ]
    if spool["rejected"]:
        lines.append(
            "REJECTED by the reporter (see %s/rejected/*.reason): %d" % (spool["directory"], len(spool["rejected"]))
        )
    lines.append("last runs:")
    for key, run in sorted(report["runs"].items()):
        lines.append(
            "  %-40s %-8s %s  seq %s%s"
            % (key, run.get("status"), run.get("finished_at"), run.get("seq"), _snapshot_note(run))
        )
    return "\n".join(lines) + "\n"


def _snapshot_note(run: Dict[str, Any]) -> str:
    return "  snapshot %s" % run["snapshot"][:8] if run.get("snapshot") else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bk-run", description="bk's host runner: restic jobs with signed manifests")
    parser.add_argument("--config", default=DEFAULT_CONFIG_DIR, help="configuration directory (default /etc/bk)")
    parser.add_argument("--version", action="version", version="bk-run " + BK_VERSION)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, work, text in (("backup", backup, "back up a job"), ("check", check, "check a job's repositories")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job")
        command.add_argument("--json", action="store_true", help="print the exit code and the envelopes as JSON")
        command.set_defaults(handler=_job_command(work), deliver=True)
    commands.add_parser("flush", help="deliver the spool now").set_defaults(handler=_flush, deliver=False)
    status = commands.add_parser("status", help="last runs and spool state")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status, deliver=False)
    commands.add_parser("receipts", help="hub: report newly arrived snapshots").set_defaults(
        handler=_receipts, deliver=True
    )
    maintenance = commands.add_parser("maintain", help="hub: forget and prune per maintenance.json")
    maintenance.add_argument("repositories", nargs="*")
    maintenance.set_defaults(handler=_maintain, deliver=True)
    offsite = commands.add_parser("offsite", help="hub: copy repositories to an offsite destination")
    offsite.add_argument("destination")
    offsite.set_defaults(handler=_offsite, deliver=True)
    checked = commands.add_parser("validate", help="check a configuration file before it is installed")
    checked.add_argument("kind", choices=["maintenance"])
    checked.add_argument("file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":  # needs no bk.json: it checks a file the role is about to write
        return _validate(args)
    early = None
    try:
        settings = Settings(args.config)
        recorder = Recorder(settings)
        if args.deliver:  # a command doing work: its manifest will be signed once the work is done
            recorder.prepare_in_background()
        if args.deliver and settings.reporter_url:
            early = recorder.start_early_delivery(settings.delivery_deadline_seconds)
        status = args.handler(settings, recorder, args)
    except (ConfigError, LockTimeout) as exc:
        sys.stderr.write("bk: %s\n" % exc)
        return USAGE_ERROR
    if early is not None and early.reporter_away():
        sys.stderr.write(
            "bk: the reporter could not be reached at the start of this run; %d manifests waiting in the spool\n"
            % len(recorder.spool.pending())
        )
    elif args.deliver:
        report = recorder.deliver_quietly(settings.delivery_deadline_seconds)
        if report is not None and report.remaining:
            sys.stderr.write("bk: %s\n" % _describe_delivery(report.as_dict()))
    return status
