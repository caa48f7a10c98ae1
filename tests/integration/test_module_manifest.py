"""The bkfleet.backup.manifest module, run by ansible-playbook on localhost with the system Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bk_evidence import manifest, sshsig
from bk_evidence.chain import read_state
from support.keys import make_key, public_line
from support.playbooks import run_playbook


def save(name: str, path: Path) -> dict:
    return {"ansible.builtin.copy": {"content": "{{ " + name + " | to_json }}", "dest": str(path), "mode": "0600"}}


@pytest.fixture
def bk_host(tmp_path: Path) -> dict:
    key = make_key(tmp_path, "ecdsa256", "ecdsa256")
    config = tmp_path / "etc"
    config.mkdir()
    settings = {
        "host": "web1",
        "host_key": str(key),
        "state_dir": str(tmp_path / "state"),
        "spool_dir": str(tmp_path / "spool"),
    }
    (config / "bk.json").write_text(json.dumps(settings))
    return {"config_dir": str(config), "key": key, **settings}


def test_drill_manifest_is_signed_chained_and_spooled(tmp_path: Path, bk_host: dict) -> None:
    drill = {
        "kind": "drill",
        "job": "home",
        "config_dir": bk_host["config_dir"],
        "repository": {"name": "hub", "url": "rest:https://web1:secret@hub:8000/web1/"},
        "restore": {
            "snapshot": "0123abcd",
            "paths": ["/etc"],
            "target": "/var/tmp/drill",
            "files_checked": 12,
            "mismatches": 0,
        },
    }
    tasks = [
        {"name": "preview", "bkfleet.backup.manifest": drill, "check_mode": True, "register": "preview"},
        {"name": "drill", "bkfleet.backup.manifest": drill, "register": "recorded"},
        save("preview", tmp_path / "preview.json"),
        save("recorded", tmp_path / "recorded.json"),
    ]
    result = run_playbook(tmp_path, tasks)
    assert result.returncode == 0, result.stdout + result.stderr
    preview = json.loads((tmp_path / "preview.json").read_text())
    recorded = json.loads((tmp_path / "recorded.json").read_text())
    assert preview["changed"] and "envelope" not in preview and preview["seq"] == 1
    envelope = recorded["envelope"]
    assert sshsig.verify(envelope["manifest"].encode(), envelope["signature"], [public_line(bk_host["key"])])
    doc = json.loads(envelope["manifest"])
    assert doc == recorded["manifest"] and manifest.validate(doc) == []
    assert (doc["host"], doc["seq"], doc["prev"], doc["kind"]) == ("web1", 1, None, "drill")
    assert doc["repository"]["url"] == "rest:https://hub:8000/web1/"
    assert doc["restore"]["files_checked"] == 12 and doc["tools"]["ansible"]
    assert read_state(bk_host["state_dir"], "web1").seq == 1
    (spooled,) = (Path(bk_host["spool_dir"]) / "outbox").glob("*.json")
    assert json.loads(spooled.read_text()) == envelope


def test_invalid_manifest_fails_and_changes_nothing(tmp_path: Path, bk_host: dict) -> None:
    tasks = [
        {
            "bkfleet.backup.manifest": {
                "kind": "restore",
                "config_dir": bk_host["config_dir"],
                "restore": {"files_checked": -1},
            }
        }
    ]
    result = run_playbook(tmp_path, tasks)
    assert result.returncode != 0
    assert "$.restore.files_checked: must be at least 0" in result.stdout
    assert not Path(bk_host["state_dir"]).exists()


def test_without_bk_json_the_host_option_is_needed(tmp_path: Path) -> None:
    key = make_key(tmp_path, "ed25519")
    base = {"kind": "restore", "config_dir": str(tmp_path / "none"), "host_key": str(key)}
    state = str(tmp_path / "state")
    tasks = [
        {"bkfleet.backup.manifest": base, "ignore_errors": True, "register": "refused"},
        {"bkfleet.backup.manifest": {**base, "host": "db1", "state_dir": state, "spool_dir": str(tmp_path / "spool")}},
        save("refused", tmp_path / "refused.json"),
    ]
    result = run_playbook(tmp_path, tasks)
    assert result.returncode == 0, result.stdout
    assert "the host option is required" in json.loads((tmp_path / "refused.json").read_text())["msg"]
    assert read_state(state, "db1").seq == 1
