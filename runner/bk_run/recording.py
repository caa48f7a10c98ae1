# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every bk-run command, client or hub, needs to turn its work into a signed manifest: the
tools and repository sections, restic's environment, and recording an outcome."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bk_evidence.files import JsonTable
from bk_evidence.manifest import new_manifest
from bk_evidence.recorder import BK_VERSION, Recorder
from bk_evidence.restic_output import strip_url_credentials
from bk_evidence.settings import Settings

from .config import Repository
from .outcome import Outcome
from .process import Completed, child_environment, run, version_of

RESTIC_VARIABLES = (
    "RESTIC_REPOSITORY",
    "RESTIC_REPOSITORY_FILE",
    "RESTIC_PASSWORD",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
)
RESTIC_QUERY_TIMEOUT_SECONDS = 600
Envelopes = List[Dict[str, str]]


def restic_environment(settings: Settings, repository: Repository) -> Dict[str, str]:
    """restic's environment: location and password from files, never from argv."""
    extra = {
        "RESTIC_REPOSITORY_FILE": repository.repository_file,
        "RESTIC_PASSWORD_FILE": repository.password_file,
    }
    if settings.cache_dir:
        extra["RESTIC_CACHE_DIR"] = settings.cache_dir
    return child_environment(extra, drop=RESTIC_VARIABLES)


def tools(settings: Settings) -> Dict[str, str]:
    found = {"restic": restic_version(settings), "bk": BK_VERSION, "python": platform.python_version()}
    return {name: version for name, version in found.items() if version}


def restic_version(settings: Settings) -> Optional[str]:
    """The version of the configured restic (``0.18.0``), None if it cannot run."""
    return ResticVersions(settings.state_dir).lookup(settings.restic)


class ResticVersions:
    """restic versions by binary, asked with ``restic version`` once per binary file: a file
    whose inode, size or modification time changed (an upgrade) is asked again."""

    def __init__(self, state_dir: str) -> None:
        self.table = JsonTable(state_dir, "restic-versions")

    def lookup(self, binary: str) -> Optional[str]:
        path = shutil.which(binary)
        if path is None:
            return None
        try:
            stat = os.stat(path)
            stamp = "%d %d %d" % (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            known = self.table.read().get(path)
        except OSError:
            return version_of(binary)
        if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("version"), str):
            return known["version"]
        version = version_of(path)
        if version:
            try:
                self.table.update(path, {"stamp": stamp, "version": version})
            except (OSError, ValueError) as exc:  # only costs the next run one `restic version`
                sys.stderr.write("bk: cannot remember the version of %s: %s\n" % (path, exc))
        return version


def repository_section(settings: Settings, repository: Repository) -> Dict[str, Any]:
    """``{name, url, id, hub}``: the location without credentials, restic's repository id, its hub."""
    section: Dict[str, Any] = {"name": repository.name}
    if repository.hub:
        section["hub"] = repository.hub
    try:
        section["url"] = strip_url_credentials(repository.location())
    except OSError:
        return section
    repository_id = RepositoryIds(settings.state_dir).lookup(settings, repository, section["url"])
    if repository_id:
        section["id"] = repository_id
    return section


class RepositoryIds:
    """restic repository ids by location, read once with ``restic cat config``."""

    def __init__(self, state_dir: str) -> None:
        self.table = JsonTable(state_dir, "repositories")

    def known(self, url: str) -> Optional[str]:
        """The id already on file, without asking restic."""
        value = self.table.read().get(url)
        return value if isinstance(value, str) else None

    def forget(self, url: str) -> None:
        """Have the id read again next time (an unwritable state file only costs that)."""
        try:
            self.table.update(url, None)
        except (OSError, ValueError) as exc:
            sys.stderr.write("bk: cannot forget the repository id of %s: %s\n" % (url, exc))

    def lookup(self, settings: Settings, repository: Repository, url: str) -> Optional[str]:
        known = self.known(url)
        if known:
            return known
        completed = run(
            [settings.restic, "cat", "config", "--json", "--no-lock"],
            env=restic_environment(settings, repository),
            timeout=RESTIC_QUERY_TIMEOUT_SECONDS,
        )
        try:
            repository_id = read_config_id(completed)
        except ValueError:
            return None
        self.table.update(url, repository_id)
        return repository_id


def read_config_id(completed: Completed) -> str:
    if completed.exit_code != 0:
        raise ValueError("restic cat config failed")
    value = json.loads(completed.stdout)
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        raise ValueError("restic cat config printed no id")
    return value["id"]


def record(
    recorder: Recorder, kind: str, outcome: Outcome, sections: Dict[str, Any], secrets: List[str]
) -> Optional[Dict[str, str]]:
    """Sign and spool the manifest of an outcome; None (and a loud message) when that fails."""
    try:
        doc = new_manifest(
            kind,
            outcome.status,
            outcome.started_at,
            outcome.finished_at,
            error=outcome.error_section(secrets),
            **sections,
            **outcome.sections,
        )
        return recorder.record(doc)
    except Exception as exc:  # the work is done; losing its evidence must not change its exit status
        sys.stderr.write("bk: could not record a %s manifest: %s\n" % (kind, exc))
        return None


def record_each_repository(
    recorder: Recorder,
    kind: str,
    outcomes: Sequence[Tuple[Repository, Outcome]],
    *,
    settings: Settings,
    common: Dict[str, Any],
    secrets: List[str],
) -> Envelopes:
    """One manifest per repository's outcome, in order; one that could not be recorded is left out."""
    envelopes: Envelopes = []
    for repository, outcome in outcomes:
        try:
            section = repository_section(settings, repository)
        except Exception as exc:  # an unreadable state file must not cost the manifest
            sys.stderr.write("bk: cannot describe repository %s fully: %s\n" % (repository.name, exc))
            section = {"name": repository.name}
        envelope = record(recorder, kind, outcome, dict(common, repository=section), secrets)
        if envelope:
            envelopes.append(envelope)
    return envelopes
