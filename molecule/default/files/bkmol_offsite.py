"""Offsite copies read with restic directly, past the hub: listed, checked, restored and compared."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bkmol_backups import compare_trees, tree
from bkmol_hosts import CheckFailed, Json, jobs, read_file, read_json, run
from bkmol_reporter import Reporter, manifests
from bkmol_restic import maintenance_env, restic_json

# --- subcommand: offsite ----------------------------------------------------------------------


def rclone_conf(hub: str, path: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in (read_file(hub, path) or "").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith(("#", ";")):
            key, _sep, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def offsite_repository(hub: str, dest: Json, repo: str) -> tuple[str, dict[str, str]]:
    """The restic repository URL and environment that read the offsite copy of `repo` directly."""
    remote = dest["remote"].rstrip("/")
    name, _sep, rest = remote.partition(":")
    conf = rclone_conf(hub, dest["rclone_config"]).get(name, {})
    kind = conf.get("type", "local" if not rest else "")
    if kind == "alias":
        target = conf.get("remote", "")
        return offsite_repository(hub, dict(dest, remote=target + ("/" if rest else "") + rest), repo)
    if kind == "local" or remote.startswith("/"):
        path = rest if ":" in remote else remote
        return f"{path}/{repo}", {}
    if kind == "s3":
        endpoint = conf["endpoint"].rstrip("/")
        env = {
            "AWS_ACCESS_KEY_ID": conf.get("access_key_id", ""),
            "AWS_SECRET_ACCESS_KEY": conf.get("secret_access_key", ""),
        }
        if conf.get("region"):
            env["AWS_DEFAULT_REGION"] = conf["region"]
        return f"s3:{endpoint}/{rest.strip('/')}/{repo}", env
    raise CheckFailed(f"{hub}: offsite remote type {kind!r} is not readable by this check")


def latest_offsite_manifest(reporter: Reporter, hub: str, destination: str, repo: str) -> Json | None:
    found = [
        doc
        for doc, _text, _sig in manifests(reporter.events(hub))
        if doc.get("kind") == "offsite-copy"
        and (doc.get("repository") or {}).get("name") == repo
        and (doc.get("offsite") or {}).get("destination") == destination
    ]
    return max(found, key=lambda d: int(d["seq"])) if found else None


def cmd_offsite(args: argparse.Namespace) -> Json:
    """Read an offsite copy with restic directly: list, check --read-data, restore, compare."""
    hub = args.hub
    dest = read_json(hub, f"/etc/bk/offsite/{args.destination}.json")
    if not isinstance(dest, dict):
        raise CheckFailed(f"{hub}: no /etc/bk/offsite/{args.destination}.json")
    reporter = Reporter(args.via) if args.via else None
    problems: list[str] = []
    repos = []
    for client in args.clients:
        env_hub = maintenance_env(hub, client)
        hub_snaps = {s["id"] for s in restic_json(hub, env_hub, ["snapshots"]) or []}
        url, env = offsite_repository(hub, dest, client)
        env = {**env, "RESTIC_REPOSITORY": url, "RESTIC_PASSWORD_FILE": env_hub["RESTIC_PASSWORD_FILE"]}
        snaps = restic_json(hub, env, ["snapshots"]) or []
        ids = {s["id"] for s in snaps}
        where = f"{args.destination}/{client}"
        if not hub_snaps <= ids:
            problems.append(f"{where}: snapshots on the hub missing offsite: {sorted(hub_snaps - ids)[:5]}")
        if reporter:
            doc = latest_offsite_manifest(reporter, hub, args.destination, client)
            if doc is None:
                problems.append(f"{where}: the reporter has no offsite-copy manifest")
            elif set(doc["offsite"].get("snapshots") or []) != ids or doc.get("status") != "success":
                problems.append(f"{where}: the offsite-copy manifest ({doc.get('status')}) lists other snapshots")
        check = run(hub, ["restic", "--no-lock", "check", "--read-data"], env=env, check=False, timeout=900)
        check_out = check.stdout.decode("utf-8", "replace")
        if check.returncode != 0 or "no errors were found" not in check_out:
            problems.append(
                f"{where}: restic check --read-data: exit {check.returncode}: "
                f"{check_out[-300:]} {check.stderr.decode()[-300:]}"
            )
        compared = 0
        file_jobs = {name: cfg for name, cfg in jobs(client).items() if cfg.get("paths") and not cfg.get("dump")}
        for job, cfg in file_jobs.items():
            own = [s for s in snaps if sorted(s.get("paths") or []) == sorted(cfg["paths"])]
            if not own:
                problems.append(f"{where}: no offsite snapshot of job {job}")
                continue
            latest = max(own, key=lambda s: s["time"])
            target = f"/var/tmp/bk-molecule/offsite-{args.destination}-{client}-{job}"
            run(hub, ["rm", "-rf", target])
            restore = run(
                hub,
                ["restic", "--no-lock", "restore", latest["id"], "--target", target],
                env=env,
                check=False,
                timeout=900,
            )
            if restore.returncode != 0:
                problems.append(f"{where}: restore failed: {restore.stderr.decode()[-300:]}")
            else:
                for path in cfg["paths"]:
                    # What the job backs up: its exclude_caches applied to the source.
                    src = tree(client, path, exclude_caches=bool(cfg.get("exclude_caches")))
                    dst = tree(hub, target + path)
                    compared += sum(1 for v in src.values() if not v.startswith("link:"))
                    problems += compare_trees(src, dst, f"{where}:{path}")
            run(hub, ["rm", "-rf", target])
        repos.append(
            {
                "repository": client,
                "url": re.sub(r"//[^/@]*@", "//", url),
                "snapshots_offsite": len(ids),
                "snapshots_on_hub": len(hub_snaps),
                "check_read_data": check.returncode == 0,
                "file_jobs": len(file_jobs),
                "files_restored_identical": compared,
            }
        )
    # A hub whose clients only dump databases (mol-hub2) has no files to compare: its copies are
    # proven by the listing and `check --read-data`.
    if any(r["file_jobs"] for r in repos) and not any(r["files_restored_identical"] for r in repos):
        problems.append(f"no file of any client was restored from {args.destination} and compared")
    return {"destination": args.destination, "mode": dest.get("mode"), "repositories": repos, "problems": problems}


def cmd_offsite_keeps(args: argparse.Namespace) -> Json:
    """Snapshots the hub's retention removed are still at the destination (copy never deletes)."""
    hub = args.hub
    dest = read_json(hub, f"/etc/bk/offsite/{args.destination}.json") or {}
    plan = json.loads(Path(args.state).read_text())
    problems = []
    result = {}
    for repo, expect in plan.items():
        url, env = offsite_repository(hub, dest, repo)
        env = {
            **env,
            "RESTIC_REPOSITORY": url,
            "RESTIC_PASSWORD_FILE": maintenance_env(hub, repo)["RESTIC_PASSWORD_FILE"],
        }
        ids = {s["id"] for s in restic_json(hub, env, ["snapshots"]) or []}
        gone = set(expect["before"]) - ids
        if gone:
            problems.append(f"{args.destination}/{repo}: {len(gone)} snapshots removed offsite too")
        result[repo] = {"offsite": len(ids), "removed_on_hub_still_offsite": len(set(expect["expect_removed"]) & ids)}
    return {"destination": args.destination, "mode": dest.get("mode"), "repositories": result, "problems": problems}
