"""The OpenAPI 3.1 document the reporter serves at /api/v1/openapi.json.

docs/openapi.json is a copy of `document()` (regenerate it with `bk-reporter openapi >
docs/openapi.json`); a test checks that the two are equal.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .fleet import EVENTS_PAGE_MAX, STATES

JOB_STATES = [state for state in STATES if state != "missing"]


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = _nullable("string", format="date-time")

RESULT = _object(
    {
        "status": {"type": "integer", "enum": [200, 201, 400, 401, 404, 409, 413, 422, 429, 503]},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "id": _nullable("string"),
    },
    "The answer for one manifest (or for a whole request that could not be read): the HTTP status it "
    "gets, a machine code and a human sentence. id is the manifest's id when it is known.",
)

ENVELOPE = _object(
    {
        "manifest": {"type": "string", "description": "The manifest JSON text; the signature covers its UTF-8 bytes."},
        "signature": {"type": "string", "description": "Armored SSHSIG signature, namespace bk-manifest@v1."},
    },
    "A signed manifest as it travels.",
)

CHAIN = _object(
    {
        "events": {"type": "integer"},
        "last_seq": {"type": "integer"},
        "missing": {"type": "integer", "description": "Manifests missing below last_seq."},
        "breaks": {"type": "integer", "description": "Links whose prev does not match."},
        "last_received_at": TIME,
    }
)

JOB = _object(
    {
        "job": {"type": "string", "description": "Empty when the manifests name no job."},
        "kind": {"type": "string"},
        "state": {"type": "string", "enum": JOB_STATES},
        "last_status": {"type": "string", "enum": ["success", "warning", "failure"]},
        "last_event_id": {"type": "string", "format": "uuid"},
        "last_started_at": TIME,
        "last_finished_at": TIME,
        "last_duration_seconds": {"type": "number"},
        "last_data_added": _nullable("integer"),
        "last_snapshot_id": _nullable("string"),
        "cadence_seconds": _nullable("integer"),
        "last_success_at": NULLABLE_TIME,
        "last_success_age_seconds": _nullable("number"),
        "late_at": NULLABLE_TIME,
        "stale_at": NULLABLE_TIME,
        "runs": {"type": "integer"},
        "failures": {"type": "integer"},
        "unconfirmed_snapshots": {"type": "integer"},
    },
    "The latest state of one (host, job, kind).",
)

HOST_PROPERTIES: dict[str, Any] = {
    "host": {"type": "string"},
    "state": {"type": "string", "enum": list(STATES), "description": "The worst state among its jobs."},
    "active_keys": {"type": "integer"},
    "chain": {"oneOf": [_ref("Chain"), {"type": "null"}]},
    "jobs": {"type": "array", "items": _ref("Job")},
}

SNAPSHOT = _object(
    {
        "snapshot_id": {"type": "string"},
        "job": _nullable("string"),
        "repository_name": _nullable("string"),
        "claimed_at": TIME,
        "received": {"type": "boolean", "description": "A hub receipt confirmed it."},
        "hub_host": _nullable("string"),
        "arrived_at": NULLABLE_TIME,
        "size_bytes": _nullable("integer"),
        "offsite": {"type": "boolean"},
        "offsite_destinations": {"type": "array", "items": {"type": "string"}},
        "first_offsite_at": NULLABLE_TIME,
    },
    "A snapshot the host claimed, with its hub receipt and offsite presence.",
)

HOST_DETAIL = _object(
    {
        **HOST_PROPERTIES,
        "keys": {
            "type": "array",
            "items": _object(
                {
                    "fingerprint": {"type": "string"},
                    "key_type": {"type": "string"},
                    "comment": _nullable("string"),
                    "enrolled_at": TIME,
                    "retired_at": NULLABLE_TIME,
                }
            ),
        },
        "gaps": {
            "type": "array",
            "items": _object({"first_missing": {"type": "integer"}, "last_missing": {"type": "integer"}}),
        },
        "breaks": {
            "type": "array",
            "items": _object(
                {
                    "seq": {"type": "integer"},
                    "expected_prev": _nullable("string"),
                    "found_prev": _nullable("string"),
                    "detected_at": TIME,
                }
            ),
        },
        "snapshots": {"type": "array", "items": _ref("Snapshot")},
    },
    "One host: its jobs, keys, chain gaps and breaks (first 100 each) and its latest 50 snapshots.",
)

EVENT_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"},
    "host": {"type": "string"},
    "seq": {"type": "integer"},
    "prev": _nullable("string"),
    "sha256": {"type": "string"},
    "kind": {"type": "string"},
    "status": {"type": "string", "enum": ["success", "warning", "failure"]},
    "job": _nullable("string"),
    "started_at": TIME,
    "finished_at": TIME,
    "received_at": TIME,
    "duration_seconds": {"type": "number"},
    "key_fingerprint": {"type": "string"},
    "repository_name": _nullable("string"),
    "snapshot_id": _nullable("string"),
    "data_added": _nullable("integer"),
}

EVENT_DETAIL = _object(
    {
        **EVENT_PROPERTIES,
        "manifest": {"type": "string", "description": "The manifest text as received and verified."},
        "signature": {"type": "string"},
    },
    "One stored manifest, verbatim, with what the reporter extracted from it.",
)

SCHEMAS = {
    "Envelope": ENVELOPE,
    "Result": RESULT,
    "Chain": CHAIN,
    "Job": JOB,
    "Host": _object(HOST_PROPERTIES, "One host and its jobs."),
    "Fleet": _object(
        {
            "generated_at": TIME,
            "counts": _object({state: {"type": "integer"} for state in STATES}, "(host, job, kind) rows per state."),
            "hosts": {"type": "array", "items": _ref("Host")},
        }
    ),
    "HostDetail": HOST_DETAIL,
    "Snapshot": SNAPSHOT,
    "Event": _object(EVENT_PROPERTIES, "One stored manifest, without its text."),
    "EventDetail": EVENT_DETAIL,
    "EventsPage": _object(
        {
            "events": {"type": "array", "items": _ref("Event")},
            "next_cursor": _nullable("string", description="Pass as cursor for the next page; null on the last."),
        }
    ),
}

ERROR = _ref("Result")
UNAVAILABLE = _json(ERROR, "The database is unreachable; retry later.")
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
RATE_LIMITED = {
    **_json(ERROR, "This client address sent more ingest requests than its limit; retry after Retry-After seconds."),
    "headers": RETRY_AFTER,
}


def _ingest_answers(success: dict[str, Any]) -> dict[str, Any]:
    return {
        **success,
        "400": _json(ERROR, "Not JSON, or not the expected shape."),
        "401": _json(ERROR, "The signature does not verify, the key is unknown or not the host's."),
        "409": _json(ERROR, "Another manifest with this id, or with this host and seq, is stored."),
        "413": _json(ERROR, "Too large."),
        "422": _json(ERROR, "The manifest violates the schema or the time rules."),
        "429": RATE_LIMITED,
        "503": UNAVAILABLE,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _get_one(summary: str, operation_id: str, parameter: str, found: dict[str, Any], missing: str) -> dict[str, Any]:
    """A GET of one thing named by a path parameter: 200 with it, 404 without."""
    return {
        "get": {
            "summary": summary,
            "operationId": operation_id,
            "parameters": [{"name": parameter, "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": found, "404": _json(ERROR, missing), "503": UNAVAILABLE},
        }
    }


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/manifests": {
            "post": {
                "summary": "Submit one signed manifest",
                "operationId": "postManifest",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Envelope")}}},
                "responses": _ingest_answers(
                    {
                        "201": _json(ERROR, "Stored."),
                        "200": _json(ERROR, "Already stored with identical bytes; nothing new was stored."),
                    }
                ),
            }
        },
        "/api/v1/manifests/batch": {
            "post": {
                "summary": "Submit several signed manifests; one result per item, in order",
                "operationId": "postManifestBatch",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "description": "Envelopes. An item that is not an envelope gets a result with "
                                "status 400; the others are still processed.",
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Result")}, "One result per item, in order."),
                    "400": _json(ERROR, "The body is not a JSON list."),
                    "413": _json(ERROR, "The body or the number of items is over the limit."),
                    "429": RATE_LIMITED,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/hosts": {
            "get": {
                "summary": "Every host, worst first, with the state of each job",
                "operationId": "listHosts",
                "responses": {"200": _json(_ref("Fleet"), "The fleet."), "503": UNAVAILABLE},
            }
        },
        "/api/v1/hosts/{host}": _get_one(
            "One host in detail",
            "getHost",
            "host",
            _json(_ref("HostDetail"), "The host."),
            "No such host (neither enrolled nor reporting).",
        ),
        "/api/v1/notifications": {
            "get": {
                "summary": "Open alerts, the latest deliveries (route, outcome, error) and active silences",
                "operationId": "listNotifications",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["generated_at", "alerts", "deliveries", "silences"],
                            "properties": {
                                "generated_at": {"type": "string", "format": "date-time"},
                                "alerts": {"type": "array", "items": {"type": "object"}},
                                "deliveries": {"type": "array", "items": {"type": "object"}},
                                "silences": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "What the evaluator told, to which route, and how it went.",
                    ),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/events": {
            "get": {
                "summary": "Stored manifests in (finished_at, id) order, a page at a time",
                "operationId": "listEvents",
                "parameters": [
                    _query("host", {"type": "string"}, "Only this host's."),
                    _query("kind", {"type": "string"}, "Only this kind."),
                    _query("since", {"type": "string", "format": "date-time"}, "Only those finished at or after."),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": EVENTS_PAGE_MAX}, "Page size."),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page."),
                ],
                "responses": {
                    "200": _json(_ref("EventsPage"), "A page of events."),
                    "400": _json(ERROR, "A parameter is unusable."),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/events/{id}": _get_one(
            "One stored manifest, verbatim",
            "getEvent",
            "id",
            _json(_ref("EventDetail"), "The event."),
            "No such event.",
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "503": UNAVAILABLE,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and database reachability",
                "operationId": "health",
                "responses": {
                    "200": _json(_object({"status": {"type": "string", "enum": ["ok"]}}), "Serving."),
                    "503": UNAVAILABLE,
                },
            }
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bk reporter",
            "version": __version__,
            "description": "Accepts signed backup manifests, verifies and stores them append-only, and answers "
            "what state the fleet is in. Ingest is authenticated by the manifests' SSH signatures alone.",
        },
        "paths": _paths(),
        "components": {"schemas": SCHEMAS},
    }
