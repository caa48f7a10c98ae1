"""Secrets read from where the roles put them, searched for in every output, journal, spool file and
manifest.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from bkmol_hosts import Json, jobs, list_dir, read_file, read_json, spool_dir, text
from bkmol_offsite import rclone_conf
from bkmol_reporter import Reporter, event_text

# --- subcommand: secrets ---------------------------------------------------------------------------


SECRET_KEYS = re.compile(r"(pass|secret|key|token|credential|account)", re.IGNORECASE)


MIN_SECRET = 8


def url_password(url: str) -> str | None:
    parsed = urllib.parse.urlsplit(url.strip().removeprefix("rest:"))
    return urllib.parse.unquote(parsed.password) if parsed.password else None


def gather_secrets(hosts: Sequence[str]) -> dict[str, str]:
    """label -> secret, read from where the roles put them on the hosts."""
    found: dict[str, str] = {}

    def add(label: str, value: str | None) -> None:
        if value and len(value.strip()) >= MIN_SECRET:
            found[label] = value.strip()

    for host in hosts:
        for job, cfg in jobs(host).items():
            for repo in cfg.get("repositories", []):
                add(f"{host}:{job}:{repo['name']}:password", read_file(host, repo["password_file"]))
                url = read_file(host, repo["repository_file"]) or ""
                add(f"{host}:{job}:{repo['name']}:credential", url_password(url))
        maint = read_json(host, "/etc/bk/maintenance.json", {}) or {}
        for repo in maint.get("repositories", []):
            add(f"{host}:maintenance:{repo['name']}:password", read_file(host, repo["password_file"]))
            add(
                f"{host}:maintenance:{repo['name']}:credential",
                url_password(read_file(host, repo["repository_file"]) or ""),
            )
        for name in list_dir(host, "/etc/bk/offsite"):
            if not name.endswith(".json"):
                continue
            dest = read_json(host, f"/etc/bk/offsite/{name}", {}) or {}
            for section, values in rclone_conf(host, dest.get("rclone_config") or "/nonexistent").items():
                for key, value in values.items():
                    if SECRET_KEYS.search(key):
                        add(f"{host}:rclone:{section}:{key}", value)
    for index, value in enumerate(json.loads(os.environ.get("BKMOL_EXTRA_SECRETS") or "[]")):
        add(f"inventory:{index}", value)
    return found


def secret_forms(secret: str) -> set[str]:
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
    }
    return {f for f in forms if len(f) >= MIN_SECRET}


def cmd_secrets(args: argparse.Namespace) -> Json:
    secrets = gather_secrets(args.hosts)
    sources: dict[str, str] = {}
    for path in args.files:
        p = Path(path)
        if p.is_file():
            sources[f"file:{p.name}"] = p.read_text("utf-8", "replace")
    for host in args.hosts:
        sources[f"journal:{host}"] = text(host, ["journalctl", "--no-pager", "-q", "-o", "json"], check=False)
        spool = spool_dir(host)
        for sub in ("outbox", "rejected"):
            for name in list_dir(host, f"{spool}/{sub}"):
                sources[f"spool:{host}:{sub}/{name}"] = read_file(host, f"{spool}/{sub}/{name}") or ""
    if args.via:
        reporter = Reporter(args.via)
        for host in args.manifest_hosts or args.hosts:
            body = "\n".join(event_text(e) for e in reporter.events(host))
            sources[f"manifests:{host}"] = body
    leaks = []
    for label, secret in secrets.items():
        forms = secret_forms(secret)
        for source, content in sources.items():
            if any(form in content for form in forms):
                leaks.append({"secret": label, "found_in": source})
    problems = [f"secret {leak['secret']} appears in {leak['found_in']}" for leak in leaks]
    if len(secrets) < args.min_secrets:
        problems.append(
            f"only {len(secrets)} secrets found on the hosts (want at least {args.min_secrets}): the scan proves little"
        )
    return {
        "secrets": sorted(secrets),
        "sources": {k: len(v) for k, v in sorted(sources.items()) if not k.startswith("spool:")},
        "spool_files": sum(1 for k in sources if k.startswith("spool:")),
        "bytes_scanned": sum(len(v) for v in sources.values()),
        "leaks": leaks,
        "problems": problems,
    }
