#!/usr/bin/python
# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402  (Ansible wants the imports below DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: files
short_description: Put a set of directories and small files in place, in one module run
version_added: "0.1.0"
description:
  - Creates each directory and writes each file of O(files) whose content, mode, owner or group
    differ, and reports which paths it changed. A file is replaced atomically (a temporary file in the same
    directory, renamed over it).
  - One run of this module costs what one M(ansible.builtin.copy) of one file costs; a loop of
    M(ansible.builtin.template) or M(ansible.builtin.copy) costs that per item. The content is
    rendered on the controller (a C(template) lookup) and travels in the module's arguments, so the module is meant
    for configuration files and units, not for large files.
  - Removes only the files that O(prune) names, in a directory it keeps to exactly those of O(files).
  - Reads back the small files of O(read) in the same run (a version marker, say), as they are before anything is
    written; one round trip instead of one more for a M(ansible.builtin.slurp) task.
  - Lists the files of O(list) and reads the state of the systemd units of O(units) the same way, before anything is
    written, saving the round trip of a M(ansible.builtin.find) or a C(systemctl show) task.
author:
  - bk developers (@bkfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
options:
  files:
    description: The directories and files.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      state:
        description:
          - V(file) writes O(files[].content); its directory must exist.
          - V(directory) creates a directory, and its missing parents with the same mode and owner (as
            M(ansible.builtin.file) does).
          - V(attributes) sets the mode and owner of a path that exists (a file another tool wrote, such
            as a key from C(openssl)); a missing path fails.
        type: str
        choices: [file, directory, attributes]
        default: file
      content:
        description: The file's content (required for V(file)).
        type: str
      mode:
        description: Octal mode, as a string.
        type: str
        default: "0644"
      owner:
        description: Owning user.
        type: str
        default: root
      group:
        description: Owning group.
        type: str
        default: root
  prune:
    description:
      - Directories to keep to exactly the files of O(files). A file directly in one of them whose name matches
        one of its patterns, and which is not a path of O(files), is removed after the files are put in place.
      - A directory that does not exist is left alone.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the directory.
        type: path
        required: true
      patterns:
        description: Shell patterns (C(*.password)) matched against each file's name.
        type: list
        elements: str
        required: true
  read:
    description: Absolute paths of small text files to return in RV(contents).
    type: list
    elements: path
    default: []
  list:
    description:
      - Directories whose files to return in RV(listed), each file directly in one of them whose name matches one of
        its patterns. A directory that does not exist lists nothing.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the directory.
        type: path
        required: true
      patterns:
        description: Shell patterns (C(bk-backup-*.timer)) matched against each file's name.
        type: list
        elements: str
        required: true
  units:
    description:
      - systemd units whose state to return in RV(units), read with one C(systemctl show) before anything is written.
      - The caller compares it with what it wants (the P(bkfleet.backup.systemd_units_to_change#filter) filter) and
        starts a systemd_service task only for the units not yet as wanted.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Create bk's directories and write its configuration
  bkfleet.backup.files:
    files:
      - { path: /etc/bk, state: directory, mode: "0755" }
      - { path: /etc/bk/bk.json, content: "{{ settings | to_nice_json }}\n" }
      - { path: /etc/bk/job.json, content: "{{ lookup('ansible.builtin.template', 'job.json.j2') }}", mode: "0600" }
"""

RETURN = r"""
changed_paths:
  description: The paths created, changed or removed (in check mode, those that would be), in the order given, the
    removed ones last.
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/bk-flush.service]
contents:
  description: Each path of O(read) and its text (decoded as UTF-8), or null where no such file exists.
  returned: always
  type: dict
  sample:
    /usr/local/lib/bk/.bk-package: "67e2d5e6c861169c\n"
listed:
  description: The files O(list) found, sorted.
  returned: always
  type: list
  elements: str
  sample: [/etc/bk/jobs/etc.json]
units:
  description:
    - Each unit of O(units) systemd reported, by name, with its C(UnitFileState) and C(ActiveState). A unit systemd
      does not know is reported inactive with an empty C(UnitFileState); on a host where C(systemctl show) fails,
      no unit is reported.
  returned: always
  type: dict
  sample:
    bk-flush.timer: {UnitFileState: enabled, ActiveState: active}
"""

import fnmatch
import grp
import os
import pwd
import stat
from typing import Any, Dict, List, Optional, Set

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bkfleet.backup.plugins.module_utils.files import atomic_write

ENTRY = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["file", "directory", "attributes"], "default": "file"},
    "content": {"type": "str", "no_log": False},
    "mode": {"type": "str", "default": "0644"},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
}


DIRECTORY_PATTERNS = {
    "path": {"type": "path", "required": True},
    "patterns": {"type": "list", "elements": "str", "required": True},
}


def current(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def missing_directories(path: str) -> List[str]:
    """PATH and its parents that do not exist, outermost first."""
    missing: List[str] = []
    while current(path) is None:
        missing.insert(0, path)
        path = os.path.dirname(path)
    return missing


def wanted_ids(entry: Dict[str, Any]) -> tuple:
    return pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid


def attributes_differ(found: os.stat_result, mode: int, uid: int, gid: int) -> bool:
    return stat.S_IMODE(found.st_mode) != mode or found.st_uid != uid or found.st_gid != gid


def put(entry: Dict[str, Any], check: bool, diffs: List[Dict[str, str]]) -> bool:
    """Brings one path to its wanted state; True when it changed (or would, in check mode)."""
    path, mode = entry["path"], int(entry["mode"], 8)
    uid, gid = wanted_ids(entry)
    found = current(path)
    if entry["state"] == "attributes":
        if found is None:
            raise ValueError(f"{path} does not exist (state attributes only sets the mode and owner of a path)")
        changed = attributes_differ(found, mode, uid, gid)
        if changed and not check:
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return changed
    if entry["state"] == "directory":
        if found is not None and not stat.S_ISDIR(found.st_mode):
            raise ValueError(f"{path} exists and is not a directory")
        changed = found is None or attributes_differ(found, mode, uid, gid)
        if changed and not check:
            for directory in missing_directories(path):
                os.mkdir(directory, mode)
                os.chown(directory, uid, gid)
                os.chmod(directory, mode)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return changed
    if entry["content"] is None:
        raise ValueError(f"{path}: a file needs content")
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise ValueError(f"{path} exists and is not a regular file")
    data = entry["content"].encode("utf-8")
    before = read(path) if found is not None else None
    content_differs = before != data
    changed = found is None or content_differs or attributes_differ(found, mode, uid, gid)
    if content_differs:
        diffs.append(
            {
                "before_header": path,
                "after_header": path,
                "before": (before or b"").decode("utf-8", "replace"),
                "after": entry["content"],
            }
        )
    if changed and not check:
        if content_differs:
            atomic_write(path, data, mode)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return changed


def strays(directory: str, patterns: List[str], kept: Set[str]) -> List[str]:
    """The files directly in DIRECTORY whose names match PATTERNS and which are not KEPT, sorted."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found = [
        os.path.normpath(entry.path)
        for entry in entries
        if not entry.is_dir(follow_symlinks=False)
        and any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns)
    ]
    return sorted(path for path in found if path not in kept)


