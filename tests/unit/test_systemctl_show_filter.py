"""The systemctl_show filter on what `systemctl show --property=Id,UnitFileState,ActiveState` printed on a
converged lab hub (systemd prints the properties in its own order), and a unit it does not have."""

from __future__ import annotations

from ansible_collections.bkfleet.backup.plugins.filter.systemd import systemctl_show

OUTPUT = """Id=bk-flush.timer
ActiveState=active
UnitFileState=enabled

Id=bk-backup-gone.timer
ActiveState=inactive
UnitFileState=

Id=restic-rest-server.service
ActiveState=inactive
UnitFileState=masked
"""


def test_each_unit_is_found_by_its_id_with_its_fields() -> None:
    units = systemctl_show(OUTPUT)
    assert sorted(units) == ["bk-backup-gone.timer", "bk-flush.timer", "restic-rest-server.service"]
    assert units["bk-flush.timer"] == {"Id": "bk-flush.timer", "ActiveState": "active", "UnitFileState": "enabled"}
    assert units["bk-backup-gone.timer"]["UnitFileState"] == ""
    assert units["restic-rest-server.service"]["UnitFileState"] == "masked"


def test_no_output_gives_no_units() -> None:
    assert systemctl_show("") == {}
