"""The bad-input catalogue: every kind of bad request, its answer per the wire contract, and proof
that nothing was stored (every row of every table, events and derived state, before and after).

The table in docs/reliability.md is generated from CATALOGUE and checked equal here; after a
change, rewrite it with `BK_UPDATE_DOCS=1 pytest tests/reliability/test_reliability_catalogue.py`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bk_evidence import manifest as bk_manifest
from bk_reporter import hosts
from support.database import table_snapshot
from support.keys import sshsig_ed25519
from support.reporters import LiveReporter, ReporterDatabase, enroll, serving
from support.signing_hosts import MemoryHost, rfc3339

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
SINGLE, BATCH = "/api/v1/manifests", "/api/v1/manifests/batch"


@dataclass
class Fleet:
    """web1 and db1 enrolled with history stored; old1's key retired; ghost never enrolled."""

    web1: MemoryHost
    db1: MemoryHost
    old1: MemoryHost
    ghost: MemoryHost
    stored: list[dict[str, str]] = field(default_factory=list)  # web1's stored envelopes, oldest first


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str = "application/json"


def as_json(value: object) -> Request:
    return Request(json.dumps(value).encode())


def signed(host: MemoryHost, text: str) -> Request:
    return as_json({"manifest": text, "signature": host.sign(text)})


@dataclass(frozen=True)
class BadInput:
    name: str
    path: str
    status: int  # the HTTP status; for a batch, 200 and `items` holds each item's (status, code)
    code: str
    build: Callable[[Fleet], Request]
    items: tuple[tuple[int, str], ...] = ()

    @property
    def answer(self) -> str:
        if not self.items:
            return f"{self.status} `{self.code}`"
        return f"{self.status}, items: " + ", ".join(f"{status} `{code}`" for status, code in self.items)


# -- builders ---------------------------------------------------------------------------------------


def _forged(fleet: Fleet) -> Request:
    text = fleet.web1.text()
    forger = Ed25519PrivateKey.generate()
    signature = sshsig_ed25519(forger, text.encode(), embedded_public=fleet.web1.public_line)
    return as_json({"manifest": text, "signature": signature})


def _another_hosts_key(fleet: Fleet) -> Request:
    return signed(fleet.db1, fleet.web1.text())


def _changed_byte(fleet: Fleet) -> Request:
    text = fleet.web1.text()
    envelope = {"manifest": text.replace('"success"', '"warning"'), "signature": fleet.web1.sign(text)}
    return as_json(envelope)


def _truncated_signature(fleet: Fleet) -> Request:
    text = fleet.web1.text()
    lines = fleet.web1.sign(text).splitlines()
    return as_json({"manifest": text, "signature": "\n".join([*lines[:-2], lines[-2][:10], lines[-1]])})


def _wrong_namespace(fleet: Fleet) -> Request:
    text = fleet.web1.text()
    return as_json({"manifest": text, "signature": fleet.web1.sign(text, namespace="file")})


def _reused_signature(fleet: Fleet) -> Request:
    return as_json({"manifest": fleet.web1.text(), "signature": fleet.stored[0]["signature"]})


def _replay_new_id(fleet: Fleet) -> Request:
    old = fleet.stored[0]
    doc = json.loads(old["manifest"])
    doc["id"] = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    return as_json({"manifest": bk_manifest.dumps(doc), "signature": old["signature"]})


def _replay_new_id_resigned(fleet: Fleet) -> Request:
    doc = json.loads(fleet.stored[0]["manifest"])
    doc["id"] = "1b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    return signed(fleet.web1, bk_manifest.dumps(doc))


def _same_seq_other_content(fleet: Fleet) -> Request:
    return signed(fleet.web1, fleet.web1.text(seq=1, prev=None, status="failure"))


def _same_id_other_content(fleet: Fleet) -> Request:
    stored_id = json.loads(fleet.stored[-1]["manifest"])["id"]
    return signed(fleet.web1, fleet.web1.text(id=stored_id, status="failure"))


def _with(**fields: object) -> Callable[[Fleet], Request]:
    return lambda fleet: signed(fleet.web1, fleet.web1.text(**fields))


def _finished_before_started(fleet: Fleet) -> Request:
    now = datetime.now(UTC)
    return signed(fleet.web1, fleet.web1.text(started_at=rfc3339(now), finished_at=rfc3339(now - timedelta(hours=1))))


