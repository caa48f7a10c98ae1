"""The hub's retention: restic's forget policy applied independently, and compared with what the
hub's maintenance removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bkmol_hosts import Json, list_dir, run
from bkmol_reporter import Reporter, manifests
from bkmol_restic import hub_data_dir, maintenance_env, maintenance_repo, parse_time, restic_json

# --- subcommand: retention ---------------------------------------------------------------------


def _bucketers() -> dict[str, Callable[[dt.datetime, int], Any]]:
    return {
        "keep_last": lambda t, n: n,
        "keep_hourly": lambda t, n: (t.year, t.month, t.day, t.hour),
        "keep_daily": lambda t, n: (t.year, t.month, t.day),
        "keep_weekly": lambda t, n: t.isocalendar()[:2],
        "keep_monthly": lambda t, n: (t.year, t.month),
        "keep_yearly": lambda t, n: t.year,
    }


def parse_duration(value: str) -> dt.timedelta:
    """restic durations: 1y2m3d4h (y = 365 d and m = 30 d are what restic does for `within`)."""
    days = hours = 0
    for number, unit in re.findall(r"(\d+)([ymdh])", value):
        n = int(number)
        if unit == "y":
            days += 365 * n
        elif unit == "m":
            days += 30 * n
        elif unit == "d":
            days += n
        else:
            hours += n
    return dt.timedelta(days=days, hours=hours)


def expected_forget(
    snapshots: list[Json], policy: Json, group_by: str, keeps_oldest: bool = False
) -> tuple[set[str], set[str]]:
    """restic's forget policy, applied independently: (kept ids, removed ids). ``keeps_oldest``:
    restic 0.17 and later also keep a group's oldest snapshot for a keep-<period> rule whose
    count is not used up ("oldest daily snapshot"); 0.14 does not."""
    fields = [f.strip() for f in (group_by or "host,paths").split(",") if f.strip()]
    groups: dict[str, list[Json]] = {}
    for snap in snapshots:
        key = []
        for field in fields:
            if field == "host":
                key.append(snap.get("hostname", ""))
            elif field == "paths":
                key.append(",".join(sorted(snap.get("paths") or [])))
            elif field == "tags":
                key.append(",".join(sorted(snap.get("tags") or [])))
        groups.setdefault("|".join(key), []).append(snap)
    kept: set[str] = set()
    removed: set[str] = set()
    for group in groups.values():
        members = sorted(group, key=lambda s: parse_time(s["time"]), reverse=True)
        counters = {k: int(policy[k]) for k in _bucketers() if policy.get(k)}
        last: dict[str, Any] = {}
        newest = parse_time(members[0]["time"])
        within = parse_duration(policy["keep_within"]) if policy.get("keep_within") else None
        tags = set(policy.get("keep_tags") or [])
        for index, snap in enumerate(members):
            when = parse_time(snap["time"]).astimezone(dt.UTC)
            keep = False
            if tags and tags & set(snap.get("tags") or []):
                keep = True
            if within is not None and parse_time(snap["time"]) > newest - within:
                keep = True
            for rule, bucket in _bucketers().items():
                if counters.get(rule, 0) > 0:
                    value = bucket(when, index)
                    if last.get(rule, object()) != value:
                        keep = True
                        last[rule] = value
                        counters[rule] -= 1
            (kept if keep else removed).add(snap["id"])
        if keeps_oldest and any(counters.get(rule, 0) > 0 for rule in _bucketers() if rule != "keep_last"):
            removed.discard(members[-1]["id"])
            kept.add(members[-1]["id"])
    return kept, removed


def hub_restic_keeps_oldest(hub: str) -> bool:
    """Whether the hub's restic keeps the oldest snapshot of an unfilled keep-<period> rule (0.17+)."""
    words = run(hub, ["restic", "version"]).stdout.decode().split()
    major, minor = (int(part) for part in words[1].split(".")[:2])
    return (major, minor) >= (0, 17)


def cmd_retention(args: argparse.Namespace) -> Json:
    """before: record the hub's snapshots and the expected result; after: compare."""
    hub = args.hub
    state_file = Path(args.state)
    if args.phase == "before":
        plan = {}
        for repo in args.repos:
            cfg = maintenance_repo(hub, repo)
            snaps = restic_json(hub, maintenance_env(hub, repo), ["snapshots"]) or []
            keeps_oldest = hub_restic_keeps_oldest(hub)
            kept, removed = expected_forget(snaps, cfg["policy"], cfg.get("group_by") or "host,paths", keeps_oldest)
            plan[repo] = {
                "planned_at": dt.datetime.now(dt.UTC).isoformat(),
                "policy": cfg["policy"],
                "group_by": cfg.get("group_by") or "host,paths",
                "before": sorted(s["id"] for s in snaps),
                "expect_kept": sorted(kept),
                "expect_removed": sorted(removed),
            }
        state_file.write_text(json.dumps(plan))
        problems = []
        if not any(p["expect_removed"] for p in plan.values()):
            problems.append("the policies would remove nothing: the test would prove nothing")
        return {
            "plan": {
                r: {k: (len(v) if isinstance(v, list) else v) for k, v in p.items() if k != "planned_at"}
                for r, p in plan.items()
            },
            "problems": problems,
        }
    plan = json.loads(state_file.read_text())
    reporter = Reporter(args.via)
    problems = []
    result = {}
    forgets = [d for d, _text, _sig in manifests(reporter.events(hub)) if d.get("kind") == "forget"]
    for repo, expect in plan.items():
        snaps = restic_json(hub, maintenance_env(hub, repo), ["snapshots"]) or []
        now = sorted(s["id"] for s in snaps)
        files = list_dir(hub, f"{hub_data_dir(hub)}/{repo}/snapshots")
        if now != expect["expect_kept"]:
            problems.append(
                f"{repo}: after maintenance {len(now)} snapshots, policy {expect['policy']} "
                f"keeps {len(expect['expect_kept'])}; "
                f"wrongly removed {sorted(set(expect['expect_kept']) - set(now))[:5]}, "
                f"wrongly kept {sorted(set(now) - set(expect['expect_kept']))[:5]}"
            )
        if sorted(files) != now:
            problems.append(f"{repo}: snapshot files on the hub differ from restic's listing")
        # This run's forget manifests for the repository: a policy that removes nothing still
        # leaves one, with an empty removed list.
        planned_at = dt.datetime.fromisoformat(expect["planned_at"])
        mine = [
            d
            for d in forgets
            if (d.get("repository") or {}).get("name") == repo and parse_time(d["started_at"]) >= planned_at
        ]
        if not mine:
            problems.append(f"{repo}: no forget manifest at the reporter for this maintenance run")
        else:
            latest = max(mine, key=lambda d: int(d["seq"]))
            if sorted(latest["forget"].get("removed") or []) != expect["expect_removed"]:
                problems.append(f"{repo}: the forget manifest's removed list differs from the policy's")
            if latest.get("status") != "success":
                problems.append(f"{repo}: forget manifest status {latest.get('status')}")
        result[repo] = {
            "before": len(expect["before"]),
            "after": len(now),
            "removed": len(expect["expect_removed"]),
            "policy": expect["policy"],
        }
    return {"repositories": result, "problems": problems}
