"""`bk-reporter audit` re-verifies everything from the raw bytes and notices what a superuser changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Protocol

import httpx
import psycopg
import pytest

from bk_reporter import cli, hosts
from support.keys import NAMESPACE, make_key
from support.reporters import LiveReporter
from support.signing_hosts import SigningHost


@pytest.fixture
def chain_of_five(
    client: httpx.Client, reporter: LiveReporter, web1: SigningHost, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    envelopes = [web1.envelope() for _n in range(5)]
    response = client.post("/api/v1/manifests/batch", json=envelopes)
    assert [item["status"] for item in response.json()] == [201] * 5
    monkeypatch.setenv("BK_REPORTER_DATABASE_URL", reporter.database.app_url)
    monkeypatch.setenv("BK_REPORTER_OWNER_DATABASE_URL", reporter.database.owner_url)
    return [json.loads(envelope["manifest"])["id"] for envelope in envelopes]


def audit(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, dict]:
    code = cli.main(["audit", "--json", *options])
    return code, json.loads(capsys.readouterr().out)


def behind_the_reporters_back(reporter: LiveReporter, statement: str, *params: object) -> None:
    """What a superuser can do with the maintenance switch on."""
    with psycopg.connect(reporter.database.owner_url) as conn, conn.transaction():
        conn.execute("SET LOCAL bk.maintenance = 'on'")
        conn.execute(statement, params)


class AuditAfter(Protocol):
    def __call__(self, statement: str, *params: object) -> list[dict[str, Any]]: ...


@pytest.fixture
def audit_after(reporter: LiveReporter, capsys: pytest.CaptureFixture[str]) -> AuditAfter:
    """Runs a statement behind the reporter's back, then the audit, which must fail; gives its problems."""

    def run(statement: str, *params: object) -> list[dict[str, Any]]:
        behind_the_reporters_back(reporter, statement, *params)
        code, report = audit(capsys)
        assert code == 1
        return report["problems"]

    return run


def test_an_untouched_store_is_intact(chain_of_five: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(capsys)
    assert (code, report["intact"], report["events"], report["hosts"], report["problems"]) == (0, True, 5, 1, [])


def test_history_signed_by_a_since_retired_key_stays_verifiable(
    chain_of_five: list[str], reporter: LiveReporter, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        conn.execute("UPDATE host_keys SET retired_at = now()")
    assert audit(capsys)[0] == 0


def test_a_rewritten_manifest_is_detected(chain_of_five: list[str], audit_after: AuditAfter) -> None:
    rewrite = "UPDATE events SET manifest = replace(manifest, '\"success\"', '\"failure\"') WHERE id = %s"
    problems = [(p["seq"], p["problem"]) for p in audit_after(rewrite, chain_of_five[2])]
    assert any(seq == 3 and "signature does not verify" in what for seq, what in problems)
    assert any(seq == 3 and "sha256 column" in what for seq, what in problems)
    assert any(seq == 4 and "broken link" in what for seq, what in problems)


def test_a_changed_column_is_detected(chain_of_five: list[str], audit_after: AuditAfter) -> None:
    problems = audit_after("UPDATE events SET status = 'failure', job = 'other' WHERE id = %s", chain_of_five[1])
    ((seq, what),) = [(p["seq"], p["problem"]) for p in problems]
    assert seq == 2 and what == "stored columns differ from the manifest text: status, job"


def test_a_deleted_manifest_in_the_middle_is_a_gap(chain_of_five: list[str], audit_after: AuditAfter) -> None:
    problems = [p["problem"] for p in audit_after("DELETE FROM events WHERE id = %s", chain_of_five[2])]
    assert "gap: seq 3..3 missing" in problems
    assert any("recorded 5 events up to seq 5" in what and "4 up to seq 5" in what for what in problems)


def test_a_deleted_newest_manifest_is_detected(chain_of_five: list[str], audit_after: AuditAfter) -> None:
    (problem,) = audit_after("DELETE FROM events WHERE id = %s", chain_of_five[4])
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
    web1: SigningHost,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    audit_after: AuditAfter,
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
    (problem,) = audit_after("UPDATE repository_sizes SET size_text = '9 TiB' WHERE repository_name = 'web2'")
    assert problem["host"] == "web1" and "repository_sizes for repository 'web2' holds '9 TiB'" in problem["problem"]
    assert "'12.000 MiB'" in problem["problem"]


def ssh_keygen_verifies(allowed_signers: Path, host: str, text: str, signature: str, scratch: Path) -> bool:
    signature_file = scratch / "manifest.sig"
    signature_file.write_text(signature)
    command = ["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", host, "-n", NAMESPACE]
    completed = subprocess.run(
        [*command, "-s", str(signature_file)],
        input=text.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    return completed.returncode == 0


def test_a_key_added_behind_the_inventorys_back_is_caught_by_the_allowed_signers_audit(
    chain_of_five: list[str],
    client: httpx.Client,
    reporter: LiveReporter,
    web1: SigningHost,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The attacker has the owner's rights: enrols a key of their own for web1 and delivers a
    # manifest it signed, continuing web1's chain; everything inside the database agrees.
    attacker = SigningHost("web1", make_key(tmp_path, "attacker"), seq=web1.seq, prev=web1.prev)
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        hosts.enroll(conn, [hosts.host_key("web1", attacker.public_line)])
    forged = attacker.envelope(status="success", job="home")
    assert client.post("/api/v1/manifests", json=forged).status_code == 201
    forged_id = json.loads(forged["manifest"])["id"]
    allowed_signers = tmp_path / "allowed_signers"
    allowed_signers.write_text(f"web1 {web1.public_line}\n")

    assert audit(capsys)[0] == 0, "the database's own keys vouch for the forgery"
    code, report = audit(capsys, "--allowed-signers", str(allowed_signers))

    assert (code, report["events"]) == (1, 6)
    assert [(p["host"], p["seq"], p["id"]) for p in report["problems"]] == [("web1", 6, forged_id)]
    assert "does not verify with any key the allowed-signers file lists" in report["problems"][0]["problem"]
    assert not ssh_keygen_verifies(allowed_signers, "web1", forged["manifest"], forged["signature"], tmp_path)
    genuine = web1.texts[0]
    assert ssh_keygen_verifies(allowed_signers, "web1", genuine, web1.sign(genuine), tmp_path)


def test_an_unreadable_or_unusable_allowed_signers_file_is_a_clear_error(
    chain_of_five: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["audit", "--allowed-signers", str(tmp_path / "absent")]) == 1
    assert "cannot read" in capsys.readouterr().err
    broken = tmp_path / "allowed_signers"
    broken.write_text("web1 ssh-ed25519 not-base64\n")
    assert cli.main(["audit", "--allowed-signers", str(broken)]) == 1
    assert "line 1" in capsys.readouterr().err


def test_a_retired_keys_new_manifests_are_refused_while_its_history_still_verifies(
    chain_of_five: list[str],
    client: httpx.Client,
    reporter: LiveReporter,
    web1: SigningHost,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with psycopg.connect(reporter.database.owner_url, autocommit=True) as conn:
        hosts.retire(conn, "web1", web1.public_line)
    # A thief with the retired key's private half signs the chain's next manifest.
    refused = client.post("/api/v1/manifests", json=web1.envelope())
    assert refused.status_code == 401, refused.text
    code, report = audit(capsys)
    assert (code, report["events"], report["problems"]) == (0, 5, [])
