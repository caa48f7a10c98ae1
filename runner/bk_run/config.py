# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runner's own configuration files under ``/etc/bk``: jobs, hub, maintenance, offsite
(format: docs/runner.md; ``bk.json`` is bk_evidence.settings, shared with the module)."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bk_evidence.settings import NAME, ConfigError, Fields, read_config_file

from .process import Command

POLICY_COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
# What every maintained repository keeps whatever its client's policy says (docs/security.md): a
# maintenance.json without retention_floor still gets it, so lowering it takes an explicit floor.
DEFAULT_RETENTION_FLOOR: Dict[str, Any] = {"keep_within": "7d", "keep_last": 3}
DEFAULT_LOCK_TIMEOUT_SECONDS = 6 * 3600


def commands(fields: Fields, key: str) -> List[Command]:
    """Hook commands: strings (run by /bin/sh) or non-empty argv lists."""
    value = fields.get(key, list, default=[])
    for command in value:
        is_argv = isinstance(command, list) and command and all(isinstance(arg, str) for arg in command)
        if not (isinstance(command, str) and command.strip()) and not is_argv:
            raise ConfigError("%s: %r must hold strings or non-empty lists of strings" % (fields.where, key))
    return list(value)


def named_config(config_dir: str, folder: str, name: str, keys: Sequence[str], what: str) -> Fields:
    """The fields of ``<config_dir>/<folder>/<name>.json``, whose own ``name`` must be ``name``."""
    if not NAME.match(name):
        raise ConfigError("%s %r must match %s" % (what, name, NAME.pattern))
    path = os.path.join(config_dir, folder, name + ".json")
    fields = Fields(read_config_file(path), path, keys)
    if fields.name("name") != name:
        raise ConfigError("%s: name %r does not match the file name" % (path, fields.raw.get("name")))
    return fields


class Repository:
    """A restic repository: a label and the files holding its location and password."""

    def __init__(self, fields: Fields) -> None:
        self.name = fields.name("name")
        self.repository_file: str = fields.get("repository_file", str, required=True)
        self.password_file: str = fields.get("password_file", str, required=True)
        # The hub that serves this repository, named in manifests so that only its receipts count.
        self.hub: Optional[str] = fields.get("hub", str)

    def location(self) -> str:
        """The repository URL, credentials included (never record it as is)."""
        with open(self.repository_file, encoding="utf-8") as handle:
            return handle.read().strip()

    def secrets(self) -> List[str]:
        """Strings that must never appear in a manifest: the password and the full location."""
        found = []
        for path in (self.password_file, self.repository_file):
            try:
                with open(path, encoding="utf-8") as handle:
                    found.append(handle.read().strip())
            except OSError:
                continue
        return found


DUMP_TYPES: Dict[str, Tuple[List[str], Optional[str], str]] = {
    "postgresql": (["pg_dump", "--format=custom"], "postgres", ".pgdump"),
    "mysql": (["mysqldump", "--single-transaction", "--routines", "--events", "--databases"], None, ".sql"),
}


class Dump:
    """A database dump streamed into ``restic backup --stdin``."""

    def __init__(self, fields: Fields) -> None:
        self.type: str = fields.get("type", str, required=True)
        if self.type not in DUMP_TYPES:
            raise ConfigError("%s: dump type must be one of %s" % (fields.where, ", ".join(DUMP_TYPES)))
        self.database: str = fields.get("database", str, required=True)
        base, default_user, suffix = DUMP_TYPES[self.type]
        self.user: Optional[str] = fields.get("user", str, default_user)
        self.filename: str = fields.get("filename", str, self.database + suffix)
        command = fields.raw.get("command")
        if command is not None and not (isinstance(command, (str, list)) and command):
            raise ConfigError("%s: dump command must be a string or a list" % fields.where)
        self.command: Command = command if command is not None else self._default_command(base)

    def _default_command(self, base: List[str]) -> List[str]:
        argv = [*base, self.database]
        return ["runuser", "-u", self.user, "--", *argv] if self.user else argv


