#!/usr/bin/python
# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402  (Ansible wants the imports below DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: reporter_keys
short_description: List the host keys a bk reporter has enrolled, and warn about the doubtful ones
version_added: "0.1.0"
description:
  - Runs C(bk-reporter hosts list --json) on the reporter host and returns the enrolled keys, active
    and retired.
  - Every warning C(bk-reporter hosts list) gives (a host with more than one active key of a type,
    an old key left after a rotation) becomes an Ansible warning, naming the host and the keys'
    fingerprints.
  - Each host named in O(without_facts) is an Ansible warning too, since its keys cannot be enrolled
    and the reporter refuses its manifests.
  - Changes nothing. Set C(BK_REPORTER_CONFIG), C(BK_REPORTER_OWNER_DATABASE_URL) and C(PGPASSFILE)
    with the task's C(environment) keyword, as for any C(bk-reporter) command.
author:
  - bk developers (@bkfleet)
requirements:
  - C(bk-reporter) installed on the host
extends_documentation_fragment:
  - bkfleet.backup.attributes
attributes:
  check_mode:
    details:
      - Lists the keys in check mode too (it only reads).
      - In check mode a C(bk-reporter) that is missing or fails (the reporter is not installed yet) returns
        no keys and RV(listed=false) instead of failing.
options:
  cli:
    description: The C(bk-reporter) command, as a list (the program and any arguments before C(hosts)).
    type: list
    elements: str
    required: true
  data_dir:
    description: The reporter's data directory (C(--data-dir)).
    type: path
    required: true
  without_facts:
    description: Inventory hosts without SSH host key facts in this run; each is a warning.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: List the enrolled keys
  bkfleet.backup.reporter_keys:
    cli: [/opt/bk-reporter/venv/bin/bk-reporter]
    data_dir: /var/lib/bk-reporter
    without_facts: "{{ hosts_missing_facts }}"
  environment:
    BK_REPORTER_CONFIG: /etc/bk-reporter/reporter.toml
  register: enrolled
"""

RETURN = r"""
enrolled:
  description: The enrolled keys, as C(bk-reporter hosts list --json) prints them.
  returned: always
  type: list
  elements: dict
  sample:
    - host: web1
      key_type: ssh-ed25519
      fingerprint: "SHA256:2kJq9v2d8uGx0l6yq0c1oS5m6dWm4l5d0H2pQ9m3zYc"
      comment: root@web1
      public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@web1
      enrolled_at: "2026-11-02T10:00:00Z"
      retired_at: null
listed:
  description: Whether C(bk-reporter) listed the keys (false only in check mode, when it could not).
  returned: always
  type: bool
  sample: true
"""

import json

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = {
    "cli": {"type": "list", "elements": "str", "required": True},
    "data_dir": {"type": "path", "required": True},
    "without_facts": {"type": "list", "elements": "str", "default": []},
}
WARNING_PREFIX = "warning: "


def cli_warnings(stderr: str) -> list:
    """The warnings `bk-reporter hosts list` gives, which holds the rule (one active key per type)."""
    return [line[len(WARNING_PREFIX) :] for line in stderr.splitlines() if line.startswith(WARNING_PREFIX)]


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if params["without_facts"]:
        module.warn(
            "No SSH host key facts for %s: their manifests will be refused until their keys are enrolled"
            " (gather their facts in the same run, as playbooks/site.yml does)." % ", ".join(params["without_facts"])
        )
    command = [*params["cli"], "hosts", "list", "--json", "--data-dir", params["data_dir"]]
    try:
        rc, stdout, stderr = module.run_command(command, handle_exceptions=False)
    except OSError as exc:
        rc, stdout, stderr = 127, "", str(exc)
    if rc != 0:
        if module.check_mode:  # before the first real run nothing is installed yet
            module.exit_json(changed=False, enrolled=[], listed=False)
        module.fail_json(msg="bk-reporter hosts list failed (exit %d): %s" % (rc, stderr.strip()), cmd=command)
    try:
        enrolled = json.loads(stdout)
    except ValueError:
        module.fail_json(msg="bk-reporter hosts list --json printed no JSON", stdout=stdout, cmd=command)
    for warning in cli_warnings(stderr):
        module.warn(warning)
    module.exit_json(changed=False, enrolled=enrolled, listed=True)


if __name__ == "__main__":
    main()
