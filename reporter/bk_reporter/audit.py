"""`bk-reporter audit`: re-verify every stored manifest and every chain from the raw bytes.

Nothing stored is trusted: each row's signature is verified again (retired keys included:
they verified history), each extracted column is compared with a fresh extraction from the
manifest text, and each host's chain is walked with hashes recomputed from the text. The
chain state kept for the views is compared with what the walk found, which catches a row
removed behind the reporter's back even at the end of a chain.

The keys themselves live in the same database: whoever can change events can change
host_keys too. Given keys from outside it (`--allowed-signers`, the file the inventory
writes), the audit verifies against those instead and so catches a key added or swapped
behind the reporter's back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bk_evidence import manifest as bk_manifest
from bk_evidence import sshsig

from .ingest import extract_facts, parse_time

EVENTS_IN_CHAIN_ORDER = """
SELECT id, host, seq, prev, sha256, kind, status, job, started_at, finished_at, key_fingerprint,
       repository_name, repository_url, snapshot_id, cadence_seconds, data_added, files_new, files_changed,
       files_unmodified, bytes_processed, lineage, manifest, signature
  FROM events
 ORDER BY host, seq
"""

ALL_KEYS = "SELECT host, public_key FROM host_keys"
CHAIN_STATE = "SELECT host, events, last_seq FROM host_chain"
_SIZE_COLUMNS = "hub_host, repository_name, size_bytes, size_text, measured_at, event_id"
REPOSITORY_SIZES = f"SELECT {_SIZE_COLUMNS} FROM repository_sizes"
REPOSITORY_SIZES_FROM_EVENTS = f"SELECT {_SIZE_COLUMNS} FROM repository_sizes_from_events"
FACT_COLUMNS = (
    "repository_name",
    "repository_url",
    "snapshot_id",
    "cadence_seconds",
    "data_added",
    "files_new",
    "files_changed",
    "files_unmodified",
    "bytes_processed",
)


@dataclass(frozen=True)
class Problem:
    host: str
    seq: int | None
    event_id: str | None
    what: str

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "seq": self.seq, "id": self.event_id, "problem": self.what}


@dataclass
class Report:
    events: int = 0
    hosts: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "hosts": self.hosts,
            "intact": self.intact,
            "problems": [problem.as_json() for problem in self.problems],
        }


def _differences(row: Mapping[str, Any], doc: Mapping[str, Any]) -> list[str]:
    """Columns whose stored value is not what the manifest text says."""
    expected: dict[str, Any] = {key: doc.get(key) for key in ("host", "seq", "prev", "kind", "status", "job")}
    expected["id"] = _canonical_uuid(doc.get("id"))
    facts = extract_facts(doc)
    expected |= {name: getattr(facts, name) for name in FACT_COLUMNS}
    expected["lineage"] = None if facts.lineage is None else list(facts.lineage)
    differing = [name for name, value in expected.items() if _stored(row, name) != value]
    for name in ("started_at", "finished_at"):
        if row[name] != _moment(doc.get(name)):
            differing.append(name)
    return differing


def _canonical_uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _stored(row: Mapping[str, Any], name: str) -> Any:
    return str(row["id"]) if name == "id" else row[name]


def _moment(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) else None


DATABASE_KEYS = "any key ever enrolled for the host"
FILE_KEYS = "any key the allowed-signers file lists for the host"


def _event_problems(row: Mapping[str, Any], keys: list[str], key_source: str) -> Iterator[str]:
    text = row["manifest"]
    if bk_manifest.sha256_hex(text) != row["sha256"]:
        yield "the sha256 column does not match the manifest text"
    try:
        signer = sshsig.verify(text.encode("utf-8"), row["signature"], keys)
    except sshsig.SignatureError as exc:
        yield f"the signature does not verify with {key_source}: {exc}"
    else:
        if sshsig.fingerprint(signer) != row["key_fingerprint"]:
            yield "key_fingerprint does not name the key that made the signature"
    try:
        doc = bk_manifest.loads_strict(text)
    except bk_manifest.ManifestError as exc:
        yield f"the manifest text is not a strict JSON object: {exc}"
        return
    differing = _differences(row, doc)
    if differing:
        yield "stored columns differ from the manifest text: " + ", ".join(differing)


def _link_problem(row: Mapping[str, Any], previous: Mapping[str, Any] | None) -> str | None:
    if row["seq"] == 1:
        return None if row["prev"] is None else "seq 1 names a predecessor"
    if previous is None or previous["seq"] != row["seq"] - 1:
        first = 1 if previous is None else previous["seq"] + 1
        return f"gap: seq {first}..{row['seq'] - 1} missing"
    if row["prev"] != bk_manifest.sha256_hex(previous["manifest"]):
        return "prev is not the SHA-256 of the manifest at seq - 1 (broken link)"
    return None


@dataclass
class _HostWalk:
    events: int = 0
    last_seq: int = 0


def audit(
    conn: psycopg.Connection,
    progress: Callable[[int], None] | None = None,
    trusted_keys: Mapping[str, list[str]] | None = None,
) -> Report:
    """Walk every event in (host, seq) order in one consistent snapshot.

    trusted_keys (host -> public key lines, from outside the database) replaces host_keys.
    """
    report = Report()
    walks: dict[str, _HostWalk] = {}
    key_source = DATABASE_KEYS if trusted_keys is None else FILE_KEYS
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        keys: Mapping[str, list[str]] = _database_keys(conn) if trusted_keys is None else trusted_keys
        previous: dict[str, Any] | None = None
        with conn.cursor(name="bk_audit", row_factory=dict_row) as cursor:
            cursor.itersize = 1000
            cursor.execute(EVENTS_IN_CHAIN_ORDER)
            for row in cursor:
                if previous is not None and previous["host"] != row["host"]:
                    previous = None
                _check_row(row, previous, keys.get(row["host"], []), key_source, report)
                walk = walks.setdefault(row["host"], _HostWalk())
                walk.events += 1
                walk.last_seq = row["seq"]
                previous = row
                report.events += 1
                if progress is not None and report.events % 10000 == 0:
                    progress(report.events)
        _compare_chain_state(conn, walks, report)
        _compare_repository_sizes(conn, report)
    report.hosts = len(walks)
    return report


def _database_keys(conn: psycopg.Connection) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for host, public_key in conn.execute(ALL_KEYS):
        keys.setdefault(host, []).append(public_key)
    return keys


def _check_row(
    row: Mapping[str, Any], previous: Mapping[str, Any] | None, keys: list[str], key_source: str, report: Report
) -> None:
    event_id = str(row["id"])
    for what in _event_problems(row, keys, key_source):
        report.problems.append(Problem(row["host"], row["seq"], event_id, what))
    link = _link_problem(row, previous)
    if link is not None:
        report.problems.append(Problem(row["host"], row["seq"], event_id, link))


def _compare_repository_sizes(conn: psycopg.Connection, report: Report) -> None:
    """repository_sizes (derived state) against its rebuild from the prune manifests."""
    recorded = {(row[0], row[1]): row[2:] for row in conn.execute(REPOSITORY_SIZES)}
    rebuilt = {(row[0], row[1]): row[2:] for row in conn.execute(REPOSITORY_SIZES_FROM_EVENTS)}
    for hub, repository in sorted(set(recorded) | set(rebuilt)):
        kept, expected = recorded.get((hub, repository)), rebuilt.get((hub, repository))
        if kept == expected:
            continue
        report.problems.append(
            Problem(
                hub,
                None,
                None,
                f"repository_sizes for repository {repository!r} holds {_size(kept)}, but the stored prune "
                f"manifests say {_size(expected)} (changed behind the reporter's back)",
            )
        )


def _size(row: tuple[Any, ...] | None) -> str:
    if row is None:
        return "nothing"
    size_bytes, size_text, measured_at, event_id = row
    return f"{size_text!r} ({size_bytes} bytes) measured at {measured_at.isoformat()} by event {event_id}"


def _compare_chain_state(conn: psycopg.Connection, walks: Mapping[str, _HostWalk], report: Report) -> None:
    recorded = {host: (events, last_seq) for host, events, last_seq in conn.execute(CHAIN_STATE)}
    for host in sorted(set(recorded) | set(walks)):
        walk = walks.get(host, _HostWalk())
        events, last_seq = recorded.get(host, (0, 0))
        if (events, last_seq) != (walk.events, walk.last_seq):
            report.problems.append(
                Problem(
                    host,
                    None,
                    None,
                    f"the reporter recorded {events} events up to seq {last_seq} for this host, "
                    f"but {walk.events} up to seq {walk.last_seq} are stored (rows removed or added behind its back)",
                )
            )
