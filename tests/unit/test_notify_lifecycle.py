"""The alert lifecycle on a clock the test controls: fire, repeat, recover, flap, silence, grouping, backlog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bk_reporter.notify.alerts import (
    Alert,
    Thresholds,
    alerts_from_rows,
    group_by_hub,
    hub_of,
    hub_space_alert,
    offsite_late_alert,
    refused_alerts,
    scrub,
    silent_key_alert,
)
from bk_reporter.notify.lifecycle import Current, Policy, Silence, Transition, decide

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(repeat_interval=timedelta(hours=24), fire_after=timedelta(minutes=5))


def failing(host: str = "web1", job: str = "home", since: datetime = T0, hub: str | None = None) -> Alert:
    return Alert(host, job, "failing", "critical", f"{host} job {job}: latest run failed", since, hub)


class Clock:
    """The lifecycle's memory (alert_current_state) kept as the store keeps it, on a clock we move."""

    def __init__(self) -> None:
        self.now = T0
        self.current: dict[tuple[str, str, str], Current] = {}
        self.log: list[Transition] = []

    def step(self, bad: list[Alert], silences: tuple[Silence, ...] = (), advance: timedelta = timedelta(minutes=1)):
        self.now += advance
        transitions = decide(self.current, bad, silences, self.now, POLICY)
        for t in transitions:
            self.current[(t.host, t.job, t.condition)] = Current(t.kind, t.severity, t.summary, t.since, self.now)
        self.log.extend(transitions)
        return [t.kind for t in transitions]


def test_fires_once_on_entering_the_bad_state_and_not_again_while_it_lasts():
    clock = Clock()
    alert = failing()
    assert clock.step([alert], advance=timedelta(minutes=6)) == ["fire"]
    assert clock.step([alert]) == []
    assert clock.step([alert], advance=timedelta(hours=1)) == []


def test_repeats_after_repeat_interval_while_still_bad():
    clock = Clock()
    alert = failing()
    clock.step([alert], advance=timedelta(minutes=6))
    assert clock.step([alert], advance=timedelta(hours=23, minutes=59)) == []
    assert clock.step([alert], advance=timedelta(minutes=1)) == ["repeat"]
    assert clock.step([alert], advance=timedelta(hours=1)) == []


def test_recovery_is_sent_when_the_condition_clears_and_a_new_failure_fires_again():
    clock = Clock()
    clock.step([failing()], advance=timedelta(minutes=6))
    assert clock.step([]) == ["recover"]
    assert clock.log[-1].summary.startswith("resolved: ")
    assert clock.step([]) == []
    later = T0 + timedelta(hours=2)
    assert clock.step([failing(since=later)], advance=timedelta(hours=3)) == ["fire"]


def test_a_flap_shorter_than_fire_after_is_never_told():
    clock = Clock()
    blip = failing(since=T0 + timedelta(minutes=1))
    assert clock.step([blip], advance=timedelta(minutes=2)) == []
    assert clock.step([], advance=timedelta(minutes=1)) == []
    assert clock.log == []


def test_silence_from_the_cli_holds_a_job_until_its_time_then_it_fires():
    clock = Clock()
    silence = (Silence("web1", "home", T0 + timedelta(days=1)),)
    assert clock.step([failing()], silence, advance=timedelta(minutes=6)) == ["silenced"]
    assert clock.step([failing()], silence, advance=timedelta(hours=1)) == []
    assert clock.step([failing()], silence, advance=timedelta(days=1)) == ["fire"]


def test_a_host_wide_silence_covers_every_job_but_never_a_security_event():
    forged = Alert("web1", "", "chain", "security", "web1: chain has 1 broken link(s)", T0)
    kinds = decide(
        {}, [failing(job="db"), forged], [Silence("web1", "", T0 + timedelta(days=3))], T0 + timedelta(hours=1), POLICY
    )
    assert {(t.job, t.condition, t.kind) for t in kinds} == {("db", "failing", "silenced"), ("", "chain", "fire")}


def test_hub_unreachable_is_one_alert_and_holds_the_per_host_alerts_it_explains():
    hub = "hub.example:8000"
    bad = group_by_hub([failing(host=f"web{n}", hub=hub, since=T0 + timedelta(minutes=n)) for n in range(12)])
    transitions = decide({}, bad, [], T0 + timedelta(hours=1), POLICY)
    told = [t for t in transitions if t.kind == "fire"]
    assert len(told) == 1
    assert told[0].condition == "hub_unreachable" and told[0].host == hub
    assert "unreachable since 2026-12-01 12:00 UTC, 12 hosts affected" in told[0].summary
    assert sorted(t.host for t in transitions if t.kind == "held") == sorted(f"web{n}" for n in range(12))


def test_one_failing_client_of_a_hub_is_told_as_itself_not_as_a_hub_outage():
    bad = group_by_hub([failing(host="web1", hub="hub:8000"), failing(host="web2", hub="other:8000")])
    assert {a.condition for a in bad} == {"failing"}


def test_reporter_down_for_a_day_then_a_backlog_arrives_fires_only_what_is_still_wrong():
    # While the reporter was down, web1 failed and recovered and web2 failed for good. The backlog
    # leaves fleet_status with web2's latest run failing since yesterday, web1 ok.
    clock = Clock()
    yesterday = T0 - timedelta(days=1)
    assert clock.step([failing(host="web2", since=yesterday)], advance=timedelta(days=1)) == ["fire"]
    assert clock.log[0].since == yesterday  # judged by the manifest's own time
    assert clock.step([failing(host="web2", since=yesterday)]) == []  # no repeat storm for the missed day


