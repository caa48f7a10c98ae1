"""Routes and their delivery through Apprise.

The routes file maps a route name to its Apprise URLs and what it takes; the URLs carry tokens
and passwords, so the file must be private to its owner (0600) and no URL is ever logged whole.

    routes:
      security:
        urls: ["mailtos://user:pass@mail.example.org?to=ops@example.org"]
        severities: [security, critical]
      everything:
        urls: ["ntfys://ntfy.example.org/bk"]
        conditions: ["*"]
    healthcheck_url: https://hc-ping.com/UUID
    offsite_cadence_factor: 3          # and the other tunables of `bk-reporter notify --help`
"""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apprise
import yaml

from bk_reporter.notify.alerts import SEVERITIES


class RoutesError(ValueError):
    """The routes file is unusable; the message says what to fix."""


@dataclass(frozen=True)
class Route:
    name: str
    urls: tuple[str, ...]
    conditions: frozenset[str] = frozenset({"*"})
    severities: frozenset[str] = frozenset(SEVERITIES)

    def takes(self, condition: str, severity: str) -> bool:
        return ("*" in self.conditions or condition in self.conditions) and severity in self.severities


def mask_url(url: str) -> str:
    """scheme://*** — enough to say which service, nothing that authenticates."""
    scheme, sep, _rest = url.partition("://")
    return f"{scheme}://***" if sep else "***"


def _strings(name: str, field: str, value: Any, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RoutesError(f"route {name!r}: {field} must be a list of non-empty strings")
    return value


def parse_routes(document: Any) -> list[Route]:
    if not isinstance(document, Mapping) or not isinstance(document.get("routes"), Mapping):
        raise RoutesError("the routes file must be a mapping with a 'routes' mapping of name -> {urls, ...}")
    routes = []
    for name, body in document["routes"].items():
        if not isinstance(body, Mapping):
            raise RoutesError(f"route {name!r} must be a mapping with 'urls'")
        urls = _strings(name, "urls", body.get("urls"), [])
        if not urls:
            raise RoutesError(f"route {name!r} has no urls: add at least one Apprise URL")
        severities = _strings(name, "severities", body.get("severities"), SEVERITIES)
        unknown = sorted(set(severities) - set(SEVERITIES))
        if unknown:
            raise RoutesError(f"route {name!r}: unknown severities {unknown}; use {list(SEVERITIES)}")
        conditions = _strings(name, "conditions", body.get("conditions"), ["*"])
        routes.append(Route(str(name), tuple(urls), frozenset(conditions), frozenset(severities)))
    return routes


def load_routes(path: Path) -> list[Route]:
    return parse_routes(_private_yaml(path))


def load_healthcheck_url(path: Path) -> str | None:
    """The routes file's optional `healthcheck_url` (a secret too: whoever has it can fake the ping)."""
    value = _private_yaml(path).get("healthcheck_url")
    if value is not None and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
        raise RoutesError(f"{path}: healthcheck_url must be an http(s) URL")
    return value or None


def load_tunables(path: Path, defaults: Mapping[str, float]) -> dict[str, float]:
    """The routes file's evaluator tunables (non-negative numbers), `defaults` for those it leaves
    out; any other key but routes and healthcheck_url is refused, so that a misspelt one is seen."""
    document = _private_yaml(path)
    unknown = sorted(set(document) - set(defaults) - {"routes", "healthcheck_url"})
    if unknown:
        raise RoutesError(f"{path}: unknown keys {unknown}; known: routes, healthcheck_url, {', '.join(defaults)}")
    values = dict(defaults)
    for key in set(document) & set(defaults):
        value = document[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RoutesError(f"{path}: {key} must be a non-negative number, got {value!r}")
        values[key] = float(value)
    if values.get("interval_seconds") == 0:
        raise RoutesError(f"{path}: interval_seconds must be more than 0")
    return values


def _private_yaml(path: Path) -> Any:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RoutesError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 {path}")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RoutesError(f"{path} is not YAML: {exc}") from exc
    if not isinstance(document, Mapping):
        raise RoutesError(f"{path} must be a mapping with a 'routes' mapping")
    return document


def send(route: Route, title: str, body: str, severity: str) -> str | None:
    """Deliver to every URL of the route; None on success, else a masked reason."""
    failed = []
    for url in route.urls:
        notifier = apprise.Apprise()
        if not notifier.add(url):
            failed.append(f"{mask_url(url)}: not a URL Apprise understands")
            continue
        kind = apprise.NotifyType.FAILURE if severity != "warning" else apprise.NotifyType.WARNING
        if not notifier.notify(title=title, body=body, notify_type=kind):
            failed.append(f"{mask_url(url)}: delivery failed")
    return "; ".join(failed) or None
