"""`bk-reporter`: serve, migrate, hosts, status, audit, openapi.

Every command takes --data-dir and --config (before or after the command name) and
works whether or not `serve` is running: with the embedded database, the first user of
the private cluster starts it and the last one stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

from . import __version__, db, fleet, hosts, logs, openapi, readmodel
from .app import create_app
from .audit import audit
from .http_protocol import with_header_deadline
from .notify import cli as notify_cli
from .pgcluster import ClusterError
from .settings import Settings, SettingsError, load

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("bk_reporter.cli")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, default=argparse.SUPPRESS, help="data directory (default: $BK_REPORTER_DATA_DIR)"
    )
    common.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="TOML configuration file (default: $BK_REPORTER_CONFIG)"
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(prog="bk-reporter", parents=[common], description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bk-reporter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP server")
    serve.add_argument("--listen", default=None, metavar="HOST:PORT", help="address to listen on (127.0.0.1:8080)")
    serve.add_argument("--tls-cert", default=None, metavar="FILE", help="PEM certificate (chain) for HTTPS")
    serve.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key for HTTPS")

    commands.add_parser("migrate", parents=[common], help="apply pending schema migrations and grants (as the owner)")

    host_commands = commands.add_parser("hosts", parents=[common], help="enrolled host keys").add_subparsers(
        dest="hosts_command", required=True, metavar="ACTION"
    )
    add = host_commands.add_parser("add", parents=[common], help="enroll a host's public key")
    add.add_argument("name")
    add.add_argument("--key", required=True, help='OpenSSH public key line, "keytype base64 [comment]"')
    imported = host_commands.add_parser("import", parents=[common], help="enroll every key of an allowed_signers file")
    imported.add_argument("file", type=Path)
    listed = host_commands.add_parser("list", parents=[common], help="list enrolled keys")
    listed.add_argument("--json", action="store_true")
    retire = host_commands.add_parser("retire", parents=[common], help="retire a key (it keeps verifying history)")
    retire.add_argument("name")
    retire.add_argument("key", help="the public key line or its SHA256: fingerprint")

    status = commands.add_parser("status", parents=[common], help="state of every host and job")
    status.add_argument("--json", action="store_true", help="print what GET /api/v1/hosts answers")

    audited = commands.add_parser("audit", parents=[common], help="re-verify every stored signature and chain")
    audited.add_argument("--json", action="store_true")
    audited.add_argument(
        "--allowed-signers",
        type=Path,
        metavar="FILE",
        help="verify against the keys of this allowed_signers file instead of the database's host_keys",
    )

    commands.add_parser("openapi", parents=[common], help="print the OpenAPI document")
    notify_cli.add_commands(commands, common)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "data_dir": getattr(args, "data_dir", None),
        "listen": getattr(args, "listen", None),
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
    }
    return load({key: str(value) for key, value in flags.items() if value is not None}, getattr(args, "config", None))


# -- commands ----------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    with db.database(settings) as targets:
        db.ensure_current_schema(targets, settings)
        config = uvicorn.Config(
            create_app(settings, targets.app_url, start_workers=True),
            host=settings.listen_host,
            port=settings.listen_port,
            ssl_certfile=settings.tls_cert,
            ssl_keyfile=settings.tls_key,
            proxy_headers=settings.forwarded_allow_ips is not None,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_config=None,
            access_log=False,
            server_header=False,
            http=with_header_deadline(settings.header_timeout_seconds),
            limit_concurrency=settings.max_connections,
        )
        sockets = [_bind(settings.listen)]
        if settings.ingest_listen is not None:
            sockets.append(_bind(settings.ingest_listen))
        # What is built to serve (modules, classes, the application) lives as long as the
        # process. Out of the cycle collector's sight, a full collection walks only what requests
        # leave behind; walking everything paused every answer for tens of milliseconds
        # (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        with _stop_signals_return_here():
            uvicorn.Server(config).run(sockets=sockets)
    return EXIT_OK


def _bind(listen: str) -> socket.socket:
    """A listening socket for HOST:PORT (uvicorn serves several only when given them bound)."""
    address = Settings(listen=listen)
    family = socket.AF_INET6 if ":" in address.listen_host else socket.AF_INET
    try:
        return socket.create_server((address.listen_host, address.listen_port), family=family, backlog=2048)
    except OSError as exc:
        raise SettingsError(f"cannot listen on {listen}: {exc.strerror}") from exc


@contextmanager
def _stop_signals_return_here() -> Iterator[None]:
    """Let `serve` finish its cleanup (the embedded cluster) after SIGTERM or SIGINT.

    uvicorn handles these signals while it serves, and once shut down re-raises the one that
    stopped it to the handler that was there before: this one, which only notes it.
    """
    stopped_by: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: stopped_by.append(number)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped_by:
        log.info("stopped", extra={"signal": signal.Signals(stopped_by[0]).name})


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    with db.database(settings) as targets:
        applied = db.migrate(targets.owner_url, settings.app_role, settings.reader_role)
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"schema is current ({len(db.available_migrations())} migrations); privileges granted to {settings.app_role}")
    return EXIT_OK


def _hosts(settings: Settings, args: argparse.Namespace) -> int:
    with db.database(settings) as targets:
        db.ensure_current_schema(targets, settings)
        with psycopg.connect(targets.owner_url, autocommit=True) as conn:
            return HOST_ACTIONS[args.hosts_command](conn, args)


def _hosts_add(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    return _print_enrolled(hosts.enroll(conn, [hosts.host_key(args.name, args.key)]))


def _hosts_import(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        raise hosts.EnrollmentError(f"cannot read {args.file}: {exc.strerror}") from exc
    return _print_enrolled(hosts.enroll(conn, hosts.parse_allowed_signers(text)))


def _print_enrolled(results: Sequence[tuple[hosts.HostKey, bool]]) -> int:
    for key, new in results:
        print(f"{'enrolled' if new else 'unchanged'} {key.host} {key.key_type} {key.fingerprint}")
    return EXIT_OK


def _hosts_list(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    rows = hosts.enrolled(conn)
    for warning in hosts.doubled_keys(rows):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps([fleet.json_row(row, *row.keys()) for row in rows], indent=2))
        return EXIT_OK
    for row in rows:
        retired = f"retired {fleet.timestamp(row['retired_at'])}" if row["retired_at"] else "active"
        print(f"{row['host']}\t{row['key_type']}\t{row['fingerprint']}\t{retired}\t{row['comment'] or ''}")
    return EXIT_OK


def _hosts_retire(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    print(f"retired {args.name} {hosts.retire(conn, args.name, args.key)}")
    return EXIT_OK


HOST_ACTIONS: dict[str, Callable[[psycopg.Connection, argparse.Namespace], int]] = {
    "add": _hosts_add,
    "import": _hosts_import,
    "list": _hosts_list,
    "retire": _hosts_retire,
}


def _status(settings: Settings, args: argparse.Namespace) -> int:
    with db.database(settings) as targets:
        db.ensure_current_schema(targets, settings)
        state = asyncio.run(_read_fleet(targets.app_url))
    document = fleet.fleet_document(state.hosts, state.jobs, datetime.now(UTC))
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(status_table(document))
    return EXIT_OK


async def _read_fleet(url: str) -> readmodel.Fleet:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await readmodel.fleet(conn)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    minutes = int(seconds // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    return f"{days}d{hours:02d}h" if days else f"{hours}h{minutes:02d}m"


def status_table(document: dict[str, Any]) -> str:
    """The fleet document as the table `bk-reporter status` prints, worst first."""
    header = ("HOST", "JOB", "KIND", "STATE", "LAST SUCCESS", "AGO", "LAST RUN", "CHAIN")
    rows = [header]
    for host in document["hosts"]:
        chain = host["chain"]
        chain_text = "-"
        if chain is not None:
            chain_text = f"seq {chain['last_seq']}, {chain['missing']} missing, {chain['breaks']} breaks"
        if not host["jobs"]:
            rows.append((host["host"], "-", "-", host["state"], "-", "never", "-", chain_text))
        for job in host["jobs"]:
            rows.append(
                (
                    host["host"],
                    job["job"] or "-",
                    job["kind"],
                    job["state"],
                    job["last_success_at"] or "-",
                    _age(job["last_success_age_seconds"]),
                    job["last_status"],
                    chain_text,
                )
            )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    counts = ", ".join(f"{count} {state}" for state, count in document["counts"].items() if count)
    return "\n".join([*lines, "", f"{counts or 'no hosts yet'} (as of {document['generated_at']})"])


def _trusted_keys(path: Path | None) -> dict[str, list[str]] | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise hosts.EnrollmentError(f"cannot read {path}: {exc.strerror}") from exc
    keys: dict[str, list[str]] = {}
    for key in hosts.parse_allowed_signers(text):
        keys.setdefault(key.host, []).append(key.public_key)
    return keys


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    trusted_keys = _trusted_keys(args.allowed_signers)
    with db.database(settings) as targets:
        db.ensure_current_schema(targets, settings)
        with psycopg.connect(targets.app_url) as conn:
            report = audit(
                conn, progress=lambda n: print(f"audited {n} events...", file=sys.stderr), trusted_keys=trusted_keys
            )
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for problem in report.problems:
            where = f"{problem.host} seq {problem.seq}" if problem.seq is not None else problem.host
            print(f"BROKEN {where}: {problem.what}" + (f" (event {problem.event_id})" if problem.event_id else ""))
        verdict = "intact" if report.intact else f"{len(report.problems)} problems"
        print(f"audited {report.events} events from {report.hosts} hosts: {verdict}")
    return EXIT_OK if report.intact else EXIT_FAILED


def _openapi(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(openapi.document(), indent=2))
    return EXIT_OK


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": _serve,
    "migrate": _migrate,
    "hosts": _hosts,
    "status": _status,
    "audit": _audit,
    "openapi": _openapi,
    **notify_cli.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"bk-reporter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level)
    try:
        return COMMANDS[args.command](settings, args)
    except (hosts.EnrollmentError, db.DatabaseError, ClusterError, SettingsError) as exc:
        print(f"bk-reporter: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.OperationalError as exc:
        print(f"bk-reporter: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_FAILED
