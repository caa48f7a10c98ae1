# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bk manifest v1 and its compatible revision v1.1: the JSON Schema (single source of truth), a
validator that interprets it, strict parsing, the canonical text that is signed and the chain hash."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import sys
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

# What a manifest written now says it is. v1.1 only adds optional fields to v1 (the figures of
# restic 0.15+'s backup summary, ``error.cause``); every v1 manifest is a valid v1.1 manifest, so
# readers accept both: ACCEPTED_SCHEMAS, oldest first.
SCHEMA = "bk.manifest/v1.1"
ACCEPTED_SCHEMAS = ("bk.manifest/v1", SCHEMA)
KINDS = (
    "backup",
    "forget",
    "prune",
    "check",
    "restore",
    "drill",
    "offsite-copy",
    "hub-receipt",
    "ansible-run",
)
STATUSES = ("success", "warning", "failure")
MAX_DEPTH = 32
STDERR_TAIL_MAX = 4096

_HEX64 = "^[0-9a-f]{64}$"
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_NO_URL_CREDENTIALS = "^(?!.*://[^/@]*:[^/@]*@)"
_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"

_SNAPSHOT_ID = {"type": "string", "pattern": _HEX64, "description": "full restic snapshot id"}
_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_TIMESTAMP = {"type": "string", "format": "date-time", "pattern": _RFC3339}
_NAME = {"type": "string", "pattern": _NAME_PATTERN, "maxLength": 253}
_SHORT_TEXT = {"type": "string", "maxLength": 256}
_PATH = {"type": "string", "maxLength": 4096}
_PATHS = {"type": "array", "items": _PATH, "maxItems": 1000}
_SNAPSHOT_IDS = {"type": "array", "items": _SNAPSHOT_ID, "maxItems": 100000}
_URL = {"type": "string", "maxLength": 2048, "pattern": _NO_URL_CREDENTIALS}
_RECEIPT_FILE = {
    "type": "object",
    "required": ["id", "arrived_at"],
    "properties": {"id": _SNAPSHOT_ID, "size": _COUNT, "arrived_at": _TIMESTAMP},
}

