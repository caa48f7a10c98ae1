"""/metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

Fleet gauges come from the read model (readmodel.fleet) at scrape time; ingest
counters are kept in this process since it started (Prometheus handles the resets).
The alert rules in reporter/prometheus/alerts.yml use these names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import __version__
from .outcome import Outcome
from .readmodel import STATES

JOB_STATES = tuple(state for state in STATES if state != "missing")


@dataclass
class IngestCounters:
    """Manifests answered, by HTTP status and code; requests answered, by endpoint and status."""

    manifests: Counter[tuple[int, str]] = field(default_factory=Counter)
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)

    def count(self, endpoint: str, request_status: int, outcomes: Iterable[Outcome]) -> None:
        self.requests[(endpoint, request_status)] += 1
        for outcome in outcomes:
            self.manifests[(outcome.status, outcome.code)] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    inside = ",".join(f'{name}="{_escape(str(value))}"' for name, value in labels.items())
    return "{" + inside + "}"


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: str, value: float | None) -> None:
        if value is not None:
            self.lines.append(f"{name}{labels} {float(value)!r}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


JOB_GAUGES = (
    ("bk_job_last_success_timestamp_seconds", "last_success_at", "End of the last successful run (Unix time)."),
    ("bk_job_last_run_timestamp_seconds", "last_finished_at", "End of the last run, whatever its status (Unix time)."),
    ("bk_job_last_duration_seconds", "last_duration_seconds", "Duration of the last run."),
    ("bk_job_last_data_added_bytes", "last_data_added", "Data the last run added to its repository."),
    ("bk_job_cadence_seconds", "cadence_seconds", "Declared interval between runs."),
    ("bk_job_unconfirmed_snapshots", "unconfirmed_snapshots", "Claimed snapshots no hub receipt confirmed in time."),
)


def _job_families(out: _Exposition, fleet_jobs: Sequence[Mapping[str, Any]]) -> None:
    # The fleet's "missing" rows (no job, no kind) are hosts, counted by bk_host_state.
    jobs = sorted((job for job in fleet_jobs if job["kind"] is not None), key=_job_key)
    out.family("bk_job_state", "gauge", "1 for the current state of a job (host, job, kind), 0 for the others.")
    for job in jobs:
        for state in JOB_STATES:
            labels = _labels(host=job["host"], job=job["job"], kind=job["kind"], state=state)
            out.sample("bk_job_state", labels, 1 if job["state"] == state else 0)
    for name, column, help_text in JOB_GAUGES:
        out.family(name, "gauge", help_text)
        for job in jobs:
            value = job[column]
            if isinstance(value, datetime):
                value = _timestamp(value)
            out.sample(name, _labels(host=job["host"], job=job["job"], kind=job["kind"]), value)


def _job_key(job: Mapping[str, Any]) -> tuple[str, str, str]:
    return job["host"], job["job"] or "", job["kind"]


def _host_families(out: _Exposition, fleet_hosts: Sequence[Mapping[str, Any]]) -> None:
    hosts = sorted(fleet_hosts, key=lambda host: host["host"])
    out.family("bk_host_state", "gauge", "1 for the worst state among a host's jobs, 0 for the others.")
    for host in hosts:
        for state in STATES:
            out.sample("bk_host_state", _labels(host=host["host"], state=state), 1 if host["state"] == state else 0)
    out.family("bk_host_chain_missing_manifests", "gauge", "Manifests missing from a host's chain (seq gaps).")
    for host in hosts:
        out.sample("bk_host_chain_missing_manifests", _labels(host=host["host"]), host["chain_missing"])
    out.family("bk_host_chain_breaks", "gauge", "Links of a host's chain whose prev does not match.")
    for host in hosts:
        out.sample("bk_host_chain_breaks", _labels(host=host["host"]), host["chain_breaks"])


def _ingest_families(out: _Exposition, counters: IngestCounters) -> None:
    out.family("bk_ingest_manifests_total", "counter", "Manifests answered, by HTTP status and code.")
    for (status, code), count in sorted(counters.manifests.items()):
        out.sample("bk_ingest_manifests_total", _labels(status=status, code=code), count)
    out.family("bk_ingest_requests_total", "counter", "Ingest requests answered, by endpoint and HTTP status.")
    for (endpoint, status), count in sorted(counters.requests.items()):
        out.sample("bk_ingest_requests_total", _labels(endpoint=endpoint, status=status), count)


def exposition(jobs: Sequence[Mapping[str, Any]], hosts: Sequence[Mapping[str, Any]], counters: IngestCounters) -> str:
    out = _Exposition()
    out.family("bk_reporter_info", "gauge", "The reporter's version.")
    out.sample("bk_reporter_info", _labels(version=__version__), 1)
    _job_families(out, jobs)
    _host_families(out, hosts)
    _ingest_families(out, counters)
    return out.text()
