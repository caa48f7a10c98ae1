"""One version string (issue 17): galaxy.yml's. The reporter (`--version`, `__version__`), the manifests'
`tools.bk` (bk_evidence's BK_VERSION, in a checkout and in a host's copy packed with galaxy.yml beside
it) and the wheel all report it, and a new version written there alone reaches every one of them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from bk_evidence.recorder import BK_VERSION
from bk_reporter import __version__
from bk_reporter.openapi import document
from support.tools import BK_REPORTER

REPO = Path(__file__).resolve().parents[2]
BUMPED = "9.8.7"


def _galaxy_version(root: Path) -> str:
    return str(yaml.safe_load((root / "galaxy.yml").read_text())["version"])


def _python(code: str, *path: Path) -> str:
    """`code` run by a Python that sees only the standard library and `path` (-S: not this venv, where
    the checkout is installed editable), as on a host; not from the checkout (its egg-info)."""
    env = {"PYTHONPATH": ":".join(str(p) for p in path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, cwd=path[0], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


REPORTS = "import bk_reporter, bk_evidence.recorder as r; print(bk_reporter.__version__, r.BK_VERSION)"


def test_the_reporter_and_the_manifests_report_galaxy_ymls_version() -> None:
    expected = _galaxy_version(REPO)
    told = subprocess.run([str(BK_REPORTER), "--version"], capture_output=True, text=True, check=True)
    assert told.stdout.strip() == f"bk-reporter {expected}"
    assert BK_VERSION == __version__ == document()["info"]["version"] == expected


@pytest.fixture
def bumped(tmp_path: Path) -> Path:
    """The parts of the collection the reporter and bk_evidence are built from, with galaxy.yml alone
    changed to a new version."""
    tree = tmp_path / "collection"
    for part in ("reporter", "plugins/module_utils", "runner/bk_run"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", tree)
    galaxy = (REPO / "galaxy.yml").read_text()
    current = _galaxy_version(REPO)
    assert f"\nversion: {current}\n" in galaxy
    (tree / "galaxy.yml").write_text(galaxy.replace(f"\nversion: {current}\n", f"\nversion: {BUMPED}\n"))
    return tree


def test_a_version_written_in_galaxy_yml_alone_is_the_wheels_the_reporters_and_the_manifests(
    bumped: Path, tmp_path: Path
) -> None:
    # A checkout: the packages as they lie in the tree (bk_evidence is plugins/module_utils).
    packages = tmp_path / "checkout"
    packages.mkdir()
    (packages / "bk_evidence").symlink_to(bumped / "plugins" / "module_utils")
    (packages / "bk_reporter").symlink_to(bumped / "reporter" / "bk_reporter")
    assert _python(REPORTS, packages) == f"{BUMPED} {BUMPED}"

    # A host: the runner role packs bk_evidence (with the collection's galaxy.yml beside it) and bk_run.
    host = tmp_path / "usr-local-lib-bk"
    shutil.copytree(bumped / "plugins" / "module_utils", host / "bk_evidence")
    shutil.copytree(bumped / "runner" / "bk_run", host / "bk_run")
    shutil.copy(bumped / "galaxy.yml", host / "bk_evidence")
    assert _python("import bk_evidence.recorder as r; print(r.BK_VERSION)", host) == BUMPED
    assert _python("from bk_run.cli import main; main(['--version'])", host) == f"bk-run {BUMPED}"

    # The wheel the reporter role builds, and the reporter installed from it (no galaxy.yml there).
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(wheels),
            str(bumped),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name.startswith(f"bk_reporter-{BUMPED}-")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"bk_reporter-{BUMPED}.dist-info/METADATA").decode()
    assert f"\nVersion: {BUMPED}\n" in metadata
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert _python(REPORTS, site) == f"{BUMPED} {BUMPED}"
