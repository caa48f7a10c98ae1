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


def json_value(value: Any) -> Any:
    """A database value as JSON: times as RFC 3339 in UTC, UUIDs as text, the rest as it is."""
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def json_row(row: Mapping[str, Any], *columns: str, **renamed: str) -> dict[str, Any]:
    """The named columns of a row as a JSON object; `renamed` maps a document key to its column."""
    document = {column: json_value(row[column]) for column in columns}
    document.update({key: json_value(row[column]) for key, column in renamed.items()})
    return document


JOB_COLUMNS = (
    "job",
    "kind",
    "state",
    "last_status",
    "last_event_id",
    "last_started_at",
    "last_finished_at",
    "last_duration_seconds",
    "last_data_added",
    "last_snapshot_id",
    "cadence_seconds",
    "last_success_at",
    "late_at",
    "stale_at",
    "runs",
    "failures",
    "unconfirmed_snapshots",
)
KEY_COLUMNS = ("fingerprint", "key_type", "comment", "enrolled_at", "retired_at")
BREAK_COLUMNS = ("seq", "expected_prev", "found_prev", "detected_at")
SNAPSHOT_COLUMNS = (
    "snapshot_id",
    "job",
    "repository_name",
    "claimed_at",
    "received",
    "hub_host",
    "arrived_at",
    "size_bytes",
    "offsite",
    "first_offsite_at",
)


def job_document(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    document = json_row(row, *JOB_COLUMNS)
    document["last_success_age_seconds"] = _age(row["last_success_at"], now)
    return document


def _chain_document(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row["events"] is None:
        return None
    return json_row(row, "events", "last_seq", "last_received_at", missing="chain_missing", breaks="chain_breaks")


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
    document["keys"] = [json_row(key, *KEY_COLUMNS) for key in details.keys]
    document["gaps"] = [json_row(gap, "first_missing", "last_missing") for gap in details.gaps]
    document["breaks"] = [json_row(chain_break, *BREAK_COLUMNS) for chain_break in details.breaks]
    document["snapshots"] = [_snapshot_document(s) for s in details.snapshots]
    return document


@dataclass(frozen=True)
class HostDetails:
    keys: Sequence[Mapping[str, Any]]
    gaps: Sequence[Mapping[str, Any]]
    breaks: Sequence[Mapping[str, Any]]
    snapshots: Sequence[Mapping[str, Any]]


def _snapshot_document(row: Mapping[str, Any]) -> dict[str, Any]:
    document = json_row(row, *SNAPSHOT_COLUMNS)
    document["offsite_destinations"] = list(row["offsite_destination_names"] or [])
    return document


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
