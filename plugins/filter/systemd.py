# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The units of one `systemctl show --property=Id,...` run, so that a role asks systemd once for all
its units and starts a systemd_service task only for the ones not yet as wanted."""

from __future__ import annotations

from typing import Any, Callable, Dict


def systemctl_show(output: str) -> Dict[str, Dict[str, str]]:
    """Each unit's KEY=value lines (one block per unit, blocks apart by an empty line), by its Id."""
    units: Dict[str, Dict[str, str]] = {}
    for block in output.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields:
            units[fields.get("Id", "")] = fields
    return units


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"systemctl_show": systemctl_show}
