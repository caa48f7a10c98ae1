"""Times for people: absolute (ISO, UTC on the server, rewritten to the viewer's zone
by static/localtime.js) and relative ("3 h ago", "in 20 min")."""

from __future__ import annotations

from datetime import datetime, timedelta


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
        return f"{minutes} min"
    return f"{secs} s"


def relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    delta = now - moment
    return f"{age(delta)} ago" if delta.total_seconds() >= 0 else f"in {age(delta)}"


def time_tag(moment: datetime | None, now: datetime) -> str:
    """A <time> element: relative text, with the absolute time as its title and datetime."""
    if moment is None:
        return '<span class="muted">never</span>'
    iso = moment.isoformat(timespec="seconds")
    return f'<time datetime="{iso}" title="{iso}">{relative(moment, now)}</time>'
