"""The reporter's wheel carries every package of its source tree (hosts install only the wheel)."""

from __future__ import annotations

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