def _raw_manifest(make: Callable[[str], str]) -> Callable[[Fleet], Request]:
    return lambda fleet: signed(fleet.web1, make(fleet.web1.text()))


def _lone_surrogate(fleet: Fleet) -> Request:
    text = fleet.web1.text()[:-1] + ',"note":"\ud800"}'  # cannot be UTF-8 encoded, so cannot be signed either
    return as_json({"manifest": text, "signature": signed_envelope(fleet)["signature"]})


def _oversize_body(fleet: Fleet) -> Request:
    return Request(b'{"manifest": "' + b"x" * (600 * 1024) + b'", "signature": "x"}')


def _non_utf8(fleet: Fleet) -> Request:
    return Request(json.dumps(signed_envelope(fleet)).encode().replace(b"backup", b"b\xffckup"))


def signed_envelope(fleet: Fleet) -> dict[str, str]:
    text = fleet.web1.text()
    return {"manifest": text, "signature": fleet.web1.sign(text)}


def _duplicate_body_keys(fleet: Fleet) -> Request:
    envelope = signed_envelope(fleet)
    body = json.dumps(envelope)[:-1] + ', "manifest": ' + json.dumps(envelope["manifest"]) + "}"
    return Request(body.encode())


def _wrong_content_type(fleet: Fleet) -> Request:
    return Request(json.dumps(signed_envelope(fleet)).encode(), content_type="text/plain")


def _among_retries(name: str, bad: Callable[[Fleet], Request], status: int, code: str) -> BadInput:
    """A batch of retries of stored manifests around one bad item: only the bad item could change anything."""

    def build(fleet: Fleet) -> Request:
        return as_json([fleet.stored[0], json.loads(bad(fleet).body), fleet.stored[1]])

    retry = (200, "duplicate")
    return BadInput(name, BATCH, 200, "per item", build, (retry, (status, code), retry))


def _too_many_items(fleet: Fleet) -> Request:
    return as_json([fleet.stored[0]] * 5001)


def _oversize_batch(fleet: Fleet) -> Request:
    return Request(b'["' + b"x" * (8 * 1024 * 1024) + b'"]')