JSON_SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://bkfleet.example/schema/manifest-v1.json",
    "title": "bk manifest v1 and v1.1",
    "description": (
        "What a machine of a bk fleet did: one backup, forget, prune, check, restore, drill, offsite copy, hub "
        "receipt or Ansible run. Signed (SSHSIG, namespace bk-manifest@v1) and chained per host by seq and prev. "
        "Only the required fields must be present; other fields are validated when present; unknown fields are "
        "kept and not interpreted."
    ),
    "type": "object",
    "required": ["schema", "id", "host", "seq", "prev", "kind", "status", "started_at", "finished_at"],
    "additionalProperties": True,
    "properties": {
        "schema": {
            "type": "string",
            "enum": list(ACCEPTED_SCHEMAS),
            "description": "bk.manifest/v1.1 adds stats.data_added_packed, stats.backup_start, stats.backup_end, "
            "error.cause and repository.hub to bk.manifest/v1",
        },
        "id": {
            "type": "string",
            "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            "description": "UUID of this manifest",
        },
        "host": dict(_NAME, description="the signing machine, as enrolled in the reporter"),
        "seq": {"type": "integer", "minimum": 1, "description": "position in the host's chain, from 1, no gaps"},
        "prev": {
            "type": ["string", "null"],
            "pattern": _HEX64,
            "description": "hex SHA-256 of the UTF-8 bytes of the host's previous manifest; null for seq 1",
        },
        "kind": {"type": "string", "enum": list(KINDS)},
        "status": {"type": "string", "enum": list(STATUSES)},
        "started_at": dict(_TIMESTAMP, description="RFC 3339 with an offset"),
        "finished_at": dict(_TIMESTAMP, description="RFC 3339 with an offset, not before started_at"),
        "job": dict(_NAME, maxLength=64, description="the job's name"),
        "repository": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": dict(_NAME, maxLength=128, description="label of the repository (hub: the host's directory)"),
                "url": dict(_URL, description="restic repository location without credentials"),
                "id": {"type": "string", "pattern": _HEX64, "description": "restic repository id"},
                "hub": dict(
                    _NAME,
                    description="v1.1: the hub serving this repository, by inventory name; only that hub's receipts "
                    "confirm the snapshots claimed here",
                ),
            },
        },
        "snapshot": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": _SNAPSHOT_ID,
                "short_id": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
                "paths": _PATHS,
                "tags": {"type": "array", "items": _SHORT_TEXT, "maxItems": 100},
                "parent": {"type": ["string", "null"], "pattern": _HEX64},
                "time": _TIMESTAMP,
            },
        },
        "stats": {
            "type": "object",
            "description": "restic backup --json summary",
            "properties": {
                "files_new": _COUNT,
                "files_changed": _COUNT,
                "files_unmodified": _COUNT,
                "dirs_new": _COUNT,
                "dirs_changed": _COUNT,
                "dirs_unmodified": _COUNT,
                "data_blobs": _COUNT,
                "tree_blobs": _COUNT,
                "data_added": dict(_COUNT, description="bytes added to the repository"),
                "data_added_packed": dict(_COUNT, description="v1.1, restic 0.15+: bytes added, as stored"),
                "total_files_processed": _COUNT,
                "total_bytes_processed": _COUNT,
                "total_duration": dict(_SECONDS, description="seconds"),
                "backup_start": dict(_TIMESTAMP, description="v1.1, restic 0.15+"),
                "backup_end": dict(_TIMESTAMP, description="v1.1, restic 0.15+"),
            },
        },
        "cadence_seconds": {
            "type": "integer",
            "minimum": 1,
            "description": "declared interval of this job; the next manifest is due after it",
        },
        "error": {
            "type": "object",
            "properties": {
                "exit_code": {"type": ["integer", "null"]},
                "stderr_tail": {"type": "string", "maxLength": STDERR_TAIL_MAX, "description": "secrets scrubbed"},
                "message": {"type": "string", "maxLength": 1024},
                "cause": {
                    "type": "string",
                    "pattern": "^[a-z][a-z_]*$",
                    "maxLength": 64,
                    "description": "v1.1: what went wrong, for machines: repository_unreachable, no_repository, "
                    "lock_failed, wrong_password, incomplete_snapshot, interrupted, dump_failed, option_unsupported",
                },
            },
        },
        "tools": {
            "type": "object",
            "description": "versions of the tools involved, by name (restic, rclone, bk, python, ansible)",
            "additionalProperties": {"type": "string", "maxLength": 128},
        },
        "check": {
            "type": "object",
            "properties": {"read_data_subset": {"type": ["string", "null"], "maxLength": 32}},
        },
        "forget": {
            "type": "object",
            "properties": {
                "policy": {
                    "type": "object",
                    "properties": {
                        "keep_last": _COUNT,
                        "keep_hourly": _COUNT,
                        "keep_daily": _COUNT,
                        "keep_weekly": _COUNT,
                        "keep_monthly": _COUNT,
                        "keep_yearly": _COUNT,
                        "keep_within": {"type": "string", "maxLength": 32},
                        "keep_tags": {"type": "array", "items": _SHORT_TEXT, "maxItems": 100},
                    },
                },
                "group_by": {"type": "string", "maxLength": 64},
                "removed": _SNAPSHOT_IDS,
                "kept": _SNAPSHOT_IDS,
            },
        },
        "prune": {
            "type": "object",
            "properties": {
                "max_unused": {"type": "string", "maxLength": 32},
                "pruned_blobs": _COUNT,
                "pruned_size": {"type": "string", "maxLength": 32, "description": "as restic prints it"},
                "remaining_blobs": _COUNT,
                "remaining_size": {"type": "string", "maxLength": 32, "description": "as restic prints it"},
            },
        },
        "receipt": {
            "type": "object",
            "required": ["snapshots"],
            "description": (
                "snapshot files that arrived in a hub repository. A listed snapshot proves that the file is on "
                "the hub's disk and that the SHA-256 of its content as stored equals its name (the hub hashed it "
                "when writing the receipt); it does not prove that restic can decrypt it or that its data is there"
            ),
            "properties": {
                "snapshots": {
                    "type": "array",
                    "maxItems": 100000,
                    "items": _RECEIPT_FILE,
                },
                "verified": {
                    "type": "string",
                    "enum": ["sha256"],
                    "description": "how every listed file was checked: its content hashes to its name",
                },
                "mismatched": {
                    "type": "array",
                    "maxItems": 100000,
                    "items": _RECEIPT_FILE,
                    "description": "snapshot files whose content does not hash to their name: not confirmed",
                },
                "disk": {
                    "type": "object",
                    "description": "the filesystem of the hub's data directory when the receipt was written",
                    "required": ["free_bytes", "total_bytes"],
                    "properties": {
                        "free_bytes": dict(_COUNT, description="bytes available to the hub's server"),
                        "total_bytes": _COUNT,
                    },
                },
            },
        },
        "offsite": {
            "type": "object",
            "required": ["destination"],
            "properties": {
                "destination": dict(_NAME, maxLength=128),
                "remote": dict(_URL, description="rclone remote path, no credentials"),
                "mode": {"type": "string", "enum": ["copy", "mirror"]},
                "snapshots": dict(_SNAPSHOT_IDS, description="snapshot ids present at the destination"),
            },
        },
        "restore": {
            "type": "object",
            "description": "restore and drill",
            "properties": {
                "snapshot": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"},
                "paths": _PATHS,
                "target": _PATH,
                "files_checked": _COUNT,
                "mismatches": _COUNT,
                "mismatched_paths": dict(_PATHS, maxItems=100),
            },
        },
        "ansible_run": {
            "type": "object",
            "required": ["playbook"],
            "properties": {
                "playbook": _PATH,
                "hosts": {"type": "array", "items": _NAME, "maxItems": 10000},
                "counts": {
                    "type": "object",
                    "description": "summed over hosts",
                    "properties": {
                        "ok": _COUNT,
                        "changed": _COUNT,
                        "failed": _COUNT,
                        "unreachable": _COUNT,
                        "skipped": _COUNT,
                        "rescued": _COUNT,
                        "ignored": _COUNT,
                    },
                },
                "duration_seconds": _SECONDS,
                "check_mode": {"type": "boolean"},
                "forwarded": dict(_COUNT, description="host manifests forwarded in the same batch"),
            },
        },
    },
}


