"""What is wrong, as alerts with a stable key (host, job, condition) and a sentence a person reads.

The states come from the fleet_status view (0003), the one home of "late", "stale", "failing",
"gap", "unconfirmed" and "missing"; this module only names them and says when each began, by
the evidence's own times, so a backlog that arrives late is judged by when things happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

SEVERITIES = ("warning", "critical", "security")

# A group alert's host: the hub's name; its per-host alerts that it explains are held.
HUB_UNREACHABLE = "hub_unreachable"
HUB_EXPLAINED = frozenset({"unconfirmed", "failing"})


@dataclass(frozen=True)
class Alert:
    host: str
    job: str
    condition: str
    severity: str
    summary: str
    since: datetime
    hub: str | None = None  # the hub the condition depends on, when one is known

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.host, self.job, self.condition)


FLEET_ROWS_SQL = """
SELECT f.host, coalesce(f.job, '') AS job, f.kind, f.state, f.last_finished_at, f.last_success_at,
       f.late_at, f.stale_at, f.chain_missing, f.chain_breaks, f.unconfirmed_snapshots,
       eh.enrolled_at,
       (SELECT min(s.claimed_at) FROM snapshots s
         WHERE s.host = f.host AND s.job = f.job
           AND s.receipt_event_id IS NULL AND s.claim_event_id IS NOT NULL) AS oldest_unconfirmed_at,
       coalesce((SELECT e.repository_url FROM events e
                  WHERE e.id = f.last_event_id AND e.repository_url LIKE 'rest:%%'),
                (SELECT s.repository_url FROM snapshots s
                  WHERE s.host = f.host AND s.job = f.job AND s.repository_url LIKE 'rest:%%'
                  ORDER BY s.claimed_at DESC NULLS LAST LIMIT 1)) AS repository_url,
       (SELECT coalesce(bk_manifest_doc(e.manifest) #>> '{error,message}',
                        bk_manifest_doc(e.manifest) #>> '{error,stderr_tail}') FROM events e
         WHERE e.id = f.last_event_id) AS cause
  FROM fleet_status f
  LEFT JOIN enrolled_hosts eh ON eh.host = f.host
 WHERE f.state <> 'ok'
"""


def scrub(text: str | None, limit: int = 300) -> str:
    """One line of plain text: control characters out, credentials in URLs masked, bounded."""
    if not text:
        return ""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    flat = _mask_url_credentials(flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _mask_url_credentials(text: str) -> str:
    words = []
    for word in text.split(" "):
        scheme, sep, rest = word.partition("://")
        masked = sep and "@" in rest.split("/", 1)[0]
        words.append(f"{scheme}://***@{rest.split('@', 1)[1]}" if masked else word)
    return " ".join(words)


def hub_of(repository_url: str | None) -> str | None:
    """The host:port of a rest: repository URL (the hub a client depends on)."""
    if not repository_url or not repository_url.startswith("rest:"):
        return None
    rest = repository_url[len("rest:") :].split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1] or None


def _job_label(row: Mapping[str, Any]) -> str:
    return f"{row['host']} job {row['job']}" if row["job"] else str(row["host"])


def alert_from_row(row: Mapping[str, Any]) -> Alert | None:
    """The alert a not-ok fleet_status row stands for; a drill's or a check's condition says so
    (drill_failing), so that it and the job's backup are two alerts."""
    alert = _alert_from_row(row)
    kind = row.get("kind")
    if alert is None or kind in (None, "backup") or alert.condition not in ("failing", "overdue"):
        return alert
    return replace(alert, condition=f"{kind}_{alert.condition}", summary=f"{kind}: {alert.summary}")


def _alert_from_row(row: Mapping[str, Any]) -> Alert | None:
    state, label = row["state"], _job_label(row)
    hub = hub_of(row.get("repository_url"))
    if state == "failing":
        cause = scrub(row.get("cause")) or "no cause in the manifest"
        return Alert(
            row["host"],
            row["job"],
            "failing",
            "critical",
            f"{label}: latest run failed: {cause}",
            row["last_finished_at"],
            hub,
        )
    if state in ("late", "stale"):
        since = row["late_at"] if state == "late" else row["stale_at"]
        last = row["last_success_at"] or row["last_finished_at"]
        return Alert(
            row["host"],
            row["job"],
            "overdue",
            "critical" if state == "stale" else "warning",
            f"{label}: overdue, last success {last:%Y-%m-%d %H:%M} UTC",
            since,
            hub,
        )
    if state == "gap":
        what = f"{row['chain_missing']} manifest(s) missing" if row["chain_missing"] else ""
        if row["chain_breaks"]:
            what = (what + ", " if what else "") + f"{row['chain_breaks']} broken link(s) (fork or rewrite)"
        return Alert(
            row["host"],
            "",
            "chain",
            "security" if row["chain_breaks"] else "warning",
            f"{row['host']}: chain has {what}",
            row["last_finished_at"],
        )
    if state == "unconfirmed":
        return Alert(
            row["host"],
            row["job"],
            "unconfirmed",
            "critical",
            f"{label}: {row['unconfirmed_snapshots']} snapshot(s) without a hub receipt",
            row["oldest_unconfirmed_at"] or row["last_finished_at"],
            hub,
        )
    if state == "missing":
        return Alert(
            row["host"],
            "",
            "never_reported",
            "warning",
            f"{row['host']}: enrolled but never reported",
            row["enrolled_at"],
        )
    return None


def alerts_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[Alert]:
    unique: dict[tuple[str, str, str], Alert] = {}
    for row in rows:
        alert = alert_from_row(row)
        if alert is not None:
            unique.setdefault(alert.key, alert)
    return list(unique.values())


def group_by_hub(alerts: list[Alert], min_hosts: int = 2) -> list[Alert]:
    """Add one hub_unreachable alert per hub that several hosts fail to reach."""
    by_hub: dict[str, list[Alert]] = {}
    for alert in alerts:
        if alert.hub and alert.condition in HUB_EXPLAINED:
            by_hub.setdefault(alert.hub, []).append(alert)
    grouped = list(alerts)
    for hub, explained in sorted(by_hub.items()):
        hosts = sorted({a.host for a in explained})
        if len(hosts) < min_hosts:
            continue
        since = min(a.since for a in explained)
        grouped.append(
            Alert(
                hub,
                "",
                HUB_UNREACHABLE,
                "critical",
                f"hub {hub} unreachable since {since:%Y-%m-%d %H:%M} UTC, {len(hosts)} hosts affected: "
                + ", ".join(hosts),
                since,
            )
        )
    return grouped


def held_by_group(alert: Alert, grouped_hubs: set[str]) -> bool:
    return alert.hub in grouped_hubs and alert.condition in HUB_EXPLAINED


# The hub's free space, read defensively from its latest receipt: a receipt that carries no
# numeric receipt.disk.free_bytes and total_bytes (older hubs) gives no alert rather than a wrong one.
HUB_SPACE_SQL = """
SELECT DISTINCT ON (e.host) e.host, e.finished_at,
       CASE WHEN jsonb_typeof(d #> '{receipt,disk,free_bytes}') = 'number'
            THEN (d #>> '{receipt,disk,free_bytes}')::numeric END AS free,
       CASE WHEN jsonb_typeof(d #> '{receipt,disk,total_bytes}') = 'number'
            THEN (d #>> '{receipt,disk,total_bytes}')::numeric END AS total
  FROM events e CROSS JOIN LATERAL bk_manifest_doc(e.manifest) d
 WHERE e.kind = 'hub-receipt'
 ORDER BY e.host, e.finished_at DESC
"""


def hub_space_alert(row: Mapping[str, Any], minimum_free_fraction: float = 0.10) -> Alert | None:
    free, total = row.get("free"), row.get("total")
    if free is None or not total or total <= 0 or free / total >= minimum_free_fraction:
        return None
    percent = float(free) / float(total) * 100
    return Alert(
        row["host"],
        "",
        "hub_space",
        "critical",
        f"hub {row['host']}: {percent:.1f} % free ({int(free)} of {int(total)} bytes)",
        row["finished_at"],
    )


@dataclass(frozen=True)
class Thresholds:
    """When a quiet key, a missing offsite copy or a filling hub becomes an alert."""

    silent_key_after: timedelta = timedelta(days=7)
    offsite_cadence_factor: float = 2.0  # a copy is late after this many of its destination's cadences
    offsite_without_cadence: timedelta = timedelta(hours=48)
    hub_min_free_fraction: float = 0.10
    refused_window: timedelta = timedelta(hours=24)  # a `refused` alert clears this long after the last refusal


# A host with active keys whose latest signed manifest is old: a dormant enrollment (a host gone
# without its keys retired) or a host that stopped signing. Never-signing hosts are never_reported.
SILENT_KEYS_SQL = """
SELECT k.host, max(e.finished_at) AS last_signed_at
  FROM (SELECT DISTINCT host FROM host_keys WHERE retired_at IS NULL) k
  JOIN LATERAL (SELECT max(finished_at) AS finished_at FROM events WHERE host = k.host) e ON true
 WHERE e.finished_at IS NOT NULL
 GROUP BY k.host
"""


def silent_key_alert(row: Mapping[str, Any], now: datetime, thresholds: Thresholds) -> Alert | None:
    last = row["last_signed_at"]
    if last is None or now - last < thresholds.silent_key_after:
        return None
    days = (now - last).days
    return Alert(
        row["host"],
        "",
        "silent_key",
        "warning",
        f"{row['host']}: its enrolled keys signed nothing for {days} days (last {last:%Y-%m-%d %H:%M} UTC);"
        " retire them (bk-reporter hosts retire) if the host is gone",
        last + thresholds.silent_key_after,
    )


# Per destination its cadence is the one its latest offsite-copy manifest declares; a hub's
# received snapshot not at a destination it copies to (one that existed when the snapshot
# arrived) is a candidate for offsite_late.
OFFSITE_SQL = """
WITH destination AS (
  SELECT DISTINCT ON (o.hub_host, o.destination) o.hub_host, o.destination, e.cadence_seconds,
         (SELECT min(f.first_seen_at) FROM snapshot_offsite f
           WHERE f.hub_host = o.hub_host AND f.destination = o.destination) AS first_seen_at
    FROM snapshot_offsite o JOIN events e ON e.id = o.event_id
   ORDER BY o.hub_host, o.destination, e.finished_at DESC
)
SELECT coalesce(s.host, s.hub_repository) AS host, coalesce(s.job, '') AS job, d.destination,
       d.cadence_seconds, count(*) AS snapshots, min(s.arrived_at) AS oldest_arrived_at
  FROM snapshots s
  JOIN destination d ON d.hub_host = s.hub_host AND s.arrived_at >= d.first_seen_at
 WHERE s.receipt_event_id IS NOT NULL
   AND NOT EXISTS (SELECT FROM snapshot_offsite o
                    WHERE o.snapshot_id = s.snapshot_id AND o.destination = d.destination)
 GROUP BY 1, 2, d.destination, d.cadence_seconds
"""


def offsite_late_alert(row: Mapping[str, Any], now: datetime, thresholds: Thresholds) -> Alert | None:
    cadence = row.get("cadence_seconds")
    allowed = (
        timedelta(seconds=float(cadence) * thresholds.offsite_cadence_factor)
        if cadence
        else thresholds.offsite_without_cadence
    )
    oldest = row["oldest_arrived_at"]
    if oldest is None or now - oldest < allowed:
        return None
    label = f"{row['host']} job {row['job']}" if row["job"] else str(row["host"])
    return Alert(
        row["host"],
        row["job"],
        "offsite_late",
        "critical",
        f"{label}: {row['snapshots']} snapshot(s) not at offsite {row['destination']} within"
        f" {allowed.total_seconds() / 3600:g} h (oldest arrived {oldest:%Y-%m-%d %H:%M} UTC)",
        oldest + allowed,
    )


def refused_alerts(rows: Iterable[Mapping[str, Any]]) -> list[Alert]:
    """One `refused` alert per claimed host from readmodel.RECENT_REFUSALS rows (host, code, client).

    A security event: never held by a group, never silenced (lifecycle._silenced). The host is
    what the refused manifest claimed, unverified by definition: it is named, never trusted.
    """
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_host.setdefault(row["host"], []).append(row)
    alerts = []
    for host, group in sorted(by_host.items()):
        total = sum(row["refusals"] for row in group)
        codes: dict[str, int] = {}
        clients: dict[str, int] = {}
        for row in group:
            codes[row["code"]] = codes.get(row["code"], 0) + row["refusals"]
            clients[row["client"] or "unknown address"] = clients.get(row["client"] or "unknown address", 0) + 1
        first, last = min(row["first_at"] for row in group), max(row["last_at"] for row in group)
        named = ", ".join(f"{code} x{count}" for code, count in sorted(codes.items(), key=lambda c: (-c[1], c[0])))
        shown = sorted(clients)[:5]
        more = f" and {len(clients) - len(shown)} more" if len(clients) > len(shown) else ""
        label = scrub(host, 100) or "(no readable host)"
        alerts.append(
            Alert(
                host,
                "",
                "refused",
                "security",
                f"{label}: {total} manifest(s) refused ({named}), first {first:%Y-%m-%d %H:%M:%S} UTC,"
                f" last {last:%Y-%m-%d %H:%M:%S} UTC, from {', '.join(shown)}{more}",
                first,
            )
        )
    return alerts
