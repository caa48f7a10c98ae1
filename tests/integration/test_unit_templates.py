"""Every bk-run unit comes from the runner role's one pair of templates (issue 17): rendered with the
unit lists the client, hub, offsite and runner roles give it, the services share one hardening block
(the system call filter included, which three of the old copies had lost), carry what differs per
unit, and pass `systemd-analyze verify` as the roles run it (no output at all)."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from support.playbooks import play
from support.tools import tool

HERE = Path(__file__).parent / "units"
SYSTEMD_ANALYZE = Path("/usr/bin/systemd-analyze")
SYSTEM_UNITS = Path("/lib/systemd/system")
# The [Service] keys a unit sets through runner_units; every other line is the shared hardening.
PER_UNIT = {
    "ExecStart",
    "Environment",
    "EnvironmentFile",
    "CacheDirectory",
    "CacheDirectoryMode",
    "ReadWritePaths",
    "ProtectHome",
    "PrivateDevices",
    "RestrictAddressFamilies",
    "CapabilityBoundingSet",
    "MemoryDenyWriteExecute",
}


def _sections(path: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = defaultdict(list)
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            sections[section].append(line)
    return sections


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("units")
    played = play(HERE / "inventory.yml", HERE / "render.yml", "-e", f"bk_out={out}")
    assert played.returncode == 0, played.stdout + played.stderr
    return out


def test_every_service_has_the_one_hardening_block(rendered: Path) -> None:
    services = sorted(rendered.glob("*/*.service"))
    assert {p.name for p in services} >= {
        "bk-flush.service",
        "bk-backup-home.service",
        "bk-check-home.service",
        "bk-backup-db.service",
        "bk-receipts.service",
        "bk-maintain.service",
        "bk-offsite-s3.service",
        "bk-offsite-usb.service",
    }
    blocks = {p: [line for line in _sections(p)["Service"] if line.split("=", 1)[0] not in PER_UNIT] for p in services}
    first = blocks[services[0]]
    assert all(block == first for block in blocks.values()), blocks
    for line in ("ProtectSystem=strict", "NoNewPrivileges=true", "SystemCallFilter=@system-service", "UMask=0077"):
        assert line in first


def test_each_unit_carries_what_its_role_gives(rendered: Path) -> None:
    home = _sections(rendered / "web1" / "bk-backup-home.service")
    assert home["Service"][:3] == [
        "Type=oneshot",
        "ExecStart=/usr/local/bin/bk-run backup home",
        "EnvironmentFile=-/etc/bk/repositories/hub.env",
    ]
    assert "EnvironmentFile=-/etc/bk/repositories/nas.env" in home["Service"]
    assert "ReadWritePaths=/var/lib/bk /var/spool/bk /var/cache/bk /var/lib/app" in home["Service"]
    assert "ProtectHome=read-only" in home["Service"] and "PrivateDevices=true" not in home["Service"]
    assert not [line for line in home["Service"] if line.startswith("CapabilityBoundingSet")]
    assert (
        "After=network-online.target postgresql.service"
        in _sections(rendered / "web1" / "bk-backup-db.service")["Unit"]
    )
    check_timer = _sections(rendered / "web1" / "bk-check-home.timer")["Timer"]
    assert check_timer == ["OnCalendar=monthly", "RandomizedDelaySec=1h", "Persistent=false"]

    receipts = _sections(rendered / "hub1" / "bk-receipts.service")
    assert "After=network-online.target bk-hub.service" in receipts["Unit"]
    assert "Wants=network-online.target bk-hub.service" in receipts["Unit"]
    assert "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE" in receipts["Service"]
    usb = _sections(rendered / "hub1" / "bk-offsite-usb.service")
    assert "ReadWritePaths=/var/lib/bk /var/spool/bk /mnt/usb /mnt/usb-old" in usb["Service"]
    assert "CacheDirectory=bk-offsite" in usb["Service"]
    assert (
        "Description=bk hub: offsite mirror to usb on schedule"
        in _sections(rendered / "hub1" / "bk-offsite-usb.timer")["Unit"]
    )
    flush = _sections(rendered / "hub1" / "bk-flush.service")
    assert "MemoryDenyWriteExecute=true" in flush["Service"]
    assert _sections(rendered / "hub1" / "bk-flush.timer")["Timer"][-1] == "Persistent=false"


def test_systemd_analyze_verify_finds_nothing_to_say(rendered: Path, tmp_path: Path) -> None:
    """As the roles run it after a change: any output fails the play."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    units = root / "etc" / "systemd" / "system"
    bin_dir = root / "usr" / "local" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "bk-run").write_text("#!/bin/sh\n")
    (bin_dir / "bk-run").chmod(0o755)
    for host in ("hub1", "web1"):
        shutil.copytree(rendered / host, units, dirs_exist_ok=True)
    verified = subprocess.run(
        [tool(SYSTEMD_ANALYZE), "verify", f"--root={root}", *sorted(str(p) for p in units.iterdir())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")
