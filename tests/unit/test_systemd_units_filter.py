"""The files module's reading of `systemctl show --property=Id,UnitFileState,ActiveState`, on what it printed on a
converged lab hub (systemd prints the properties in its own order) with a unit it does not have, and the
systemd_units_to_change filter on what the module returns."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bkfleet.backup.plugins.filter.systemd import systemd_units_to_change
from ansible_collections.bkfleet.backup.plugins.modules.files import systemctl_show

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
    assert units["bk-flush.timer"] == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert units["bk-backup-gone.timer"]["UnitFileState"] == ""
    assert units["restic-rest-server.service"]["UnitFileState"] == "masked"


def test_no_output_gives_no_units() -> None:
    assert systemctl_show("") == {}


def test_units_as_wanted_are_left_alone_and_the_others_named() -> None:
    wanted = {
        "bk-flush.timer": "enabled",
        "restic-rest-server.service": "masked",
        "bk-backup-gone.timer": "enabled",
        "bk-absent.service": "disabled",
    }
    assert systemd_units_to_change(systemctl_show(OUTPUT), wanted) == ["bk-backup-gone.timer", "bk-absent.service"]


def test_a_running_unit_wanted_off_is_to_change() -> None:
    units = systemctl_show(OUTPUT)
    assert systemd_units_to_change(units, {"bk-flush.timer": "disabled"}) == ["bk-flush.timer"]
    assert systemd_units_to_change(units, {"restic-rest-server.service": "enabled"}) == ["restic-rest-server.service"]


def test_a_failed_unit_wanted_disabled_is_as_wanted() -> None:
    failed = systemctl_show("Id=bk-hub-maintenance.service\nActiveState=failed\nUnitFileState=disabled\n")
    assert systemd_units_to_change(failed, {"bk-hub-maintenance.service": "disabled"}) == []


def test_no_state_read_means_every_unit_is_to_change() -> None:
    # A host where systemctl show failed: the module reports no unit.
    assert systemd_units_to_change({}, {"bk-flush.timer": "enabled"}) == ["bk-flush.timer"]


def test_an_unknown_wanted_state_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="'started' is not enabled, disabled or masked"):
        systemd_units_to_change(systemctl_show(OUTPUT), {"bk-flush.timer": "started"})
