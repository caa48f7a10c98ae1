# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``/etc/bk/bk.json``, read by bk-run, the module and the callback, and the reading of every
configuration file of ``/etc/bk`` (format: docs/runner.md)."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    """A configuration file that is missing, not JSON, or wrong."""


class Fields:
    """Typed access to one JSON object of a configuration file, with the file in every error."""

    def __init__(self, raw: Any, where: str, known: Sequence[str]) -> None:
        if not isinstance(raw, dict):
            raise ConfigError("%s: must be a JSON object" % where)
        self.raw = raw
        self.where = where
        unknown = sorted(set(raw) - set(known))
        if unknown:
            sys.stderr.write("bk: %s: ignoring unknown keys: %s\n" % (where, ", ".join(unknown)))

    def get(self, key: str, kind: Any, default: Any = None, required: bool = False) -> Any:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise ConfigError("%s: %r is required" % (self.where, key))
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise ConfigError("%s: %r has the wrong type" % (self.where, key))
        return value

    def name(self, key: str) -> str:
        value = self.get(key, str, required=True)
        if not NAME.match(value):
            raise ConfigError("%s: %r must match %s" % (self.where, key, NAME.pattern))
        return value

    def strings(self, key: str) -> List[str]:
        value = self.get(key, list, default=[])
        if not all(isinstance(item, str) for item in value):
            raise ConfigError("%s: %r must be a list of strings" % (self.where, key))
        return list(value)


def read_config_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc.strerror)) from None
    except ValueError as exc:
        raise ConfigError("%s is not valid JSON: %s" % (path, exc)) from None


class Settings:
    """``bk.json``: who this machine is, where its state lives, where manifests go."""

    KEYS = (
        "host",
        "host_key",
        "state_dir",
        "spool_dir",
        "reporter_url",
        "reporter_ca_file",
        "delivery_deadline_seconds",
        "flush_deadline_seconds",
        "restic",
        "rclone",
        "cache_dir",
    )

    def __init__(self, config_dir: str, values: Optional[Dict[str, Any]] = None) -> None:
        """Read ``<config_dir>/bk.json``, or take ``values`` (same keys) instead of the file."""
        self.config_dir = config_dir
        path = os.path.join(config_dir, "bk.json")
        fields = Fields(read_config_file(path) if values is None else values, path, self.KEYS)
        self.host: str = fields.get("host", str, required=True)
        self.host_key: Optional[str] = fields.get("host_key", str)
        self.state_dir: str = fields.get("state_dir", str, "/var/lib/bk")
        self.spool_dir: str = fields.get("spool_dir", str, "/var/spool/bk")
        self.reporter_url: Optional[str] = fields.get("reporter_url", str)
        self.reporter_ca_file: Optional[str] = fields.get("reporter_ca_file", str)
        self.delivery_deadline_seconds: float = fields.get("delivery_deadline_seconds", (int, float), 1.5)
        self.flush_deadline_seconds: float = fields.get("flush_deadline_seconds", (int, float), 10.0)
        self.restic: str = fields.get("restic", str, "restic")
        self.rclone: str = fields.get("rclone", str, "rclone")
        self.cache_dir: Optional[str] = fields.get("cache_dir", str)