def fleet_row(**fields: object) -> dict:
    """One row of the fleet_status view as the evaluator reads it: a failing backup of web1/home."""
    row = {
        "host": "web1",
        "job": "home",
        "kind": "backup",
        "state": "failing",
        "last_finished_at": T0,
        "last_success_at": None,
        "late_at": None,
        "stale_at": None,
        "chain_missing": 0,
        "chain_breaks": 0,
        "unconfirmed_snapshots": 0,
        "enrolled_at": T0,
        "oldest_unconfirmed_at": None,
        "repository_url": None,
        "cause": None,
    }
    row.update(fields)
    return row


def test_fleet_rows_become_alerts_with_a_scrubbed_cause_and_stable_keys():
    row = fleet_row(
        repository_url="rest:https://bk:s3cret@hub.lan:8000/web1/",
        cause="Fatal: unable to open rest:https://bk:s3cret@hub.lan:8000/web1/\x1b[31m\nconnection refused",
    )
    (alert,) = alerts_from_rows([row, dict(row)])
    assert alert.key == ("web1", "home", "failing")
    assert "s3cret" not in alert.summary and "\x1b" not in alert.summary and "\n" not in alert.summary
    assert "connection refused" in alert.summary
    assert alert.hub == "hub.lan:8000"


def test_scrub_bounds_length_and_hub_of_ignores_non_rest_repositories():
    assert len(scrub("x" * 1000)) == 300
    assert hub_of("s3:https://s3.example/bucket") is None


def test_a_failing_drill_is_its_own_alert_beside_the_jobs_backup():
    base = fleet_row(cause="restore differs")
    alerts = alerts_from_rows([{**base, "kind": "backup"}, {**base, "kind": "drill"}])
    assert sorted(a.condition for a in alerts) == ["drill_failing", "failing"]
    assert next(a for a in alerts if a.condition == "drill_failing").summary.startswith("drill: web1 job home")


def test_hub_free_space_below_ten_percent_alerts_and_a_receipt_without_figures_does_not():
    low = hub_space_alert({"host": "hub", "finished_at": T0, "free": 5, "total": 100})
    assert low is not None and low.key == ("hub", "", "hub_space") and "5.0 % free" in low.summary
    assert hub_space_alert({"host": "hub", "finished_at": T0, "free": 50, "total": 100}) is None
    assert hub_space_alert({"host": "hub", "finished_at": T0, "free": None, "total": None}) is None


def test_a_host_whose_keys_signed_nothing_for_long_is_a_silent_key_alert():
    thresholds = Thresholds(silent_key_after=timedelta(days=7))
    last = T0 - timedelta(days=10)
    alert = silent_key_alert({"host": "old1", "last_signed_at": last}, T0, thresholds)
    assert alert is not None
    assert alert.key == ("old1", "", "silent_key")
    assert alert.since == last + thresholds.silent_key_after
    assert "signed nothing for 10 days" in alert.summary
    recent = {"host": "web1", "last_signed_at": T0 - thresholds.silent_key_after + timedelta(minutes=1)}
    assert silent_key_alert(recent, T0, thresholds) is None


def test_a_snapshot_not_offsite_within_its_destinations_cadence_is_offsite_late():
    thresholds = Thresholds(offsite_cadence_factor=2.0)
    cadence = 6 * 3600
    row = {"host": "web1", "job": "home", "destination": "s3", "cadence_seconds": cadence, "snapshots": 3}
    late = offsite_late_alert({**row, "oldest_arrived_at": T0 - timedelta(seconds=2 * cadence + 60)}, T0, thresholds)
    assert late is not None
    assert late.key == ("web1", "home", "offsite_late")
    assert late.since == T0 - timedelta(seconds=60)
    assert "3 snapshot(s) not at offsite s3 within 12 h" in late.summary
    within = {**row, "oldest_arrived_at": T0 - timedelta(seconds=2 * cadence - 60)}
    assert offsite_late_alert(within, T0, thresholds) is None
    no_cadence = {**row, "cadence_seconds": None, "oldest_arrived_at": T0 - timedelta(hours=47)}
    assert offsite_late_alert(no_cadence, T0, thresholds) is None


def refusal_row(host: str, code: str, client: str, count: int, first: datetime, last: datetime) -> dict:
    return {"host": host, "code": code, "client": client, "refusals": count, "first_at": first, "last_at": last}


def test_refusals_are_one_security_alert_per_claimed_host_through_a_silence_then_recover():
    rows = [
        refusal_row("web1", "unknown_key", "198.51.100.7", 3, T0, T0 + timedelta(minutes=2)),
        refusal_row("web1", "bad_signature", "198.51.100.8", 1, T0 - timedelta(minutes=1), T0),
        refusal_row("web2", "key_not_for_host", "", 1, T0, T0),
    ]
    rows += [refusal_row("db1", "unknown_key", f"203.0.113.{n}", 1, T0, T0) for n in range(1, 8)]
    db1, web1, web2 = refused_alerts(rows)  # in host order
    assert (web1.key, web1.severity, web1.since) == (("web1", "", "refused"), "security", T0 - timedelta(minutes=1))
    assert web1.summary == (
        "web1: 4 manifest(s) refused (unknown_key x3, bad_signature x1), first 2026-12-01 11:59:00 UTC,"
        " last 2026-12-01 12:02:00 UTC, from 198.51.100.7, 198.51.100.8"
    )
    assert web2.summary.endswith("from unknown address")
    assert db1.summary.endswith("from 203.0.113.1, 203.0.113.2, 203.0.113.3, 203.0.113.4, 203.0.113.5 and 2 more")
    clock = Clock()
    silence = (Silence("web1", "", T0 + timedelta(days=3)),)
    assert clock.step([web1], silence, advance=timedelta(minutes=10)) == ["fire"]
    assert clock.step([web1], silence) == []
    assert clock.step([], silence) == ["recover"]  # no refusal left in the window