class Job:
    """``jobs/<name>.json``: what one backup job backs up, to where, how often."""

    KEYS = (
        "name",
        "paths",
        "exclude",
        "exclude_file",
        "exclude_if_present",
        "one_file_system",
        "exclude_caches",
        "tags",
        "cadence_seconds",
        "pre",
        "post",
        "dump",
        "compression",
        "limit_upload",
        "limit_download",
        "skip_if_unchanged",
        "repositories",
        "check",
    )

    def __init__(self, config_dir: str, name: str) -> None:
        fields = named_config(config_dir, "jobs", name, self.KEYS, "job name")
        path = fields.where
        self.name = name
        self.paths = fields.strings("paths")
        self.exclude = fields.strings("exclude")
        self.exclude_file: Optional[str] = fields.get("exclude_file", str)
        self.exclude_if_present = fields.strings("exclude_if_present")
        self.one_file_system: bool = fields.get("one_file_system", bool, False)
        self.exclude_caches: bool = fields.get("exclude_caches", bool, False)
        self.tags = fields.strings("tags")
        self.cadence_seconds: int = fields.get("cadence_seconds", int, required=True)
        self.pre = commands(fields, "pre")
        self.post = commands(fields, "post")
        dump = fields.get("dump", dict)
        self.dump = (
            Dump(Fields(dump, path + ": dump", ["type", "database", "user", "command", "filename"])) if dump else None
        )
        self.compression: Optional[str] = fields.get("compression", str)
        self.limit_upload: Optional[int] = fields.get("limit_upload", int)
        self.limit_download: Optional[int] = fields.get("limit_download", int)
        self.skip_if_unchanged: bool = fields.get("skip_if_unchanged", bool, False)
        repositories = fields.get("repositories", list, required=True)
        self.repositories = [_repository(item, path) for item in repositories]
        check = Fields(fields.get("check", dict, {}), path + ": check", ["read_data_subset"])
        self.read_data_subset: Optional[str] = check.get("read_data_subset", str)
        self._check_consistency(path)

    def secrets(self) -> List[str]:
        """The secrets of every repository of the job (any of them may show up in any output)."""
        return [secret for repository in self.repositories for secret in repository.secrets()]

    def _check_consistency(self, path: str) -> None:
        if not self.repositories:
            raise ConfigError("%s: at least one repository is required" % path)
        if self.dump and self.paths:
            raise ConfigError("%s: a dump job backs up the dump stream only; remove 'paths'" % path)
        if not self.dump and not self.paths:
            raise ConfigError("%s: 'paths' is required (or 'dump')" % path)
        if self.cadence_seconds < 1:
            raise ConfigError("%s: cadence_seconds must be positive" % path)
        names = [repository.name for repository in self.repositories]
        if len(set(names)) != len(names):
            raise ConfigError("%s: repository names must be unique" % path)


def _repository(raw: Any, where: str) -> Repository:
    return Repository(Fields(raw, where + ": repository", ["name", "repository_file", "password_file"]))


def _optional_names(fields: Fields, key: str) -> Optional[List[str]]:
    """A list of repository names, or None (meaning: all of them) when absent or null."""
    return fields.strings(key) if fields.raw.get(key) is not None else None


class Hub:
    """``hub.json``: where the REST server keeps the repositories it receives."""

    def __init__(self, config_dir: str) -> None:
        path = os.path.join(config_dir, "hub.json")
        fields = Fields(read_config_file(path), path, ["data_dir", "repositories"])
        self.data_dir: str = fields.get("data_dir", str, required=True)
        self.repositories: Optional[List[str]] = _optional_names(fields, "repositories")


class MaintainedRepository(Repository):
    """One repository of ``maintenance.json``: retention policy and prune settings."""

    KEYS = ("name", "repository_file", "password_file", "policy", "group_by", "prune", "max_unused", "cadence_seconds")

    def __init__(self, fields: Fields) -> None:
        super().__init__(fields)
        policy = Fields(
            fields.get("policy", dict, required=True),
            fields.where + ": policy",
            [*POLICY_COUNTS, "keep_within", "keep_tags"],
        )
        self.policy = _policy(policy)
        self.group_by: str = fields.get("group_by", str, "host,paths")
        self.prune: bool = fields.get("prune", bool, True)
        self.max_unused: str = fields.get("max_unused", str, "5%")
        self.cadence_seconds: Optional[int] = fields.get("cadence_seconds", int)
        # Maintenance gives every repository the floor of its file.
        self.retention_floor: Dict[str, Any] = dict(DEFAULT_RETENTION_FLOOR)


RESTIC_DURATION = re.compile(r"^(?:[0-9]+[ymdh])+$")
# restic counts calendar years, months and days; an approximation orders two durations well enough.
DURATION_HOURS = {"y": 8766, "m": 730, "d": 24, "h": 1}


def duration_hours(duration: str) -> int:
    """Approximate hours of a restic --keep-within duration such as ``7d`` or ``1y6m``."""
    return sum(int(amount) * DURATION_HOURS[unit] for amount, unit in re.findall(r"([0-9]+)([ymdh])", duration))


