"""What the reporter shows outside: /metrics, the alert rules, the OpenAPI document, `status`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources

import yaml
from openapi_spec_validator import validate

from bk_reporter import openapi
from bk_reporter.cli import status_table
from bk_reporter.fleet import fleet_document
from bk_reporter.metrics import IngestCounters, exposition
from bk_reporter.outcome import Outcome

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
JOB = {
    "host": 'we"b\\1',
    "job": "home",
    "kind": "backup",
    "state": "late",
    "last_status": "success",
    "last_event_id": "00000000-0000-0000-0000-000000000001",
    "last_started_at": datetime(2026, 6, 1, 9, 0, tzinfo=UTC),
    "last_finished_at": datetime(2026, 6, 1, 9, 30, tzinfo=UTC),
    "last_duration_seconds": 1800.0,
    "last_data_added": 2048,
    "last_snapshot_id": "ab" * 32,
    "cadence_seconds": 3600,
    "last_success_at": datetime(2026, 6, 1, 9, 30, tzinfo=UTC),
    "late_at": datetime(2026, 6, 1, 11, 0, tzinfo=UTC),
    "stale_at": datetime(2026, 6, 1, 11, 30, tzinfo=UTC),
    "runs": 5,
    "failures": 1,
    "unconfirmed_snapshots": 0,
}
HOST = {"host": JOB["host"], "state": "late", "chain_missing": 2, "chain_breaks": 0}


def test_metrics_are_valid_text_exposition() -> None:
    counters = IngestCounters()
    counters.count("batch", 200, [Outcome(201, "stored", "stored"), Outcome(401, "unknown_key", "no")])
    text = exposition([JOB], [HOST], counters)
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\["\\n])*",?)*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'bk_job_state{host="we\\"b\\\\1",job="home",kind="backup",state="late"} 1.0' in text
    assert 'bk_job_last_success_timestamp_seconds{host="we\\"b\\\\1",job="home",kind="backup"} 1780306200.0' in text
    assert 'bk_host_chain_missing_manifests{host="we\\"b\\\\1"} 2.0' in text
    assert 'bk_ingest_manifests_total{status="401",code="unknown_key"} 1.0' in text
    assert 'bk_ingest_requests_total{endpoint="batch",status="200"} 1.0' in text
    families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)
    assert len(families) == len({name for name, _kind in families})


def test_every_alert_uses_a_metric_the_reporter_exposes() -> None:
    rules = yaml.safe_load((resources.files("bk_reporter") / "prometheus" / "alerts.yml").read_text())
    (group,) = rules["groups"]
    exposed = set(re.findall(r"^# TYPE (\S+)", exposition([JOB], [HOST], IngestCounters()), re.MULTILINE))
    names = {rule["alert"] for rule in group["rules"]}
    assert {"BkBackupStale", "BkJobFailing", "BkHostMissing", "BkChainGap"} <= names
    for rule in group["rules"]:
        used = set(re.findall(r"\b(bk_[a-z_]+)", rule["expr"]))
        assert used and used <= exposed, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/api/v1/manifests", "/api/v1/manifests/batch", "/api/v1/hosts", "/api/v1/events"}


def test_status_prints_worst_first_with_ages() -> None:
    missing = {"host": "db1", "state": "missing", "active_keys": 1, "events": None, "last_seq": None,
               "chain_missing": None, "chain_breaks": None, "last_received_at": None}  # fmt: skip
    late = {**HOST, "active_keys": 1, "events": 3, "last_seq": 5, "last_received_at": NOW}
    missing_row = dict.fromkeys(JOB, None) | {"host": "db1", "state": "missing"}
    document = fleet_document([missing, late], [missing_row, JOB], NOW)
    table = status_table(document).splitlines()
    assert table[0].split() == ["HOST", "JOB", "KIND", "STATE", "LAST", "SUCCESS", "AGO", "LAST", "RUN", "CHAIN"]
    assert table[1].split()[:4] == ["db1", "-", "-", "missing"]
    assert table[2].split()[:7] == [JOB["host"], "home", "backup", "late", "2026-06-01T09:30:00Z", "2h30m", "success"]
    assert "seq 5, 2 missing, 0 breaks" in table[2]
    assert table[-1] == "1 missing, 1 late (as of 2026-06-01T12:00:00Z)"
