"""`bk-reporter` as an operator runs it: the embedded cluster, with and without `serve` running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bk_reporter.pgcluster import LocalCluster
from support.keys import make_key
from support.net import free_port
from support.signing_hosts import SigningHost

BK_REPORTER = str(Path(sys.executable).parent / "bk-reporter")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory the postgres user can reach when the tests run as root (unlike tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix="bk-rep-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        cluster = LocalCluster.under(path / "postgres")
        cluster.stop()
        subprocess.run(["rm", "-rf", str(path)], check=True)


def run(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BK_REPORTER_")}
    result = subprocess.run(
        [BK_REPORTER, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, env=env, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def cluster_running(data_dir: Path) -> bool:
    return LocalCluster.under(data_dir / "postgres").running


def test_commands_use_the_embedded_cluster_and_leave_it_as_they_found_it(data_dir: Path, tmp_path: Path) -> None:
    web1 = SigningHost("web1", make_key(tmp_path, "web1"))
    added = run(data_dir, "hosts", "add", "web1", "--key", web1.public_line)
    assert added.stdout.startswith("enrolled web1 ssh-ed25519 SHA256:")
    assert not cluster_running(data_dir)
    assert run(data_dir, "hosts", "add", "web1", "--key", web1.public_line).stdout.startswith("unchanged web1")
    (listed,) = json.loads(run(data_dir, "hosts", "list", "--json").stdout)
    assert (listed["host"], listed["retired_at"], listed["comment"]) == ("web1", None, web1.public_line.split()[2])
    status = json.loads(run(data_dir, "status", "--json").stdout)
    assert [(h["host"], h["state"]) for h in status["hosts"]] == [("web1", "missing")]
    assert "schema is current" in run(data_dir, "migrate").stdout
    assert run(data_dir, "audit").stdout.strip() == "audited 0 events from 0 hosts: intact"
    assert not cluster_running(data_dir)


def test_concurrent_first_starts_share_one_cluster(data_dir: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _attempt: run(data_dir, "status", check=False), range(4)))
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert all("no hosts yet" in r.stdout for r in results)
    assert not cluster_running(data_dir)


def test_every_command_works_while_serve_runs(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BK_REPORTER_")}
    serve = subprocess.Popen(
        [BK_REPORTER, "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(url, serve)
        web1 = SigningHost("web1", make_key(tmp_path, "web1"))
        run(data_dir, "hosts", "add", "web1", "--key", web1.public_line)
        assert httpx.post(f"{url}/api/v1/manifests", json=web1.envelope(), timeout=60).status_code == 201
        assert "web1  home  backup  ok" in run(data_dir, "status").stdout
        assert run(data_dir, "audit").returncode == 0
        assert cluster_running(data_dir)
    finally:
        serve.send_signal(signal.SIGTERM)
        stderr = serve.communicate(timeout=60)[1]
    assert serve.returncode == 0, stderr
    assert not cluster_running(data_dir)
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "serving" for entry in logged)


def _wait_until_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("serve did not become healthy")


def test_an_allowed_signers_file_is_imported_whole_or_not_at_all(data_dir: Path, tmp_path: Path) -> None:
    web1, db1 = make_key(tmp_path, "web1"), make_key(tmp_path, "db1", "ecdsa")
    web1_line, db1_line = (Path(f"{key}.pub").read_text().strip() for key in (web1, db1))
    good = tmp_path / "allowed_signers"
    good.write_text(
        f'# the fleet\n\nweb1,web1.example.net {web1_line}\ndb1 namespaces="bk-manifest@v1,file" {db1_line}\n'
    )
    bad = tmp_path / "bad_signers"
    bad.write_text(f"web2 {web1_line}\n*.example.net {db1_line}\nweb3 cert-authority {db1_line}\n")
    refused = run(data_dir, "hosts", "import", str(bad), check=False)
    assert refused.returncode == 1
    assert "line 2: principal patterns" in refused.stderr and "line 3: the option cert-authority" in refused.stderr
    assert json.loads(run(data_dir, "hosts", "list", "--json").stdout) == []
    imported = run(data_dir, "hosts", "import", str(good)).stdout.splitlines()
    assert [line.split()[:2] for line in imported] == [
        ["enrolled", "web1"],
        ["enrolled", "web1.example.net"],
        ["enrolled", "db1"],
    ]


def test_a_retired_key_stays_retired(data_dir: Path, tmp_path: Path) -> None:
    line = Path(f"{make_key(tmp_path, 'web1')}.pub").read_text().strip()
    run(data_dir, "hosts", "add", "web1", "--key", line)
    assert run(data_dir, "hosts", "retire", "web1", line).stdout.startswith("retired web1 SHA256:")
    again = run(data_dir, "hosts", "add", "web1", "--key", line, check=False)
    assert again.returncode == 1 and "was retired" in again.stderr
    assert "already retired" in run(data_dir, "hosts", "retire", "web1", line, check=False).stderr
    assert "retired 20" in run(data_dir, "hosts", "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hosts", "add", "web 1", "--key", "ssh-ed25519 AAAA"], "not a usable host name"),
        (["hosts", "add", "web1", "--key", "not a key"], "not an OpenSSH public key"),
        (["hosts", "retire", "web1", "SHA256:nothing"], "no key SHA256:nothing is enrolled for web1"),
    ],
)
def test_unusable_input_is_a_clear_error(args: list[str], message: str, data_dir: Path) -> None:
    result = run(data_dir, *args, check=False)
    assert result.returncode == 1 and message in result.stderr


def test_bad_settings_are_usage_errors(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "reporter.toml"
    config.write_text('listen = "nowhere"\n')
    result = run(data_dir, "status", "--config", str(config), check=False)
    assert result.returncode == 2 and "listen must be HOST:PORT" in result.stderr
