"""A client host for bk-run in a temporary directory: its key, restic repository and configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.fake_reporter import FakeReporter
from support.keys import make_key, public_line
from support.tools import RESTIC

PASSWORD = "correct horse battery staple 42"


def initialized_repository(root: Path, restic: str = RESTIC) -> Path:
    """An empty repository made by ``restic init`` of that restic under ``root`` (it costs seconds:
    copy it per test)."""
    (root / "password").write_text(PASSWORD + "\n")
    env = dict(os.environ, RESTIC_PASSWORD_FILE=str(root / "password"))
    subprocess.run([restic, "init", "-q", "-r", str(root / "repo")], env=env, check=True)
    return root / "repo"


class RunnerHost:
    """A client host in a temporary directory: key, restic repository, bk configuration; ``restic``
    is the binary bk-run is configured with (and the tests' own restic calls use)."""

    name = "web1"  # the host bk-run signs its manifests as

    def __init__(self, root: Path, template: Path, restic: str = RESTIC) -> None:
        self.root = root
        self.restic_binary = restic
        self.key = make_key(root, "ssh_host_ed25519_key")
        self.data = root / "data"
        self.data.mkdir()
        for index in range(20):
            (self.data / f"file{index}").write_bytes(os.urandom(2000 + index))
        self.config = root / "etc"
        (self.config / "jobs").mkdir(parents=True)
        self.password_file = root / "repo.password"
        self.password_file.write_text(PASSWORD + "\n")
        self.repository = root / "repo"
        shutil.copytree(template, self.repository)
        self.restic_log = root / "restic-stdout.log"
        self.wrapper = root / "restic-tee"
        self.wrapper.write_text(
            "#!/bin/bash\n"
            f'if [ "$1" = backup ]; then {restic} "$@" | tee -a {self.restic_log}; exit "${{PIPESTATUS[0]}}"; fi\n'
            f'exec {restic} "$@"\n'
        )
        self.wrapper.chmod(0o755)
        self.settings(reporter_url=None)
        self.job()

    def restic(self, *args: str, repository: Path | None = None) -> str:
        env = dict(os.environ, RESTIC_PASSWORD_FILE=str(self.password_file), RESTIC_CACHE_DIR=str(self.root / "cache"))
        command = [self.restic_binary, "-r", str(repository or self.repository), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout

    def repository_entry(self, name: str = "local", repository: Path | None = None) -> dict:
        location = self.root / f"{name}.repository"
        location.write_text(f"{repository or self.repository}\n")
        location.chmod(0o600)
        return {"name": name, "repository_file": str(location), "password_file": str(self.password_file)}

    def settings(self, **changes: object) -> None:
        config = {
            "host": self.name,
            "host_key": str(self.key),
            "state_dir": str(self.root / "state"),
            "spool_dir": str(self.root / "spool"),
            "reporter_url": None,
            "restic": str(self.wrapper),
            "cache_dir": str(self.root / "cache"),
        }
        config.update(changes)
        (self.config / "bk.json").write_text(json.dumps(config))

    @contextmanager
    def fake_reporter(self) -> Iterator[FakeReporter]:
        """A fake reporter that knows this host's key, with bk.json pointing bk-run at it."""
        with FakeReporter({self.name: [public_line(self.key)]}) as server:
            self.settings(reporter_url=server.url)
            yield server

    def job(self, name: str = "home", **changes: object) -> None:
        job = {
            "name": name,
            "paths": [str(self.data)],
            "tags": ["daily"],
            "cadence_seconds": 3600,
            "repositories": [self.repository_entry()],
        }
        job.update(changes)
        (self.config / "jobs" / f"{name}.json").write_text(json.dumps(job))

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bk_run", "--config", str(self.config), *args]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """bk-run with these arguments, in this process's environment plus ``env``."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
        return subprocess.run(self.command(*args), env=env, capture_output=True, text=True, timeout=300, check=False)

    def outbox(self) -> list[dict]:
        outbox = self.root / "spool" / "outbox"
        return [json.loads(json.loads(path.read_text())["manifest"]) for path in sorted(outbox.glob("*.json"))]

    def restic_summaries(self) -> list[dict]:
        lines = self.restic_log.read_text().splitlines()
        return [json.loads(line) for line in lines if '"message_type":"summary"' in line]


def fake_reporter_fixture(host_fixture: str) -> object:
    """A `reporter` fixture: the fake reporter of the RunnerHost that the fixture named `host_fixture` gives."""

    @pytest.fixture(name="reporter")
    def reporter(request: pytest.FixtureRequest) -> Iterator[FakeReporter]:
        host: RunnerHost = request.getfixturevalue(host_fixture)
        with host.fake_reporter() as server:
            yield server

    return reporter