def _policy(fields: Fields, may_keep_nothing: bool = False) -> Dict[str, Any]:
    policy: Dict[str, Any] = {}
    for key in POLICY_COUNTS:
        value = fields.get(key, int)
        if value is not None:
            if value < 0:
                raise ConfigError("%s: %s must not be negative" % (fields.where, key))
            policy[key] = value
    if fields.get("keep_within", str):
        policy["keep_within"] = fields.get("keep_within", str)
        if not RESTIC_DURATION.match(policy["keep_within"]):
            raise ConfigError(
                "%s: keep_within %r is not a restic duration (digits and y, m, d, h: 7d, 1y6m)"
                % (fields.where, policy["keep_within"])
            )
    if fields.strings("keep_tags"):
        policy["keep_tags"] = fields.strings("keep_tags")
    if (
        not may_keep_nothing
        and not any(policy.get(key) for key in POLICY_COUNTS)
        and not policy.get("keep_within")
        and not policy.get("keep_tags")
    ):
        raise ConfigError("%s: the policy keeps nothing; refusing to forget every snapshot" % fields.where)
    return policy


def _name_of(item: Any) -> str:
    """A repository's name for an error message, before the name itself is checked."""
    return str(item.get("name", "?")) if isinstance(item, dict) else "?"


class Maintenance:
    """``maintenance.json``: retention for the repositories this identity maintains."""

    def __init__(self, config_dir: str, state_dir: str, path: Optional[str] = None) -> None:
        path = path or os.path.join(config_dir, "maintenance.json")
        fields = Fields(
            read_config_file(path), path, ["lock_dir", "lock_timeout_seconds", "repositories", "retention_floor"]
        )
        floor = fields.get("retention_floor", dict, DEFAULT_RETENTION_FLOOR)
        self.retention_floor = _policy(
            Fields(floor, path + ": retention_floor", [*POLICY_COUNTS, "keep_within", "keep_tags"]),
            may_keep_nothing=True,
        )
        self.lock_dir: str = fields.get("lock_dir", str, os.path.join(state_dir, "locks"))
        self.lock_timeout_seconds: float = fields.get(
            "lock_timeout_seconds", (int, float), DEFAULT_LOCK_TIMEOUT_SECONDS
        )
        items = fields.get("repositories", list, required=True)
        self.repositories = [
            MaintainedRepository(Fields(item, "%s: repository %s" % (path, _name_of(item)), MaintainedRepository.KEYS))
            for item in items
        ]
        for repository in self.repositories:
            repository.retention_floor = self.retention_floor


class Offsite:
    """``offsite/<destination>.json``: an rclone destination for the hub's repositories."""

    KEYS = (
        "name",
        "source_dir",
        "remote",
        "rclone_config",
        "mode",
        "backup_dir",
        "max_delete",
        "repositories",
        "bandwidth_limit",
        "extra_args",
        "lock_dir",
        "lock_timeout_seconds",
        "cadence_seconds",
    )

    def __init__(self, config_dir: str, state_dir: str, destination: str) -> None:
        fields = named_config(config_dir, "offsite", destination, self.KEYS, "destination")
        path = fields.where
        self.name = destination
        self.source_dir: str = fields.get("source_dir", str, required=True)
        self.remote: str = fields.get("remote", str, required=True)
        self.rclone_config: Optional[str] = fields.get("rclone_config", str)
        self.mode: str = fields.get("mode", str, "copy")
        self.backup_dir: Optional[str] = fields.get("backup_dir", str)
        self.max_delete: Optional[int] = fields.get("max_delete", int)
        self.repositories: Optional[List[str]] = _optional_names(fields, "repositories")
        self.bandwidth_limit: Optional[str] = fields.get("bandwidth_limit", str)
        self.extra_args = fields.strings("extra_args")
        self.lock_dir: str = fields.get("lock_dir", str, os.path.join(state_dir, "locks"))
        self.lock_timeout_seconds: float = fields.get(
            "lock_timeout_seconds", (int, float), DEFAULT_LOCK_TIMEOUT_SECONDS
        )
        self.cadence_seconds: Optional[int] = fields.get("cadence_seconds", int)
        self._check_mode(path)

    def _check_mode(self, path: str) -> None:
        if self.mode not in ("copy", "mirror"):
            raise ConfigError("%s: mode must be 'copy' or 'mirror'" % path)
        if self.mode == "mirror" and (not self.backup_dir or self.max_delete is None):
            raise ConfigError("%s: mirror mode needs backup_dir and max_delete (the delete guard)" % path)