CATALOGUE: tuple[BadInput, ...] = (
    # signatures and keys
    BadInput("forged signature: the host's key named, another key signed", SINGLE, 401, "bad_signature", _forged),
    BadInput("valid signature by another enrolled host's key", SINGLE, 401, "key_not_for_host", _another_hosts_key),
    BadInput("retired key", SINGLE, 401, "unknown_key", lambda f: signed(f.old1, f.old1.text())),
    BadInput(
        "unknown host (its key was never enrolled)",
        SINGLE,
        401,
        "unknown_key",
        lambda f: signed(f.ghost, f.ghost.text()),
    ),
    BadInput(
        "enrolled key, manifest names an unknown host",
        SINGLE,
        401,
        "key_not_for_host",
        lambda f: signed(f.web1, f.ghost.text()),
    ),
    BadInput("one byte of the manifest changed after signing", SINGLE, 401, "bad_signature", _changed_byte),
    BadInput("truncated signature", SINGLE, 401, "bad_signature", _truncated_signature),
    BadInput("signature in another SSHSIG namespace (`file`)", SINGLE, 401, "bad_signature", _wrong_namespace),
    BadInput("another manifest's valid signature", SINGLE, 401, "bad_signature", _reused_signature),
    BadInput(
        "garbage signature",
        SINGLE,
        401,
        "bad_signature",
        lambda f: as_json({"manifest": f.web1.text(), "signature": "hello"}),
    ),
    # replays and forks
    BadInput("replayed manifest with a new id, old signature", SINGLE, 401, "bad_signature", _replay_new_id),
    BadInput(
        "replayed manifest with a new id, re-signed by the host", SINGLE, 409, "seq_conflict", _replay_new_id_resigned
    ),
    BadInput("same seq, different content (a fork)", SINGLE, 409, "seq_conflict", _same_seq_other_content),
    BadInput("same id, different content", SINGLE, 409, "id_conflict", _same_id_other_content),
    # the manifest's content
    BadInput("finished 10 minutes in the future", SINGLE, 422, "future_time", _with(ago=timedelta(minutes=-10))),
    BadInput("finished before started", SINGLE, 422, "schema_violation", _finished_before_started),
    BadInput("required field missing (`status`)", SINGLE, 422, "schema_violation", _with(status=None)),
    BadInput("wrong type (`seq` as a string)", SINGLE, 422, "schema_violation", _with(seq="3")),
    BadInput("`seq` 0", SINGLE, 422, "schema_violation", _with(seq=0)),
    BadInput("`seq` beyond 64-bit", SINGLE, 422, "schema_violation", _with(seq=2**64)),
    BadInput("`seq` 2^63 - 1 (its successor overflows bigint)", SINGLE, 422, "schema_violation", _with(seq=2**63 - 1)),
    BadInput("`prev` not a SHA-256", SINGLE, 422, "schema_violation", _with(prev="abc")),
    BadInput("unknown `kind`", SINGLE, 422, "schema_violation", _with(kind="delete-everything")),
    BadInput("time without an offset", SINGLE, 422, "schema_violation", _with(finished_at="2024-01-01T00:00:00")),
    BadInput(
        "credentials in the repository URL",
        SINGLE,
        422,
        "schema_violation",
        _with(repository={"name": "hub", "url": "rest:https://web1:pw@hub:8000/web1/"}),
    ),
    BadInput("NUL character in `job`", SINGLE, 422, "schema_violation", _with(job="ho\x00me")),
    BadInput("manifest is not JSON", SINGLE, 422, "manifest_not_json", _raw_manifest(lambda text: text[:-1])),
    BadInput("manifest is a JSON list", SINGLE, 422, "manifest_not_json", _raw_manifest(lambda text: f"[{text}]")),
    BadInput(
        "duplicate keys in the manifest",
        SINGLE,
        422,
        "manifest_not_json",
        _raw_manifest(lambda text: text[:-1] + ',"status":"failure"}'),
    ),
    BadInput(
        "NaN in the manifest", SINGLE, 422, "manifest_not_json", _raw_manifest(lambda text: text[:-1] + ',"x":NaN}')
    ),
    BadInput(
        "manifest nested 40 deep",
        SINGLE,
        422,
        "manifest_not_json",
        _raw_manifest(lambda text: text[:-1] + ',"x":' + "[" * 40 + "]" * 40 + "}"),
    ),
    BadInput("manifest over 256 KiB", SINGLE, 413, "too_large", _with(padding="x" * 262144)),
    BadInput("lone surrogate in the manifest string", SINGLE, 400, "bad_envelope", _lone_surrogate),
    # the request body
    BadInput("request body over 576 KiB", SINGLE, 413, "too_large", _oversize_body),
    BadInput("body is not UTF-8", SINGLE, 400, "not_json", _non_utf8),
    BadInput(
        "body is JSON nested 100,000 deep", SINGLE, 400, "not_json", lambda f: Request(b"[" * 100000 + b"]" * 100000)
    ),
    BadInput("duplicate keys in the body", SINGLE, 400, "not_json", _duplicate_body_keys),
    BadInput("empty body", SINGLE, 400, "not_json", lambda f: Request(b"")),
    BadInput(
        "body is not JSON",
        SINGLE,
        400,
        "not_json",
        lambda f: Request(b"manifest=x&signature=y", "application/x-www-form-urlencoded"),
    ),
    BadInput(
        "envelope with an extra key",
        SINGLE,
        400,
        "bad_envelope",
        lambda f: as_json({**signed_envelope(f), "host": "web1"}),
    ),
    BadInput(
        "envelope without a signature", SINGLE, 400, "bad_envelope", lambda f: as_json({"manifest": f.web1.text()})
    ),
    BadInput(
        "manifest given as an object, not a string",
        SINGLE,
        400,
        "bad_envelope",
        lambda f: as_json({"manifest": f.web1.document(), "signature": "x"}),
    ),
    BadInput(
        "a list sent to the single endpoint", SINGLE, 400, "bad_envelope", lambda f: as_json([signed_envelope(f)])
    ),
    # batches
    BadInput("batch that is not a list", BATCH, 400, "not_a_list", lambda f: as_json(signed_envelope(f))),
    BadInput("batch of 5,001 items", BATCH, 413, "too_many_items", _too_many_items),
    BadInput("batch body over 8 MiB", BATCH, 413, "too_large", _oversize_batch),
    BadInput("batch body not UTF-8", BATCH, 400, "not_json", _non_utf8),
    _among_retries("batch: one forged item among retries", _forged, 401, "bad_signature"),
    _among_retries("batch: one fork among retries", _same_seq_other_content, 409, "seq_conflict"),
    _among_retries("batch: one future item among retries", _with(ago=timedelta(hours=-1)), 422, "future_time"),
    _among_retries("batch: one malformed item among retries", lambda f: Request(b"42"), 400, "bad_envelope"),
)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(module_reporter_db: ReporterDatabase) -> Fleet:
    fleet = Fleet(*(MemoryHost.named(name) for name in ("web1", "db1", "old1", "ghost")))
    for host in (fleet.web1, fleet.db1, fleet.old1):
        enroll(module_reporter_db.owner_url, host)
    return fleet


