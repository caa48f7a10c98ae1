"""The bkfleet.backup.reporter callback in real ansible-playbook runs against loopback reporters."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bk_evidence import manifest, sshsig
from bk_evidence.chain import Chain
from bk_evidence.spool import Spool
from support.fake_reporter import FakeReporter
from support.keys import make_key, public_line
from support.net import dropping_listener, silent_listener
from support.tools import LOCAL_PLAYBOOK

REPO = Path(__file__).resolve().parents[2]


class Controller:
    """A controller with its key, a bk host config for localhost, and a playbook."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.controller_key = make_key(root, "controller_key")
        self.host_key = make_key(root, "host_key")
        self.host_config = root / "etc"
        self.host_config.mkdir()
        host = {
            "host": "web1",
            "host_key": str(self.host_key),
            "state_dir": str(root / "host-state"),
            "spool_dir": str(root / "host-spool"),
        }
        (self.host_config / "bk.json").write_text(json.dumps(host))
        self.spool = root / "controller-spool"

    def keys(self) -> dict[str, list[str]]:
        return {"controller": [public_line(self.controller_key)], "web1": [public_line(self.host_key)]}

    def playbook(self, *, fail: bool = False, extra: list[dict] | None = None) -> Path:
        tasks: list[dict] = [
            {
                "name": "record a drill",
                "bkfleet.backup.manifest": {
                    "kind": "drill",
                    "config_dir": str(self.host_config),
                    "restore": {"files_checked": 3, "mismatches": 0},
                },
            },
            {"name": "a step that changes nothing", "ansible.builtin.debug": {"msg": "hello"}},
        ]
        if fail:
            tasks.append({"name": "a failing step", "ansible.builtin.command": "false", "changed_when": False})
        tasks.extend(extra or [])
        path = self.root / "drill.yml"
        path.write_text(
            yaml.safe_dump([{"name": "drill", "hosts": "localhost", "gather_facts": False, "tasks": tasks}])
        )
        return path

    def run(
        self, url: str | None, *, fail: bool = False, extra: list[dict] | None = None, **extra_env: str
    ) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
            "ANSIBLE_HOME": str(self.root / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
            "ANSIBLE_CALLBACKS_ENABLED": "bkfleet.backup.reporter",
            "ANSIBLE_NOCOLOR": "1",
            "BK_REPORTER_KEY": str(self.controller_key),
            "BK_REPORTER_STATE_DIR": str(self.root / "controller-state"),
            "BK_REPORTER_SPOOL_DIR": str(self.spool),
            "BK_REPORTER_TIMEOUT": "1.5",
            **extra_env,
        }
        if url:
            env["BK_REPORTER_URL"] = url
        return subprocess.run(
            [*LOCAL_PLAYBOOK, str(self.playbook(fail=fail, extra=extra))],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def waiting(self) -> list[dict]:
        return [
            json.loads(json.loads(path.read_text())["manifest"])
            for path in sorted((self.spool / "outbox").glob("*.json"))
        ]


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    return Controller(tmp_path)


def test_a_run_is_recorded_and_host_manifests_are_forwarded(controller: Controller) -> None:
    with FakeReporter(controller.keys()) as reporter:
        result = controller.run(reporter.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert reporter.requests == 1, "everything goes in one batch"
        docs = {doc["host"]: doc for doc in reporter.manifests()}
    assert set(docs) == {"controller", "web1"}
    run = docs["controller"]
    assert manifest.validate(run) == []
    assert (run["kind"], run["status"], run["seq"]) == ("ansible-run", "success", 1)
    details = run["ansible_run"]
    assert details["playbook"].endswith("drill.yml") and details["hosts"] == ["localhost"]
    assert details["counts"] == {
        "ok": 2,
        "changed": 1,
        "failed": 0,
        "unreachable": 0,
        "skipped": 0,
        "rescued": 0,
        "ignored": 0,
    }
    assert details["forwarded"] == 1 and details["check_mode"] is False
    assert docs["web1"]["kind"] == "drill"
    assert controller.waiting() == []


def test_a_failed_run_is_recorded_as_a_failure(controller: Controller) -> None:
    with FakeReporter(controller.keys()) as reporter:
        result = controller.run(reporter.url, fail=True)
        assert result.returncode == 2
        (run,) = [doc for doc in reporter.manifests() if doc["host"] == "controller"]
    assert run["status"] == "failure" and run["ansible_run"]["counts"]["failed"] == 1


@pytest.mark.parametrize("endpoint", [dropping_listener, silent_listener], ids=["dropping", "silent"])
def test_an_unreachable_reporter_spools_and_the_next_run_delivers(controller: Controller, endpoint: object) -> None:
    with endpoint() as url:  # type: ignore[operator]
        result = controller.run(url)
    assert result.returncode == 0
    assert "wait in" in result.stderr + result.stdout
    assert sorted(doc["host"] for doc in controller.waiting()) == ["controller", "web1"]
    with FakeReporter(controller.keys()) as reporter:
        assert controller.run(reporter.url).returncode == 0
        docs = reporter.manifests()
    assert sorted(doc["seq"] for doc in docs if doc["host"] == "controller") == [1, 2]
    assert len([doc for doc in docs if doc["host"] == "web1"]) == 2
    assert controller.waiting() == []


def test_problems_become_warnings_never_failures(controller: Controller) -> None:
    with FakeReporter(controller.keys()) as reporter:
        result = controller.run(reporter.url, BK_REPORTER_KEY=str(controller.root / "no-such-key"))
        assert result.returncode == 0
        assert "bkfleet.backup.reporter" in result.stderr + result.stdout
        assert [doc["host"] for doc in reporter.manifests()] == ["web1"], "host manifests are still forwarded"


def test_without_a_url_manifests_accumulate(controller: Controller) -> None:
    assert controller.run(None).returncode == 0
    assert sorted(doc["host"] for doc in controller.waiting()) == ["controller", "web1"]


def test_envelopes_set_as_a_fact_are_forwarded(controller: Controller) -> None:
    """As a playbook does with the output of `bk-run backup JOB --json`."""
    now = manifest.utc_now()
    doc = manifest.new_manifest("backup", "success", now, now, job="home")
    envelope = Chain(str(controller.root / "host-state"), "web1", Spool(str(controller.root / "elsewhere"))).append(
        doc, lambda data: sshsig.sign(data, str(controller.host_key))
    )
    printed = controller.root / "bk-run-output.json"
    printed.write_text(json.dumps({"exit_code": 0, "envelopes": [envelope]}))
    fact = {"bk_envelopes": "{{ (lookup('ansible.builtin.file', '" + str(printed) + "') | from_json).envelopes }}"}
    with FakeReporter(controller.keys()) as reporter:
        result = controller.run(reporter.url, extra=[{"ansible.builtin.set_fact": fact}])
        assert result.returncode == 0, result.stdout
        ids = {stored["id"] for stored in reporter.manifests()}
    assert doc["id"] in ids
