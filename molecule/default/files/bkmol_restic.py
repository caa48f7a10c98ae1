"""restic repositories as the checks open them: a client job's, the hub maintenance's, and the
hub's data directory; restic's JSON output and its times.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any

from bkmol_hosts import CheckFailed, Json, jobs, read_json, run


def restic_json(host: str, env: dict[str, str], argv: Sequence[str], timeout: float = 600) -> Any:
    proc = run(host, ["restic", "--no-lock", *argv, "--json"], env=env, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise CheckFailed(f"{host}: restic {' '.join(argv)} failed: {proc.stderr.decode()[-1500:]}")
    out = proc.stdout.decode().strip()
    if not out:
        return None
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        # Some commands (`ls`) print one JSON document per line.
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def job_repo_env(host: str, job: str, label: str) -> dict[str, str]:
    doc = jobs(host)[job]
    repo = next(r for r in doc["repositories"] if r["name"] == label)
    return {"RESTIC_REPOSITORY_FILE": repo["repository_file"], "RESTIC_PASSWORD_FILE": repo["password_file"]}


def maintenance_repo(hub: str, name: str) -> Json:
    cfg = read_json(hub, "/etc/bk/maintenance.json", {}) or {}
    for repo in cfg.get("repositories", []):
        if repo.get("name") == name:
            return repo
    raise CheckFailed(f"{hub}: /etc/bk/maintenance.json has no repository {name!r}")


def maintenance_env(hub: str, name: str) -> dict[str, str]:
    repo = maintenance_repo(hub, name)
    return {"RESTIC_REPOSITORY_FILE": repo["repository_file"], "RESTIC_PASSWORD_FILE": repo["password_file"]}


def hub_data_dir(hub: str) -> str:
    cfg = read_json(hub, "/etc/bk/hub.json", {}) or {}
    return cfg.get("data_dir") or "/srv/bk-hub"


def repo_name_from_url(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def parse_time(value: str) -> dt.datetime:
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        raise CheckFailed(f"cannot parse restic time {value!r}")
    frac = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return dt.datetime.fromisoformat(match.group(1) + frac + zone)