@pytest.fixture(scope="module")
def live(module_reporter_db: ReporterDatabase, fleet: Fleet) -> Iterator[LiveReporter]:
    with serving(module_reporter_db) as reporter, httpx.Client(base_url=reporter.url, timeout=60) as client:
        fleet.stored = [fleet.web1.envelope(), fleet.web1.envelope()]
        history = [*fleet.stored, fleet.db1.envelope(), fleet.old1.envelope()]
        assert [client.post(SINGLE, json=item).status_code for item in history] == [201] * 4
        with psycopg.connect(module_reporter_db.owner_url, autocommit=True) as conn:
            hosts.retire(conn, "old1", fleet.old1.public_line)
        yield reporter


def post(reporter: LiveReporter, case: BadInput, request: Request) -> httpx.Response:
    with httpx.Client(base_url=reporter.url, timeout=60) as client:
        return client.post(case.path, content=request.body, headers={"content-type": request.content_type})


def check_answer(case: BadInput, response: httpx.Response) -> None:
    assert response.status_code == case.status, response.text[:500]
    body = response.json()
    if case.items:
        assert [(item["status"], item["code"]) for item in body] == list(case.items)
        assert all(isinstance(item["message"], str) and item["message"] for item in body)
    else:
        assert (body["status"], body["code"]) == (case.status, case.code)
        assert isinstance(body["message"], str) and body["message"]


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.name for case in CATALOGUE])
def test_bad_input_is_answered_per_contract_and_stores_nothing(
    case: BadInput, live: LiveReporter, fleet: Fleet
) -> None:
    request = case.build(fleet)
    before = table_snapshot(live.database.owner_url)
    response = post(live, case, request)
    check_answer(case, response)
    assert table_snapshot(live.database.owner_url) == before


def test_the_catalogue_is_large_and_covers_the_issue(live: LiveReporter) -> None:
    assert len(CATALOGUE) >= 17
    assert len({case.name for case in CATALOGUE}) == len(CATALOGUE)
    codes = {code for case in CATALOGUE for code in (case.code, *(code for _s, code in case.items))}
    assert {"bad_signature", "unknown_key", "key_not_for_host", "seq_conflict", "id_conflict"} <= codes
    assert {"future_time", "schema_violation", "manifest_not_json", "too_large", "not_json", "bad_envelope"} <= codes


def test_the_snapshot_sees_a_row_written_behind_the_reporters_back(live: LiveReporter, fleet: Fleet) -> None:
    """The proof of "nothing stored" can fail: one stored manifest changes the snapshot."""
    before = table_snapshot(live.database.owner_url)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        assert client.post(SINGLE, json=fleet.db1.envelope()).status_code == 201
    after = table_snapshot(live.database.owner_url)
    changed = {table for table in after if after[table] != before[table]}
    assert {"events", "host_chain"} <= changed


# -- the document ---------------------------------------------------------------------------------

START, END = (
    "<!-- catalogue:start (generated from tests/reliability/test_reliability_catalogue.py) -->",
    "<!-- catalogue:end -->",
)


def catalogue_markdown() -> str:
    rows = [
        f"| {number} | {case.name} | `{'batch' if case.path == BATCH else 'single'}` | {case.answer} |"
        for number, case in enumerate(CATALOGUE, 1)
    ]
    return "\n".join(["| # | bad input | endpoint | answer |", "|---|---|---|---|", *rows])


def test_docs_reliability_holds_the_catalogue() -> None:
    text = DOCS.read_text()
    pattern = re.compile(re.escape(START) + r"\n(.*?)\n" + re.escape(END), re.S)
    match = pattern.search(text)
    assert match, f"{DOCS} lacks the catalogue markers"
    if os.environ.get("BK_UPDATE_DOCS") == "1":
        DOCS.write_text(text[: match.start(1)] + catalogue_markdown() + text[match.end(1) :])
        return
    assert match.group(1) == catalogue_markdown(), "rewrite it: BK_UPDATE_DOCS=1 pytest " + __file__
