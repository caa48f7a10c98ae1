"""What is wrong, as alerts with a stable key (host, job, condition) and a sentence a person reads.

The states come from the fleet_status view (0003), the one home of "late", "stale", "failing",
"gap", "unconfirmed" and "missing"; this module only names them and says when each began, by
the evidence's own times, so a backlog that arrives late is judged by when things happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
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
