"""From an envelope on the wire to a verified manifest ready to store, or a rejection.

The order of the checks is the wire contract's (docs/architecture.md):

1. the envelope is a JSON object with exactly `manifest` and `signature` strings   else 400
2. the manifest is at most `max_manifest_bytes` of UTF-8                            else 413
3. the key inside the signature is enrolled (and not retired)                        else 401
4. the signature verifies over the manifest's UTF-8 bytes with that key, namespace
   bk-manifest@v1                                                                    else 401
5. only now is the manifest parsed (strict JSON)                                     else 422
6. the key is enrolled for the `host` the manifest names                             else 401
7. the manifest is valid against schema v1 (which includes finished_at >= started_at) else 422
8. it did not finish in the future (beyond future_tolerance)                        else 422

Nothing here touches the database: the keys a batch needs are looked up beforehand
(`KeyRing`), and storing is `store.py`'s job. Enrolment (3 and 6) is decided, and worded, in
one place, `enrolment`, for the verifier and for store's re-check at INSERT time. The path
that runs these checks for a request, and what comes before and after, is ingest_spine.py.
Before 1, a client over its ingest limit is answered 429 (app.py, ratelimit.py).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bk_evidence import manifest as bk_manifest
from bk_evidence import sshsig

from .outcome import Outcome

# PostgreSQL's bigint; larger figures are not stored (and fail validation here).
BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    max_manifest_bytes: int
    future_tolerance: timedelta


@dataclass(frozen=True)
class Envelope:
    manifest: str
    signature: str


@dataclass(frozen=True)
class SignedBy:
    """The key a signature says it was made with, before anything is verified."""

    envelope: Envelope
    message: bytes
    public_key: str
    fingerprint: str
    parsed: sshsig.ParsedSignature


@dataclass(frozen=True)
class EnrolledKey:
    public_key: str
    hosts: frozenset[str]


# Active (not retired) enrolled keys by fingerprint.
KeyRing = Mapping[str, EnrolledKey]


@dataclass(frozen=True)
class Facts:
    """What the reporter interprets beyond the required fields (None when absent)."""

    repository_name: str | None = None
    repository_url: str | None = None
    snapshot_id: str | None = None
    cadence_seconds: int | None = None
    data_added: int | None = None
    files_new: int | None = None
    files_changed: int | None = None
    files_unmodified: int | None = None
    bytes_processed: int | None = None
    lineage: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest that passed every check, with the columns extracted from it."""

    id: uuid.UUID
    manifest_id: str
    host: str
    seq: int
    prev: str | None
    sha256: str
    kind: str
    status: str
    job: str | None
    started_at: datetime
    finished_at: datetime
    key_fingerprint: str
    facts: Facts
    manifest: str
    signature: str


# -- enrolment: decided here, for the verifier and for store's re-check at INSERT time ------


def enrolment(
    keys: KeyRing, fingerprint: str, host: str | None, manifest_id: str | None = None
) -> EnrolledKey | Outcome:
    """The active enrolled key, or why it may not sign (for `host`; None: the host is not read yet)."""
    enrolled = keys.get(fingerprint)
    if enrolled is None:
        return Outcome(401, "unknown_key", f"the key {fingerprint} is not enrolled (or has been retired)", manifest_id)
    if host is not None and host not in enrolled.hosts:
        return Outcome(401, "key_not_for_host", f"the key {fingerprint} is not enrolled for host {host!r}", manifest_id)
    return enrolled


# -- 1. the envelope ----------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKeyError(f"the key {key!r} appears twice")
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# json.loads(text, object_pairs_hook=..., parse_constant=...) without a decoder per call.
_BODY_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)