class ManifestError(ValueError):
    """A manifest text or document that cannot be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- strict parsing ----------------------------------------------------------------------


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: Dict[str, None] = {}
        for key, _value in pairs:
            if key in seen:
                raise ManifestError("duplicate_key", "duplicate key %r" % key)
            seen[key] = None
    return result


def _no_constant(name: str) -> Any:
    raise ManifestError("non_finite_number", "%s is not valid JSON" % name)


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


# json.loads(text, object_pairs_hook=..., parse_constant=...) without building a decoder per call.
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def loads_strict(text: str) -> Dict[str, Any]:
    """Parse a manifest text: a JSON object, no duplicate keys, no NaN/Infinity, depth <= 32."""
    if not isinstance(text, str):
        raise ManifestError("invalid_json", "manifest must be a string")
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        doc = _STRICT_DECODER.decode(text)
    except RecursionError:
        raise ManifestError("too_deep", "manifest nests deeper than %d levels" % MAX_DEPTH) from None
    except ValueError as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError("invalid_json", "manifest is not valid JSON: %s" % exc) from None
    if not isinstance(doc, dict):
        raise ManifestError("not_an_object", "manifest must be a JSON object")
    # Each level opens a bracket: a text with few of them cannot nest deeply (most manifests).
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(doc) > MAX_DEPTH:
        raise ManifestError("too_deep", "manifest nests deeper than %d levels" % MAX_DEPTH)
    return doc


# --- validation (interprets JSON_SCHEMA) -------------------------------------------------

_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


# The same language as _RFC3339 (``$`` there also matches before a final newline, which the
# slicing of the original parser then always refused: ``\Z`` here refuses it at once), with groups.
_RFC3339_FIELDS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)
_UTC = datetime.timezone.utc
_ZONES: Dict[str, datetime.tzinfo] = {}


def _zone(text: str) -> Optional[datetime.tzinfo]:
    """The tzinfo of ``Z``, ``z`` or ``+HH:MM``; None if the hours or minutes are out of range."""
    if text in ("Z", "z"):
        return _UTC
    zone = _ZONES.get(text)
    if zone is None:
        hours, minutes = int(text[1:3]), int(text[4:6])
        if hours > 23 or minutes > 59:
            return None
        zone = datetime.timezone((-1 if text[0] == "-" else 1) * datetime.timedelta(hours=hours, minutes=minutes))
        if len(_ZONES) < 4096:
            _ZONES[text] = zone
    return zone


def parse_timestamp(value: str) -> Optional[datetime.datetime]:
    """An RFC 3339 timestamp with an offset as an aware datetime; None if it is not one.

    Fractions beyond microseconds are truncated; a time that does not exist (month 13, day 30
    of February, second 60) is not one."""
    if not isinstance(value, str):
        return None
    match = _RFC3339_FIELDS.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone_text = match.groups()
    zone = _zone(zone_text)
    if zone is None:
        return None
    try:
        return datetime.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction + "000000")[:6]) if fraction else 0,
            zone,
        )
    except ValueError:
        return None


def _errors(value: Any, schema: Dict[str, Any], where: str) -> List[str]:
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPE_CHECKS[name](value) for name in allowed):
            return ["%s: must be of type %s" % (where, " or ".join(allowed))]
    problems: List[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append("%s: must be one of %s" % (where, ", ".join(map(json.dumps, schema["enum"]))))
    if isinstance(value, str):
        problems.extend(_string_errors(value, schema, where))
    if _TYPE_CHECKS["number"](value) and "minimum" in schema and value < schema["minimum"]:
        problems.append("%s: must be at least %s" % (where, schema["minimum"]))
    if isinstance(value, list):
        problems.extend(_array_errors(value, schema, where))
    if isinstance(value, dict):
        problems.extend(_object_errors(value, schema, where))
    return problems


def _string_errors(value: str, schema: Dict[str, Any], where: str) -> List[str]:
    problems = []
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append("%s: longer than %d characters" % (where, schema["maxLength"]))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append("%s: does not match %s" % (where, schema["pattern"]))
    if schema.get("format") == "date-time" and parse_timestamp(value) is None:
        problems.append("%s: not an RFC 3339 date-time with an offset" % where)
    return problems


def _array_errors(value: List[Any], schema: Dict[str, Any], where: str) -> List[str]:
    problems = []
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append("%s: more than %d items" % (where, schema["maxItems"]))
    if "items" in schema:
        for index, item in enumerate(value):
            problems.extend(_errors(item, schema["items"], "%s[%d]" % (where, index)))
    return problems


def _object_errors(value: Dict[str, Any], schema: Dict[str, Any], where: str) -> List[str]:
    problems = ["%s.%s: required" % (where, key) for key in schema.get("required", ()) if key not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            problems.extend(_errors(item, properties[key], "%s.%s" % (where, key)))
        elif extra is False:
            problems.append("%s.%s: not allowed" % (where, key))
        elif isinstance(extra, dict):
            problems.extend(_errors(item, extra, "%s.%s" % (where, key)))
    return problems


# --- the same validation as one yes-or-no check, compiled once ------------------------------
#
# Most manifests are valid, and for them nothing of the messages above is needed. _compile
# turns a schema into a predicate that holds exactly when _errors finds no problem, without
# building a path or a message; validate() asks _errors for the messages only when it fails.

Check = Callable[[Any], bool]


def _all_of(checks: List[Check]) -> Check:
    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda value: first(value) and second(value)
    return lambda value: all(check(value) for check in checks)


def _compiled_type(types: Any) -> Check:
    allowed = [types] if isinstance(types, str) else types
    type_checks = [_TYPE_CHECKS[name] for name in allowed]
    if len(type_checks) == 1:
        return type_checks[0]
    return lambda value: any(check(value) for check in type_checks)


def _of_type(json_type: type, max_length: Optional[int], more: Check) -> Check:
    """A check that values of one JSON type pass (values of other types are another check's
    concern): at most max_length long, and passing `more`."""

    def check(value: Any) -> bool:
        if not isinstance(value, json_type):
            return True
        if max_length is not None and len(value) > max_length:
            return False
        return more(value)

    return check


def _compiled_string(schema: Dict[str, Any]) -> Optional[Check]:
    max_length = schema.get("maxLength")
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    date_time = schema.get("format") == "date-time"
    if max_length is None and pattern is None and not date_time:
        return None

    def matches(value: str) -> bool:
        if pattern is not None and pattern.search(value) is None:
            return False
        return not date_time or parse_timestamp(value) is not None

    return _of_type(str, max_length, matches)


def _compiled_minimum(schema: Dict[str, Any]) -> Optional[Check]:
    if "minimum" not in schema:
        return None
    minimum = schema["minimum"]
    is_number = _TYPE_CHECKS["number"]
    return lambda value: not is_number(value) or not value < minimum


def _compiled_array(schema: Dict[str, Any]) -> Optional[Check]:
    max_items = schema.get("maxItems")
    item_check = _compile(schema["items"]) if "items" in schema else None
    if max_items is None and item_check is None:
        return None
    return _of_type(list, max_items, lambda items: item_check is None or all(item_check(item) for item in items))


def _compiled_object(schema: Dict[str, Any]) -> Optional[Check]:
    if not schema.get("required") and not schema.get("properties") and schema.get("additionalProperties", True) is True:
        return None
    required = tuple(schema.get("required", ()))
    properties = {key: _compile(item) for key, item in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    extra_check = _compile(extra) if isinstance(extra, dict) else None
    refuse_extra = extra is False

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for key in required:
            if key not in value:
                return False
        for key, item in value.items():
            property_check = properties.get(key)
            if property_check is not None:
                if not property_check(item):
                    return False
            elif refuse_extra or (extra_check is not None and not extra_check(item)):
                return False
        return True

    return check


def _compile(schema: Dict[str, Any]) -> Check:
    """A predicate that holds exactly when ``_errors(value, schema, where)`` is empty."""
    checks: List[Check] = []
    if schema.get("type") is not None:
        checks.append(_compiled_type(schema["type"]))
    if "enum" in schema:
        enum = schema["enum"]
        checks.append(lambda value: value in enum)
    for compiled in (
        _compiled_string(schema),
        _compiled_minimum(schema),
        _compiled_array(schema),
        _compiled_object(schema),
    ):
        if compiled is not None:
            checks.append(compiled)
    return _all_of(checks)


_VALID: List[Check] = []


def _valid(doc: Any) -> bool:
    if not _VALID:
        _VALID.append(_compile(JSON_SCHEMA))
    return _VALID[0](doc)


def validate(doc: Dict[str, Any]) -> List[str]:
    """Human-readable problems with a manifest document; empty when it is valid."""
    problems = [] if _valid(doc) else _errors(doc, JSON_SCHEMA, "$")
    if not problems:
        started = parse_timestamp(doc["started_at"])
        finished = parse_timestamp(doc["finished_at"])
        if started is not None and finished is not None and finished < started:
            problems.append("$.finished_at: before started_at")
    return problems


# --- building ----------------------------------------------------------------------------


def rfc3339(moment: datetime.datetime) -> str:
    """An aware datetime as RFC 3339 with microseconds and an offset (UTC as +00:00)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return moment.isoformat(timespec="microseconds")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_manifest(
    kind: str,
    status: str,
    started_at: Union[datetime.datetime, str],
    finished_at: Union[datetime.datetime, str],
    **sections: Any,
) -> Dict[str, Any]:
    """A manifest without its chain fields (``host``, ``seq``, ``prev``), which the chain adds.

    Sections whose value is None are left out."""
    doc: Dict[str, Any] = {
        "schema": SCHEMA,
        "id": str(uuid.uuid4()),
        "kind": kind,
        "status": status,
        "started_at": started_at if isinstance(started_at, str) else rfc3339(started_at),
        "finished_at": finished_at if isinstance(finished_at, str) else rfc3339(finished_at),
    }
    doc.update((name, value) for name, value in sections.items() if value is not None)
    return doc


def dumps(doc: Dict[str, Any]) -> str:
    """The canonical text of a manifest: compact, sorted keys, UTF-8, no NaN."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    """The chain hash of a manifest text: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def envelope(text: str, signature: str) -> Dict[str, str]:
    """The wire envelope of a signed manifest."""
    return {"manifest": text, "signature": signature}


if __name__ == "__main__":  # python -m bk_evidence.manifest > docs/schema/manifest-v1.json
    sys.stdout.write(json.dumps(JSON_SCHEMA, indent=2, sort_keys=True) + "\n")
