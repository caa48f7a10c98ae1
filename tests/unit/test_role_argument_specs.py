"""Every role's defaults and its meta/argument_specs.yml describe the same variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_DIRS = sorted(path for path in ROLES.iterdir() if (path / "tasks" / "main.yml").is_file())


def _load(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def test_roles_exist():
    assert {role.name for role in ROLE_DIRS} >= {"restic", "runner", "client", "hub", "offsite", "reporter"}


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda role: role.name)
def test_defaults_equal_argument_spec_options(role: Path):
    defaults = _load(role / "defaults" / "main.yml")
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), (
        f"{role.name}: only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in argument_specs: {sorted(set(options) - set(defaults))}"
    )


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda role: role.name)
def test_variables_carry_the_role_prefix(role: Path):
    defaults = _load(role / "defaults" / "main.yml")
    assert all(name.startswith(f"{role.name}_") for name in defaults), sorted(defaults)


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda role: role.name)
def test_every_option_is_documented(role: Path):
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    undocumented = [name for name, spec in options.items() if not spec.get("description")]
    assert not undocumented


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda role: role.name)
def test_plain_defaults_match_the_documented_defaults(role: Path):
    """A literal default (no template) is the same in defaults/main.yml and in the spec."""
    defaults = _load(role / "defaults" / "main.yml")
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name, value in defaults.items():
        if isinstance(value, str) and ("{{" in value or value.startswith("~")):
            continue
        if "{{" in str(value):
            continue
        assert options[name].get("default") == value, name


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda role: role.name)
def test_role_has_a_readme(role: Path):
    assert (role / "README.md").is_file()