def parse_json_body(body: bytes) -> Any | Outcome:
    """The request body as JSON (UTF-8, no duplicate keys, no NaN), or a 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Outcome(400, "not_json", "the request body is not UTF-8 text")
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _BODY_DECODER.decode(text)
    except _DuplicateKeyError as exc:
        return Outcome(400, "not_json", f"the request body is ambiguous JSON: {exc}")
    except (ValueError, RecursionError) as exc:
        return Outcome(400, "not_json", f"the request body is not JSON: {str(exc)[:200]}")


def envelope_from(value: Any) -> Envelope | Outcome:
    if not isinstance(value, dict):
        return Outcome(400, "bad_envelope", "an envelope must be a JSON object with `manifest` and `signature`")
    if set(value) != {"manifest", "signature"}:
        keys = ", ".join(sorted(map(str, value))) or "none"
        return Outcome(400, "bad_envelope", f"an envelope has exactly the keys manifest and signature, not: {keys}")
    manifest, signature = value["manifest"], value["signature"]
    if not isinstance(manifest, str) or not isinstance(signature, str):
        return Outcome(400, "bad_envelope", "`manifest` and `signature` must both be strings")
    return Envelope(manifest=manifest, signature=signature)


# -- 2-3. size and the key the signature names --------------------------------------------


def signed_by(envelope: Envelope, limits: Limits) -> SignedBy | Outcome:
    try:
        message = envelope.manifest.encode("utf-8")
    except UnicodeEncodeError:
        return Outcome(400, "bad_envelope", "the manifest string is not valid Unicode (it has lone surrogates)")
    if len(message) > limits.max_manifest_bytes:
        return Outcome(
            413, "too_large", f"the manifest is {len(message)} bytes; the limit is {limits.max_manifest_bytes}"
        )
    try:
        parsed = sshsig.parse(envelope.signature)
    except (sshsig.SignatureError, ValueError) as exc:
        return Outcome(401, "bad_signature", f"the signature is not a readable SSHSIG signature: {exc}")
    # "keytype base64", as enrolled
    return SignedBy(envelope, message, parsed.public_key(), parsed.fingerprint(), parsed)


# -- 4-8. verification, parsing, validation -----------------------------------------------


def verify(signed: SignedBy, keys: KeyRing, limits: Limits, now: datetime) -> VerifiedManifest | Outcome:
    enrolled = enrolment(keys, signed.fingerprint, None)
    if isinstance(enrolled, Outcome):
        return enrolled
    try:
        sshsig.verify_parsed(signed.message, signed.parsed, [enrolled.public_key])
    except sshsig.SignatureError as exc:
        return Outcome(401, "bad_signature", f"the signature does not verify: {exc}")
    try:
        doc = bk_manifest.loads_strict(signed.envelope.manifest)
    except bk_manifest.ManifestError as exc:
        return Outcome(422, "manifest_not_json", f"the manifest is not a strict JSON object: {exc}")
    manifest_id = doc["id"] if isinstance(doc.get("id"), str) else None
    host = doc.get("host")
    if isinstance(host, str):
        for_host = enrolment(keys, signed.fingerprint, host, manifest_id)
        if isinstance(for_host, Outcome):
            return for_host
    errors = bk_manifest.validate(doc)
    if errors:
        return Outcome(422, "schema_violation", "the manifest is not valid: " + "; ".join(errors[:5]), manifest_id)
    return _with_sane_times(signed, doc, limits, now)


def _with_sane_times(
    signed: SignedBy, doc: dict[str, Any], limits: Limits, now: datetime
) -> VerifiedManifest | Outcome:
    manifest_id = doc["id"]
    started, finished = parse_time(doc["started_at"]), parse_time(doc["finished_at"])
    if started is None or finished is None:  # validate() has checked them; this tells the type checker
        return Outcome(422, "schema_violation", "started_at and finished_at must be RFC 3339 times", manifest_id)
    if finished > now + limits.future_tolerance:
        return Outcome(
            422,
            "future_time",
            f"finished_at is in the future (more than {int(limits.future_tolerance.total_seconds())} s ahead "
            "of the reporter's clock)",
            manifest_id,
        )
    return _extracted(signed, doc, started, finished)


def _extracted(
    signed: SignedBy, doc: dict[str, Any], started: datetime, finished: datetime
) -> VerifiedManifest | Outcome:
    manifest_id = doc["id"]
    seq = doc["seq"]
    if not 1 <= seq < BIGINT_MAX:  # the chain triggers compute seq + 1 in bigint
        return Outcome(422, "schema_violation", f"seq must be between 1 and {BIGINT_MAX - 1}", manifest_id)
    job = doc.get("job")
    job = job if isinstance(job, str) else None
    if job is not None and not storable(job):
        return Outcome(422, "schema_violation", "job contains a NUL character or a lone surrogate", manifest_id)
    return VerifiedManifest(
        id=uuid.UUID(manifest_id),
        manifest_id=manifest_id,
        host=doc["host"],
        seq=int(seq),
        prev=doc["prev"],
        sha256=hashlib.sha256(signed.message).hexdigest(),  # bk_manifest.sha256_hex of the text
        kind=doc["kind"],
        status=doc["status"],
        job=job,
        started_at=started,
        finished_at=finished,
        key_fingerprint=signed.fingerprint,
        facts=extract_facts(doc),
        manifest=signed.envelope.manifest,
        signature=signed.envelope.signature,
    )


# -- what the reporter interprets ---------------------------------------------------------


def parse_time(value: str) -> datetime | None:
    """A time the schema validated (RFC 3339 with an offset) as an aware datetime.

    datetime.fromisoformat reads the usual forms fifty times faster than bk_evidence's parser,
    with the same result (fractions truncated to microseconds); the rest (lower-case t and z)
    goes to that parser, which is the reference.
    """
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return bk_manifest.parse_timestamp(value)
    return moment if moment.tzinfo is not None else None


def storable(text: str) -> bool:
    """Whether PostgreSQL can hold this string (no NUL, no lone surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _section(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _text(section: Mapping[str, Any], name: str) -> str | None:
    value = section.get(name)
    return value if isinstance(value, str) and storable(value) else None


def _count(section: Mapping[str, Any], name: str) -> int | None:
    value = section.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = int(value)
    return number if 0 <= number <= BIGINT_MAX else None


def _receipt_lineage(doc: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    items = _section(doc, "receipt").get("snapshots")
    lineage = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or _text(item, "id") is None:
            continue
        arrived = item.get("arrived_at")
        arrived_at = parse_time(arrived) if isinstance(arrived, str) else None
        lineage.append(
            {
                "snapshot": item["id"],
                "arrived_at": arrived_at.isoformat() if arrived_at else None,
                "size": _count(item, "size"),
            }
        )
    return tuple(lineage)


def _offsite_lineage(doc: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    offsite = _section(doc, "offsite")
    destination = _text(offsite, "destination")
    ids = offsite.get("snapshots")
    if destination is None or not isinstance(ids, list):
        return ()
    return tuple({"snapshot": i, "destination": destination} for i in ids if isinstance(i, str) and storable(i))


def extract_facts(doc: Mapping[str, Any]) -> Facts:
    """The optional figures the reporter stores in columns; the same function re-checks them in audit."""
    repository = _section(doc, "repository")
    stats = _section(doc, "stats")
    kind = doc.get("kind")
    snapshot_id = _text(_section(doc, "snapshot"), "id") if kind == "backup" else None
    lineage = None
    if kind == "hub-receipt":
        lineage = _receipt_lineage(doc)
    elif kind == "offsite-copy":
        lineage = _offsite_lineage(doc)
    elif snapshot_id is not None and _text(repository, "hub") is not None:
        lineage = ({"snapshot": snapshot_id, "hub": _text(repository, "hub")},)
    return Facts(
        repository_name=_text(repository, "name"),
        repository_url=_text(repository, "url"),
        snapshot_id=snapshot_id,
        cadence_seconds=_count(doc, "cadence_seconds"),
        data_added=_count(stats, "data_added"),
        files_new=_count(stats, "files_new"),
        files_changed=_count(stats, "files_changed"),
        files_unmodified=_count(stats, "files_unmodified"),
        bytes_processed=_count(stats, "total_bytes_processed"),
        lineage=lineage,
    )
