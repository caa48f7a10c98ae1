"""`bk-reporter audit` re-verifies everything from the raw bytes and notices what a superuser changed."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest
from reporter_fixtures import Host, LiveReporter

from bk_reporter import cli


@pytest.fixture
def chain_of_five(
    client: httpx.Client, reporter: LiveReporter, web1: Host, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    envelopes = [web1.envelope() for _n in range(5)]
    response = client.post("/api/v1/manifests/batch", json=envelopes)
    assert [item["status"] for item in response.json()] == [201] * 5
    monkeypatch.setenv("BK_REPORTER_DATABASE_URL", reporter.database.app_url)
    monkeypatch.setenv("BK_REPORTER_OWNER_DATABASE_URL", reporter.database.owner_url)
    return [json.loads(envelope["manifest"])["id"] for envelope in envelopes]


def audit(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = cli.main(["audit", "--json"])
    return code, json.loads(capsys.readouterr().out)


def behind_the_reporters_back(reporter: LiveReporter, statement: str, *params: object) -> None:
    """What a superuser can do with the maintenance switch on."""
    with psycopg.connect(reporter.database.owner_url) as conn, conn.transaction():
        conn.execute("SET LOCAL bk.maintenance = 'on'")
        conn.execute(statement, params)


def test_an_untouched_store_is_intact(chain_of_five: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(capsys)
    assert (code, report["intact"], report["events"], report["hosts"], report["problems"]) == (0, True, 5, 1, [])


def test_history_signed_by_a_since_retired_key_stays_verifiable(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE host_keys SET retired_at = now()")
    assert audit(capsys)[0] == 0


def test_a_rewritten_manifest_is_detected(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    behind_the_reporters_back(
        reporter,
        "UPDATE events SET manifest = replace(manifest, '\"success\"', '\"failure\"') WHERE id = %s",
        chain_of_five[2],
    )
    code, report = audit(capsys)
    assert code == 1
    problems = [(p["seq"], p["problem"]) for p in report["problems"]]
    assert any(seq == 3 and "signature does not verify" in what for seq, what in problems)
    assert any(seq == 3 and "sha256 column" in what for seq, what in problems)
    assert any(seq == 4 and "broken link" in what for seq, what in problems)


def test_a_changed_column_is_detected(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    behind_the_reporters_back(
        reporter, "UPDATE events SET status = 'failure', job = 'other' WHERE id = %s", chain_of_five[1]
    )
    code, report = audit(capsys)
    assert code == 1
    ((seq, what),) = [(p["seq"], p["problem"]) for p in report["problems"]]
    assert seq == 2 and what == "stored columns differ from the manifest text: status, job"


def test_a_deleted_manifest_in_the_middle_is_a_gap(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    behind_the_reporters_back(reporter, "DELETE FROM events WHERE id = %s", chain_of_five[2])
    code, report = audit(capsys)
    assert code == 1
    problems = [p["problem"] for p in report["problems"]]
    assert "gap: seq 3..3 missing" in problems
    assert any("recorded 5 events up to seq 5" in what and "4 up to seq 5" in what for what in problems)


def test_a_deleted_newest_manifest_is_detected(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    behind_the_reporters_back(reporter, "DELETE FROM events WHERE id = %s", chain_of_five[4])
    code, report = audit(capsys)
    assert code == 1
    (problem,) = report["problems"]
    assert "recorded 5 events up to seq 5" in problem["problem"] and "4 up to seq 4" in problem["problem"]


def test_the_human_report_names_each_break(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    behind_the_reporters_back(reporter, "UPDATE events SET signature = '' WHERE id = %s", chain_of_five[0])
    assert cli.main(["audit"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN web1 seq 1: the signature does not verify" in out
    assert out.strip().endswith("audited 5 events from 1 hosts: 1 problems")


def test_repository_sizes_are_rebuilt_from_the_prune_manifests_and_compared(
    client: httpx.Client,
    reporter: LiveReporter,
    web1: Host,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BK_REPORTER_DATABASE_URL", reporter.database.app_url)
    monkeypatch.setenv("BK_REPORTER_OWNER_DATABASE_URL", reporter.database.owner_url)
    envelopes = [
        web1.envelope(kind="prune", repository={"name": name}, prune={"remaining_size": size}, snapshot=None)
        for name, size in (("db1", "1.500 GiB"), ("web2", "12.000 MiB"), ("db1", "1.250 GiB"))
    ]
    response = client.post("/api/v1/manifests/batch", json=envelopes)
    assert [item["status"] for item in response.json()] == [201] * 3
    with psycopg.connect(reporter.database.owner_url) as conn:
        sizes = dict(conn.execute("SELECT repository_name, size_text FROM repository_sizes").fetchall())
    assert sizes == {"db1": "1.250 GiB", "web2": "12.000 MiB"}
    assert audit(capsys)[0] == 0
    behind_the_reporters_back(
        reporter, "UPDATE repository_sizes SET size_text = '9 TiB' WHERE repository_name = 'web2'"
    )
    code, report = audit(capsys)
    assert code == 1
    (problem,) = report["problems"]
    assert problem["host"] == "web1" and "repository_sizes for repository 'web2' holds '9 TiB'" in problem["problem"]
    assert "'12.000 MiB'" in problem["problem"]
