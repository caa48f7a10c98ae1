"""The read model (readmodel.py) rendered as JSON: the documents the API serves and
`bk-reporter status` prints, and the API's event query parameters.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .readmodel import STATES, EventQuery

EVENTS_PAGE_DEFAULT = 100
EVENTS_PAGE_MAX = 1000
HOST_DETAIL_LIMIT = 100
HOST_SNAPSHOTS_LIMIT = 50


class BadParameter(ValueError):
    """A query parameter is unusable; the message says which and why."""


def timestamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round((now - moment).total_seconds(), 3)


def job_document(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "job": row["job"],
        "kind": row["kind"],
        "state": row["state"],
        "last_status": row["last_status"],
        "last_event_id": str(row["last_event_id"]),
        "last_started_at": timestamp(row["last_started_at"]),
        "last_finished_at": timestamp(row["last_finished_at"]),
        "last_duration_seconds": row["last_duration_seconds"],
        "last_data_added": row["last_data_added"],
        "last_snapshot_id": row["last_snapshot_id"],
        "cadence_seconds": row["cadence_seconds"],
        "last_success_at": timestamp(row["last_success_at"]),
        "last_success_age_seconds": _age(row["last_success_at"], now),
        "late_at": timestamp(row["late_at"]),
        "stale_at": timestamp(row["stale_at"]),
        "runs": row["runs"],
        "failures": row["failures"],
        "unconfirmed_snapshots": row["unconfirmed_snapshots"],
    }


def _chain_document(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row["events"] is None:
        return None
    return {
        "events": row["events"],
        "last_seq": row["last_seq"],
        "missing": row["chain_missing"],
        "breaks": row["chain_breaks"],
        "last_received_at": timestamp(row["last_received_at"]),
    }


def host_document(row: Mapping[str, Any], jobs: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    return {
        "host": row["host"],
        "state": row["state"],
        "active_keys": row["active_keys"],
        "chain": _chain_document(row),
        "jobs": [job_document(job, now) for job in jobs if job["kind"] is not None],
    }


def fleet_document(
    host_rows: Sequence[Mapping[str, Any]], job_rows: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, Any]:
    """GET /api/v1/hosts: every host, worst first, with its jobs; counts of job states."""
    jobs_by_host: dict[str, list[Mapping[str, Any]]] = {}
    for job in job_rows:
        jobs_by_host.setdefault(job["host"], []).append(job)
    counts = dict.fromkeys(STATES, 0)
    for job in job_rows:
        counts[job["state"]] += 1
    return {
        "generated_at": timestamp(now),
        "counts": counts,
        "hosts": [host_document(row, jobs_by_host.get(row["host"], []), now) for row in host_rows],
    }


def host_detail_document(
    host: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    details: HostDetails,
    now: datetime,
) -> dict[str, Any]:
    """GET /api/v1/hosts/{host}."""
    document = host_document(host, jobs, now)
    document["keys"] = [
        {
            "fingerprint": key["fingerprint"],
            "key_type": key["key_type"],
            "comment": key["comment"],
            "enrolled_at": timestamp(key["enrolled_at"]),
            "retired_at": timestamp(key["retired_at"]),
        }
        for key in details.keys
    ]
    document["gaps"] = [{"first_missing": g["first_missing"], "last_missing": g["last_missing"]} for g in details.gaps]
    document["breaks"] = [
        {
            "seq": b["seq"],
            "expected_prev": b["expected_prev"],
            "found_prev": b["found_prev"],
            "detected_at": timestamp(b["detected_at"]),
        }
        for b in details.breaks
    ]
    document["snapshots"] = [_snapshot_document(s) for s in details.snapshots]
    return document


@dataclass(frozen=True)
class HostDetails:
    keys: Sequence[Mapping[str, Any]]
    gaps: Sequence[Mapping[str, Any]]
    breaks: Sequence[Mapping[str, Any]]
    snapshots: Sequence[Mapping[str, Any]]


def _snapshot_document(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "snapshot_id": row["snapshot_id"],
        "job": row["job"],
        "repository_name": row["repository_name"],
        "claimed_at": timestamp(row["claimed_at"]),
        "received": row["received"],
        "hub_host": row["hub_host"],
        "arrived_at": timestamp(row["arrived_at"]),
        "size_bytes": row["size_bytes"],
        "offsite": row["offsite"],
        "offsite_destinations": list(row["offsite_destination_names"] or []),
        "first_offsite_at": timestamp(row["first_offsite_at"]),
    }


# -- events ---------------------------------------------------------------------------------


def usable_text(value: str) -> bool:
    """Whether a name from a URL can be looked up (PostgreSQL text holds no NUL)."""
    return "\x00" not in value and len(value) <= 1000


def _plain_text(name: str, value: str | None) -> str | None:
    if value is not None and not usable_text(value):
        raise BadParameter(f"{name} is not a usable value")
    return value


def _parse_time(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadParameter(f"{name} must be an RFC 3339 time with an offset") from exc
    if moment.tzinfo is None:
        raise BadParameter(f"{name} must carry an offset (Z or +HH:MM)")
    return moment


def encode_cursor(finished_at: datetime, event_id: uuid.UUID) -> str:
    raw = json.dumps([finished_at.isoformat(), str(event_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        finished_at, event_id = json.loads(raw)
        return _parse_time("cursor", finished_at), uuid.UUID(event_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadParameter("cursor is not a cursor this reporter handed out") from exc


def event_query(params: Mapping[str, str]) -> EventQuery:
    """GET /api/v1/events parameters: host, kind, since (RFC 3339), limit, cursor."""
    limit_text = params.get("limit", str(EVENTS_PAGE_DEFAULT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= EVENTS_PAGE_MAX:
        raise BadParameter(f"limit must be an integer from 1 to {EVENTS_PAGE_MAX}")
    since = params.get("since")
    cursor = params.get("cursor")
    return EventQuery(
        host=_plain_text("host", params.get("host")),
        kind=_plain_text("kind", params.get("kind")),
        since=_parse_time("since", since) if since is not None else None,
        after=_decode_cursor(cursor) if cursor is not None else None,
        limit=int(limit_text),
    )


def event_document(row: Mapping[str, Any]) -> dict[str, Any]:
    document = {key: row[key] for key in ("host", "seq", "prev", "sha256", "kind", "status", "job")}
    document["id"] = str(row["id"])
    for key in ("started_at", "finished_at", "received_at"):
        document[key] = timestamp(row[key])
    for key in ("duration_seconds", "key_fingerprint", "repository_name", "snapshot_id", "data_added"):
        document[key] = row[key]
    if "manifest" in row:
        document["manifest"] = row["manifest"]
        document["signature"] = row["signature"]
    return document


def events_page_document(rows: Sequence[Mapping[str, Any]], query: EventQuery) -> dict[str, Any]:
    page = rows[: query.limit]
    more = len(rows) > query.limit
    return {
        "events": [event_document(row) for row in page],
        "next_cursor": encode_cursor(page[-1]["finished_at"], page[-1]["id"]) if more else None,
    }
