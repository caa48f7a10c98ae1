# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The units of one `systemctl show --property=Id,UnitFileState,ActiveState` run, so that a role asks
systemd once for all its units and starts a systemd_service task only for the ones not yet as wanted."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from ansible.errors import AnsibleFilterError


def systemctl_show(output: str) -> Dict[str, Dict[str, str]]:
    """Each unit's KEY=value lines (one block per unit, blocks apart by an empty line), by its Id."""
    units: Dict[str, Dict[str, str]] = {}
    for block in output.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields:
            units[fields.get("Id", "")] = fields
    return units


# What each wanted unit file state means for the unit's ActiveState.
ACTIVE_STATES_FOR = {
    "enabled": ("active",),
    "disabled": ("inactive", "failed"),
    "masked": ("inactive", "failed"),
}


def systemd_units_to_change(output: str, wanted: Dict[str, str]) -> List[str]:
    """The units of ``wanted`` (unit: enabled, disabled or masked) that systemd, as ``output`` shows it,
    does not hold in that state: enabled and active, or disabled (masked) and not running."""
    units = systemctl_show(output)
    to_change = []
    for unit, state in wanted.items():
        if state not in ACTIVE_STATES_FOR:
            raise AnsibleFilterError(f"systemd_units_to_change: {unit}: {state!r} is not enabled, disabled or masked")
        found = units.get(unit, {})
        if found.get("UnitFileState") != state or found.get("ActiveState") not in ACTIVE_STATES_FOR[state]:
            to_change.append(unit)
    return to_change


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"systemctl_show": systemctl_show, "systemd_units_to_change": systemd_units_to_change}
