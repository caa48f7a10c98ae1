"""The lifecycle of an alert, as a pure function of what was decided before, what is bad now,
the silences and a clock: fire, repeat after repeat_interval, recover, damp flapping, hold what
a group alert explains, record silenced ones without telling anyone.

Flapping is damped the way Prometheus' `for:` does it: a condition fires only once it has lasted
`fire_after` by the evidence's own times, so a blip that clears before then is never told, and a
backlog that arrives late fires at most one alert per key (its latest state), not one per manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from bk_reporter.notify.alerts import HUB_UNREACHABLE, Alert, held_by_group

TOLD = frozenset({"fire", "repeat"})
BAD = frozenset({"fire", "repeat", "held", "silenced"})


@dataclass(frozen=True)
class Policy:
    repeat_interval: timedelta = timedelta(hours=24)
    fire_after: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Current:
    """The latest transition of a key (a row of alert_current_state)."""

    kind: str
    severity: str
    summary: str
    since: datetime
    decided_at: datetime


@dataclass(frozen=True)
class Silence:
    host: str
    job: str  # '' silences every job of the host
    until: datetime

    def covers(self, alert: Alert, now: datetime) -> bool:
        return now < self.until and alert.host == self.host and self.job in ("", alert.job)


@dataclass(frozen=True)
class Transition:
    host: str
    job: str
    condition: str
    kind: str
    severity: str
    summary: str
    since: datetime

    @property
    def told(self) -> bool:
        return self.kind in TOLD or self.kind == "recover"


def _silenced(alert: Alert, silences: Iterable[Silence], now: datetime) -> bool:
    # Security events are never silenced: a silence is for a host being rebuilt, not for forgeries.
    return alert.severity != "security" and any(s.covers(alert, now) for s in silences)


def _kind_for_bad(previous: Current | None, *, held: bool, silenced: bool, now: datetime, policy: Policy) -> str | None:
    if held:
        wanted = "held"
    elif silenced:
        wanted = "silenced"
    elif previous is None or previous.kind not in TOLD:
        wanted = "fire"
    elif now - previous.decided_at >= policy.repeat_interval:
        wanted = "repeat"
    else:
        return None
    if previous is not None and previous.kind == wanted and wanted in ("held", "silenced"):
        return None
    return wanted


def decide(
    current: Mapping[tuple[str, str, str], Current],
    bad: Iterable[Alert],
    silences: Iterable[Silence],
    now: datetime,
    policy: Policy = Policy(),
) -> list[Transition]:
    """The transitions to append; an empty list when nothing changed."""
    silences = list(silences)
    bad_now = [a for a in bad if now - a.since >= policy.fire_after]
    grouped_hubs = {a.host for a in bad_now if a.condition == HUB_UNREACHABLE}
    transitions: list[Transition] = []
    seen: set[tuple[str, str, str]] = set()
    for alert in sorted(bad_now, key=lambda a: a.key):
        seen.add(alert.key)
        previous = current.get(alert.key)
        kind = _kind_for_bad(
            previous,
            held=held_by_group(alert, grouped_hubs),
            silenced=_silenced(alert, silences, now),
            now=now,
            policy=policy,
        )
        if kind is not None:
            transitions.append(Transition(*alert.key, kind, alert.severity, alert.summary, alert.since))
    pending = {a.key for a in bad if a.key not in seen}
    for key, previous in sorted(current.items()):
        if key in seen or key in pending or previous.kind not in BAD:
            continue
        # Only what someone was told gets a recovery; held and silenced ones clear quietly.
        kind = "recover"
        summary = f"resolved: {previous.summary}" if previous.kind in TOLD else previous.summary
        transitions.append(Transition(*key, kind, previous.severity, summary, previous.since))
    return transitions


def should_tell(transition: Transition, previous: Current | None) -> bool:
    if transition.kind in TOLD:
        return True
    return transition.kind == "recover" and previous is not None and previous.kind in TOLD