def prune(directories: List[Dict[str, Any]], kept: Set[str], check: bool, diffs: List[Dict[str, str]]) -> List[str]:
    """Removes the strays of each directory; the paths removed (in check mode, that would be)."""
    removed: List[str] = []
    for directory in directories:
        for path in strays(directory["path"], directory["patterns"], kept):
            diffs.append({"before_header": path, "after_header": path, "before": "(present)\n", "after": "(absent)\n"})
            if not check:
                os.unlink(path)
            removed.append(path)
    return removed


def listed(directories: List[Dict[str, Any]]) -> List[str]:
    """The files of each directory whose names match its patterns, sorted."""
    return sorted(path for directory in directories for path in strays(directory["path"], directory["patterns"], set()))


def systemctl_show(output: str) -> Dict[str, Dict[str, str]]:
    """Each unit's fields in the output of `systemctl show --property=Id,...` (one block of KEY=value lines per
    unit, blocks apart by an empty line), by its Id."""
    units: Dict[str, Dict[str, str]] = {}
    for block in output.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("Id"):
            units[fields.pop("Id")] = fields
    return units


def unit_states(module: AnsibleModule, units: List[str]) -> Dict[str, Dict[str, str]]:
    if not units:
        return {}
    command = ["systemctl", "show", "--property=Id,UnitFileState,ActiveState", "--", *units]
    rc, out, _err = module.run_command(command)
    return systemctl_show(out) if rc == 0 else {}


def read_text(path: str) -> Optional[str]:
    data = read(path)
    return None if data is None else data.decode("utf-8", "replace")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "required": True, "options": ENTRY},
            "prune": {"type": "list", "elements": "dict", "default": [], "options": DIRECTORY_PATTERNS},
            "read": {"type": "list", "elements": "path", "default": []},
            "list": {"type": "list", "elements": "dict", "default": [], "options": DIRECTORY_PATTERNS},
            "units": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    contents = {path: read_text(path) for path in module.params["read"]}
    before = {"listed": listed(module.params["list"]), "units": unit_states(module, module.params["units"])}
    changed_paths: List[str] = []
    diffs: List[Dict[str, str]] = []
    for entry in module.params["files"]:
        try:
            if put(entry, module.check_mode, diffs):
                changed_paths.append(entry["path"])
        except (OSError, KeyError, ValueError) as error:
            module.fail_json(msg=f"{entry['path']}: {error}", changed_paths=changed_paths, contents=contents, **before)
    kept = {os.path.normpath(entry["path"]) for entry in module.params["files"]}
    try:
        changed_paths += prune(module.params["prune"], kept, module.check_mode, diffs)
    except OSError as error:
        module.fail_json(msg=f"pruning: {error}", changed_paths=changed_paths, contents=contents, **before)
    result: Dict[str, Any] = {
        "changed": bool(changed_paths),
        "changed_paths": changed_paths,
        "contents": contents,
        **before,
    }
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
