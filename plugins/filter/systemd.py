# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which of a role's systemd units are not yet as wanted, by the state the files module read
(bkfleet.backup.files, option units), so that a role starts a systemd_service task only for those."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from ansible.errors import AnsibleFilterError

# What each wanted unit file state means for the unit's ActiveState.
ACTIVE_STATES_FOR = {
    "enabled": ("active",),
    "disabled": ("inactive", "failed"),
    "masked": ("inactive", "failed"),
}


def systemd_units_to_change(units: Dict[str, Dict[str, str]], wanted: Dict[str, str]) -> List[str]:
    """The units of ``wanted`` (unit: enabled, disabled or masked) that ``units`` (each unit's UnitFileState and
    ActiveState) does not show in that state: enabled and active, or disabled (masked) and not running."""
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
        return {"systemd_units_to_change": systemd_units_to_change}
