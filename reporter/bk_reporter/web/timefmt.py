"""Times for people: relative ("3 h ago", "in 20 min") and absolute.

Absolute times are rendered in UTC inside <time datetime="..."> elements; static/localtime.js
rewrites them (and the titles of relative ones) to the viewer's time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from markupsafe import Markup


def age(delta: timedelta) -> str:
    """A compact duration: 45 s, 12 min, 5 h 3 min, 3 d 4 h."""
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs and minutes < 10 else f"{minutes} min"
    return f"{secs} s"


def duration(seconds: float | None) -> str:
    """A run's length: 42 s, 4 min 12 s, 1 h 5 min."""
    return "—" if seconds is None else age(timedelta(seconds=seconds))


def relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    delta = now - moment
    return f"{age(delta)} ago" if delta.total_seconds() >= 0 else f"in {age(delta)}"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def absolute_text(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def time_tag(moment: datetime | None, now: datetime) -> Markup:
    """A <time> element with the relative text; its title is the absolute time."""
    if moment is None:
        return Markup('<span class="muted">never</span>')
    iso = _utc(moment).isoformat(timespec="seconds")
    return Markup('<time class="rel" datetime="{}" title="{}">{}</time>').format(
        iso, absolute_text(moment), relative(moment, now)
    )


def absolute_tag(moment: datetime | None) -> Markup:
    """A <time> element with the absolute time (UTC until localtime.js shows the viewer's zone)."""
    if moment is None:
        return Markup('<span class="muted">—</span>')
    iso = _utc(moment).isoformat(timespec="seconds")
    return Markup('<time class="abs" datetime="{}">{}</time>').format(iso, absolute_text(moment))
