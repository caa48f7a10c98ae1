"""Manifest schema v1 and v1.1: one source of truth, a validator that agrees with jsonschema, strict parsing."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bk_evidence import manifest

REPO = Path(__file__).resolve().parents[2]
HEX64 = "0123456789abcdef" * 4
JSONSCHEMA = jsonschema.Draft202012Validator(
    manifest.JSON_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def required_only(**changes: object) -> dict:
    doc = {
        "schema": "bk.manifest/v1",
        "id": "5f0c6c55-1b8a-4f2e-9a59-2b8f1d5c9e11",
        "host": "web1",
        "seq": 1,
        "prev": None,
        "kind": "backup",
        "status": "failure",
        "started_at": "2024-05-01T02:00:00+02:00",
        "finished_at": "2024-05-01T00:00:01Z",
    }
    doc.update(changes)
    return doc


def full_backup() -> dict:
    return required_only(
        status="success",
        prev=HEX64,
        seq=7,
        job="home",
        repository={"name": "hub", "url": "rest:https://hub.example:8000/web1/", "id": HEX64},
        snapshot={
            "id": HEX64,
            "short_id": "01234567",
            "paths": ["/home"],
            "tags": ["daily"],
            "parent": None,
            "time": "2024-05-01T00:00:00.123456789Z",
        },
        stats={"files_new": 1, "data_added": 10, "total_duration": 1.5},
        cadence_seconds=86400,
        error={"exit_code": None, "stderr_tail": "", "message": "ok"},
        tools={"restic": "0.14.0", "bk": "0.1.0"},
        future_field={"kept": True},
    )


VALID = {
    "required only": required_only(),
    "full backup": full_backup(),
    "hub receipt": required_only(
        kind="hub-receipt",
        repository={"name": "web1"},
        receipt={"snapshots": [{"id": HEX64, "size": 300, "arrived_at": "2024-05-01T00:00:00Z"}]},
    ),
    "offsite": required_only(kind="offsite-copy", offsite={"destination": "b2", "mode": "copy", "snapshots": [HEX64]}),
    "forget": required_only(kind="forget", forget={"policy": {"keep_daily": 7}, "removed": [HEX64], "kept": []}),
    "prune": required_only(kind="prune", prune={"max_unused": "5%", "pruned_blobs": 3, "pruned_size": "1.2 MiB"}),
    "drill": required_only(kind="drill", restore={"snapshot": "01234567", "files_checked": 3, "mismatches": 0}),
    "ansible run": required_only(
        kind="ansible-run",
        host="controller",
        ansible_run={"playbook": "site.yml", "hosts": ["web1"], "counts": {"ok": 3}, "duration_seconds": 2.5},
    ),
    "integer-valued float": required_only(seq=2.0),
    "v1.1 backup with restic 0.18's figures and a cause": required_only(
        schema="bk.manifest/v1.1",
        stats={
            "data_added_packed": 848,
            "backup_start": "2026-12-03T10:28:55.671148904Z",
            "backup_end": "2026-12-03T10:28:56Z",
        },
        error={
            "exit_code": 12,
            "message": "restic backup exited 12: the repository password is wrong",
            "cause": "wrong_password",
        },
    ),
}

INVALID = {
    "missing id": {k: v for k, v in required_only().items() if k != "id"},
    "wrong schema": required_only(schema="bk.manifest/v2"),
    "unknown kind": required_only(kind="copy"),
    "unknown status": required_only(status="ok"),
    "seq zero": required_only(seq=0),
    "seq boolean": required_only(seq=True),
    "seq float": required_only(seq=1.5),
    "prev not hex": required_only(prev="XYZ"),
    "prev upper-case": required_only(prev=HEX64.upper()),
    "no offset": required_only(started_at="2024-05-01T00:00:00"),
    "not a date": required_only(finished_at="2024-13-01T00:00:00Z"),
    "id not a uuid": required_only(id="123"),
    "credentials in url": required_only(repository={"name": "hub", "url": "rest:https://web1:secret@hub/web1/"}),
    "short snapshot id": required_only(snapshot={"id": "01234567"}),
    "negative count": required_only(stats={"files_new": -1}),
    "tool version not a string": required_only(tools={"restic": 14}),
    "long stderr": required_only(error={"stderr_tail": "x" * 5000}),
    "receipt without arrival": required_only(receipt={"snapshots": [{"id": HEX64}]}),
    "bad host name": required_only(host="web 1"),
    "zero cadence": required_only(cadence_seconds=0),
    "mode": required_only(offsite={"destination": "b2", "mode": "sync"}),
    "negative packed size": required_only(schema="bk.manifest/v1.1", stats={"data_added_packed": -1}),
    "backup_start not a time": required_only(stats={"backup_start": "yesterday"}),
    "cause not a word": required_only(error={"cause": "Wrong Password!"}),
}


def test_new_manifests_are_v1_1_and_readers_accept_v1_too() -> None:
    doc = manifest.new_manifest("backup", "success", "2024-05-01T00:00:00Z", "2024-05-01T00:00:01Z")
    assert doc["schema"] == manifest.SCHEMA == "bk.manifest/v1.1"
    assert manifest.ACCEPTED_SCHEMAS == ("bk.manifest/v1", "bk.manifest/v1.1")
    for schema in manifest.ACCEPTED_SCHEMAS:
        assert manifest.validate(required_only(schema=schema)) == []


def test_published_schema_is_generated_from_the_code() -> None:
    published = json.loads((REPO / "docs" / "schema" / "manifest-v1.json").read_text())
    assert published == manifest.JSON_SCHEMA, (
        "regenerate: python -m bk_evidence.manifest > docs/schema/manifest-v1.json"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(manifest.JSON_SCHEMA)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_fixtures(name: str) -> None:
    assert manifest.validate(VALID[name]) == []
    assert JSONSCHEMA.is_valid(VALID[name])


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixtures(name: str) -> None:
    assert manifest.validate(INVALID[name]) != []
    assert not JSONSCHEMA.is_valid(INVALID[name])


@pytest.mark.parametrize("kind", manifest.KINDS)
def test_required_fields_are_enough_for_every_kind(kind: str) -> None:
    assert manifest.validate(required_only(kind=kind)) == []


def test_finished_before_started_is_invalid() -> None:
    problems = manifest.validate(required_only(started_at="2024-05-01T00:00:02Z", finished_at="2024-05-01T00:00:01Z"))
    assert problems == ["$.finished_at: before started_at"]


def test_errors_name_the_field() -> None:
    assert manifest.validate(required_only(stats={"files_new": -1})) == ["$.stats.files_new: must be at least 0"]


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["", "x", HEX64, "01234567", "2024-05-01T00:00:00Z", "b2", "copy", "backup", "web 1"]),
)
PATHS = sorted(
    {
        ("seq",),
        ("prev",),
        ("kind",),
        ("status",),
        ("host",),
        ("started_at",),
        ("job",),
        ("cadence_seconds",),
        ("repository",),
        ("repository", "name"),
        ("repository", "id"),
        ("snapshot",),
        ("snapshot", "id"),
        ("snapshot", "parent"),
        ("snapshot", "tags"),
        ("stats", "files_new"),
        ("stats", "total_duration"),
        ("stats", "data_added_packed"),
        ("stats", "backup_start"),
        ("error", "cause"),
        ("schema",),
        ("error", "exit_code"),
        ("tools", "restic"),
        ("tools", "new_tool"),
        ("future_field",),
    }
)


def with_value_at(path: tuple[str, ...], value: object) -> dict:
    """full_backup() with the field at path (a key per level) set to value."""
    doc = full_backup()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


MUTATED_BACKUPS = st.builds(with_value_at, st.sampled_from(PATHS), st.one_of(SCALARS, st.lists(SCALARS, max_size=2)))


@settings(max_examples=500)
@given(doc=MUTATED_BACKUPS)
def test_validator_agrees_with_jsonschema_on_mutations(doc: dict) -> None:
    assert (manifest.validate(doc) == []) == JSONSCHEMA.is_valid(doc)


TIMES = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1),
    max_value=datetime.datetime(2100, 1, 1),
    timezones=st.sampled_from([datetime.UTC, datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))]),
)
SECTIONS = st.fixed_dictionaries(
    {},
    optional={
        "job": st.from_regex(r"\A[a-z][a-z0-9_.-]{0,20}\Z"),
        "cadence_seconds": st.integers(1, 10**7),
        "stats": st.fixed_dictionaries(
            {"files_new": st.integers(0, 10**9), "data_added": st.integers(0, 10**15)},
            optional={"total_duration": st.floats(0, 10**5)},
        ),
        "error": st.fixed_dictionaries(
            {"exit_code": st.one_of(st.none(), st.integers(-255, 255)), "message": st.text(max_size=200)}
        ),
        "receipt": st.fixed_dictionaries(
            {
                "snapshots": st.lists(
                    st.fixed_dictionaries({"id": st.just(HEX64), "arrived_at": st.just("2024-01-01T00:00:00Z")})
                )
            }
        ),
    },
)


@settings(max_examples=300)
@given(
    kind=st.sampled_from(manifest.KINDS),
    status=st.sampled_from(manifest.STATUSES),
    start=TIMES,
    duration=st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=3)),
    sections=SECTIONS,
    seq=st.integers(1, 10**9),
    prev=st.one_of(st.none(), st.just(HEX64)),
)
def test_builder_output_is_valid_and_round_trips(
    kind: str,
    status: str,
    start: datetime.datetime,
    duration: datetime.timedelta,
    sections: dict,
    seq: int,
    prev: str | None,
) -> None:
    doc = manifest.new_manifest(kind, status, start, start + duration, **sections)
    doc.update(host="web1", seq=seq, prev=prev)
    assert manifest.validate(doc) == []
    assert JSONSCHEMA.is_valid(doc)
    text = manifest.dumps(doc)
    assert manifest.loads_strict(text) == doc
    assert manifest.dumps(manifest.loads_strict(text)) == text
    assert manifest.parse_timestamp(doc["started_at"]) == start


def test_builder_drops_empty_sections_and_needs_aware_times() -> None:
    now = manifest.utc_now()
    doc = manifest.new_manifest("check", "success", now, now, error=None, job="home")
    assert "error" not in doc and doc["job"] == "home"
    with pytest.raises(ValueError):
        manifest.new_manifest("check", "success", datetime.datetime(2024, 1, 1), now)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "invalid_json"),
        ('{"a": 1, "a": 2}', "duplicate_key"),
        ('{"a": NaN}', "non_finite_number"),
        ('{"a": -Infinity}', "non_finite_number"),
        ("[1]", "not_an_object"),
        ('"x"', "not_an_object"),
        ('{"a":' + "[" * 40 + "]" * 40 + "}", "too_deep"),
        ('{"a":' + "[" * 100000 + "]" * 100000 + "}", "too_deep"),
    ],
)
def test_loads_strict_refuses(text: str, code: str) -> None:
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.loads_strict(text)
    assert caught.value.code == code


def test_loads_strict_depth_limit_is_32() -> None:
    assert manifest.loads_strict('{"a":' + "[" * 31 + "]" * 31 + "}")
    with pytest.raises(manifest.ManifestError, match="deeper"):
        manifest.loads_strict('{"a":' + "[" * 32 + "]" * 32 + "}")


def test_sha256_is_of_utf8_bytes() -> None:
    assert manifest.sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert manifest.sha256_hex("é") == hashlib.sha256(b"\xc3\xa9").hexdigest()


# -- the fast paths agree with the reference implementations --------------------------------


@settings(max_examples=1000)
@given(doc=MUTATED_BACKUPS)
def test_compiled_check_agrees_with_the_messages(doc: dict) -> None:
    """validate() asks _errors for messages only when the compiled predicate fails: both must agree."""
    assert manifest._valid(doc) == (manifest._errors(doc, manifest.JSON_SCHEMA, "$") == [])


def reference_timestamp(value: object) -> datetime.datetime | None:
    """The original parser (regex gate, strptime), kept here as the reference."""
    if not isinstance(value, str) or not re.match(manifest._RFC3339, value):
        return None
    date_part, time_part = value[:10], value[11:]
    zone_at = len(time_part) - 1 if time_part[-1] in "Zz" else len(time_part) - 6
    clock, zone = time_part[:zone_at], time_part[zone_at:]
    seconds, _dot, fraction = clock.partition(".")
    try:
        offset = datetime.timedelta(0)
        if zone not in ("Z", "z"):
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                return None
            offset = (-1 if zone[0] == "-" else 1) * datetime.timedelta(hours=hours, minutes=minutes)
        parsed = datetime.datetime.strptime(date_part + "T" + seconds, "%Y-%m-%dT%H:%M:%S")
        return parsed.replace(microsecond=int((fraction + "000000")[:6]), tzinfo=datetime.timezone(offset))
    except ValueError:
        return None


TWO_DIGITS = st.integers(0, 99).map("{:02d}".format)
TIMESTAMP_TEXTS = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}{}".format,
    st.sampled_from(["0000", "0001", "1999", "2000", "2023", "2024", "2100", "9999"]),
    TWO_DIGITS,
    TWO_DIGITS,
    st.sampled_from(["T", "t", " ", "TT"]),
    TWO_DIGITS,
    TWO_DIGITS,
    TWO_DIGITS,
    st.sampled_from(["", ".", ".5", ".123456", ".1234567891", ".0000001"]),
    st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+05:30", "-23:59", "+24:00", "+01:60", "+1:00", "+0100"]),
    st.sampled_from(["", "\n", " ", "x"]),
)


@settings(max_examples=3000)
@given(text=st.one_of(TIMESTAMP_TEXTS, st.text(max_size=40)))
def test_timestamp_parser_agrees_with_the_reference(text: str) -> None:
    parsed, expected = manifest.parse_timestamp(text), reference_timestamp(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == expected.utcoffset() and parsed.tzinfo == expected.tzinfo


@pytest.mark.parametrize(
    "text",
    ["2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "2024-01-01T00:00:60Z", "2024-01-01T24:00:00Z",
     "2024-12-31T23:59:59.9999999-23:59", "2024-01-01T00:00:00Z\n", "2024-01-01t00:00:00z"],
)  # fmt: skip
def test_timestamp_parser_edge_cases(text: str) -> None:
    assert manifest.parse_timestamp(text) == reference_timestamp(text)


@pytest.mark.parametrize("text", ['{"a": 1, "b": {"c": 2, "c": 3}}', '\ufeff{"a": 1}', '{"a": [' + "{}," * 40 + "{}]}"])
def test_loads_strict_matches_json_loads_with_hooks(text: str) -> None:
    def hook(pairs: list) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise manifest.ManifestError("duplicate_key", f"duplicate key {key!r}")
            seen[key] = value
        return seen

    try:
        expected: object = json.loads(text, object_pairs_hook=hook)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: object = manifest.loads_strict(text)
    except ValueError as exc:
        got = str(exc).removeprefix("manifest is not valid JSON: ")
    assert got == expected
