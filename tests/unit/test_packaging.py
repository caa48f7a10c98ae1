"""The reporter's wheel carries every package of its source tree (hosts install only the wheel)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_reporter_package_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    source = REPO / "reporter"
    packages = {
        ".".join(init.parent.relative_to(source).parts) for init in (source / "bk_reporter").rglob("__init__.py")
    }
    assert packages <= set(setuptools["packages"]), (
        f"add to [tool.setuptools] packages: {packages - set(setuptools['packages'])}"
    )
    for package in packages:
        assert setuptools["package-dir"][package] == str(Path("reporter", *package.split(".")))


# Installed for the tests only (requirements/dev.txt), never on a reporter host.
TEST_ONLY_MODULES = ("httpx", "pytest", "hypothesis", "aiosmtpd", "playwright", "moto", "schemathesis")


def test_the_reporter_imports_without_the_test_only_packages() -> None:
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in TEST_ONLY_MODULES)
    code = f"import sys; {blocked}; import bk_reporter.cli, bk_reporter.app, bk_reporter.notify.evaluator"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_reporter_and_the_shared_code_import_without_the_runner() -> None:
    """bk_run is the hosts' alone: the reporter and every bk_evidence module work without it."""
    shared = sorted(path.stem for path in (REPO / "plugins" / "module_utils").glob("*.py") if path.stem != "__init__")
    imports = ", ".join(f"bk_evidence.{name}" for name in shared)
    code = f"import sys; sys.modules['bk_run'] = None; import bk_reporter.cli, bk_reporter.app, {imports}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not [path for path in setuptools["package-dir"].values() if path.startswith("runner")]
