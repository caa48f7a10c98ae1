#!/usr/bin/python
# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402  (Ansible wants the imports below DOCUMENTATION, EXAMPLES and RETURN)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: manifest
short_description: Write a signed bk manifest for an action Ansible performed on a host
version_added: "0.1.0"
description:
  - Builds a bk manifest (schema C(bk.manifest/v1)) describing an action Ansible performed on the
    host, such as a restore or a restore drill, signs it with the host's SSH host key (SSHSIG,
    namespace C(bk-manifest@v1)), chains it into the host's manifest chain (C(seq), C(prev)) and
    writes it to the host's spool, from where C(bk-run) delivers it to the reporter.
  - Reads the host's C(bk.json) from O(config_dir) when it exists (host name, key, state and spool
    directories); options given here take precedence.
  - The C(bkfleet.backup.reporter) callback plugin forwards the returned RV(envelope) to the
    reporter at the end of the play; the reporter accepts the copy the host delivers later as the
    same manifest.
  - The manifest is validated against the published schema before it is signed; an invalid one
    fails the task and changes nothing.
author:
  - bk developers (@bkfleet)
requirements:
  - OpenSSH C(ssh-keygen) 8.1 or later on the host when the Python C(cryptography) package is absent
extends_documentation_fragment:
  - bkfleet.backup.attributes
attributes:
  check_mode:
    details:
      - Builds and validates the manifest and reports the sequence number it would get.
      - Signs nothing and changes no state.
options:
  kind:
    description: What happened.
    type: str
    required: true
    choices: [backup, forget, prune, check, restore, drill, offsite-copy, hub-receipt, ansible-run]
  status:
    description: How it went.
    type: str
    default: success
    choices: [success, warning, failure]
  started_at:
    description: When the action started, RFC 3339 with an offset. Defaults to the time this task started.
    type: str
  finished_at:
    description: When the action finished, RFC 3339 with an offset. Defaults to now.
    type: str
  job:
    description: The bk job the action concerns.
    type: str
  repository:
    description:
      - The repository, as C(name) and optionally C(url) and C(id) (the restic repository id).
      - Credentials in C(url) are removed before anything is recorded.
    type: dict
  snapshot:
    description:
      - The snapshot involved, as in C(restic snapshots --json)
        (C(id), C(short_id), C(paths), C(tags), C(parent), C(time)).
    type: dict
  restore:
    description:
      - For O(kind=restore) and O(kind=drill) the C(restore) section, with keys C(snapshot), C(paths),
        C(target), C(files_checked), C(mismatches) and C(mismatched_paths).
    type: dict
  error:
    description: What went wrong, with keys C(exit_code), C(message) and C(stderr_tail).
    type: dict
  sections:
    description:
      - Further top-level manifest sections (for example C(check) or C(stats)), validated by the schema
        (C(docs/schema/manifest-v1.json) in the collection's source).
      - The fields the chain and the other options set (C(schema), C(id), C(host), C(seq), C(prev), C(kind),
        C(status), C(started_at), C(finished_at)) cannot be given here.
    type: dict
    default: {}
  config_dir:
    description: Directory holding the host's C(bk.json).
    type: path
    default: /etc/bk
  host:
    description:
      - Name the manifest carries; must be the name the reporter enrolled this host's key under.
      - Required when O(config_dir) holds no C(bk.json).
    type: str
  host_key:
    description: Private key that signs. Defaults to C(bk.json)'s, else the host's ed25519, ECDSA or RSA host key.
    type: path
  state_dir:
    description: Directory of the host's chain state. Defaults to C(bk.json)'s, else C(/var/lib/bk).
    type: path
  spool_dir:
    description: Directory of the host's spool. Defaults to C(bk.json)'s, else C(/var/spool/bk).
    type: path
notes:
  - The chain is shared with C(bk-run) on the same host; both take the same lock.
"""

EXAMPLES = r"""
- name: Record a successful restore drill
  bkfleet.backup.manifest:
    kind: drill
    job: home
    started_at: "{{ drill_started_at }}"
    repository:
      name: hub
    restore:
      snapshot: "{{ drill_snapshot_id }}"
      paths: [/home/alice/documents]
      target: /var/tmp/bk-drill
      files_checked: "{{ drill_files | int }}"
      mismatches: 0

- name: Record a failed restore
  bkfleet.backup.manifest:
    kind: restore
    status: failure
    job: home
    error:
      exit_code: 1
      message: restic restore failed
  register: restore_manifest
"""

RETURN = r"""
envelope:
  description: The signed manifest as sent to the reporter. The reporter callback forwards it.
  returned: success, not in check mode
  type: dict
  contains:
    manifest:
      description: The manifest text that was signed.
      type: str
    signature:
      description: Armored SSHSIG signature over the UTF-8 bytes of RV(envelope.manifest).
      type: str
manifest:
  description: The manifest as a dictionary (in check mode, the one that would be signed).
  returned: always
  type: dict
  sample: {"schema": "bk.manifest/v1", "kind": "drill", "status": "success", "seq": 42}
id:
  description: The manifest's UUID.
  returned: always
  type: str
  sample: 5f0c6c55-1b8a-4f2e-9a59-2b8f1d5c9e11
seq:
  description: The manifest's position in the host's chain (in check mode, the one it would get).
  returned: always
  type: int
  sample: 42
"""

import json
import os
import platform

from ansible.module_utils.ansible_release import __version__ as ansible_version
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bkfleet.backup.plugins.module_utils.chain import read_state
from ansible_collections.bkfleet.backup.plugins.module_utils.manifest import (
    KINDS,
    STATUSES,
    new_manifest,
    parse_timestamp,
    rfc3339,
    utc_now,
    validate,
)
from ansible_collections.bkfleet.backup.plugins.module_utils.recorder import BK_VERSION, Recorder
from ansible_collections.bkfleet.backup.plugins.module_utils.restic_output import strip_url_credentials
from ansible_collections.bkfleet.backup.plugins.module_utils.settings import ConfigError, Settings

SETTINGS_OPTIONS = ("host", "host_key", "state_dir", "spool_dir")
RESERVED_SECTIONS = ("schema", "id", "host", "seq", "prev", "kind", "status", "started_at", "finished_at")
ARGUMENT_SPEC = {
    "kind": {"type": "str", "required": True, "choices": list(KINDS)},
    "status": {"type": "str", "default": "success", "choices": list(STATUSES)},
    "started_at": {"type": "str"},
    "finished_at": {"type": "str"},
    "job": {"type": "str"},
    "repository": {"type": "dict"},
    "snapshot": {"type": "dict"},
    "restore": {"type": "dict"},
    "error": {"type": "dict"},
    "sections": {"type": "dict", "default": {}},
    "config_dir": {"type": "path", "default": "/etc/bk"},
    "host": {"type": "str"},
    "host_key": {"type": "path"},
    "state_dir": {"type": "path"},
    "spool_dir": {"type": "path"},
}


def load_settings(params: dict) -> Settings:
    """bk.json when the host has one, with the module's options on top."""
    config_dir = params["config_dir"]
    overrides = {name: params[name] for name in SETTINGS_OPTIONS if params[name] is not None}
    if os.path.exists(os.path.join(config_dir, "bk.json")):
        settings = Settings(config_dir)
        for name, value in overrides.items():
            setattr(settings, name, value)
        return settings
    if "host" not in overrides:
        raise ConfigError("no %s/bk.json on this host: the host option is required" % config_dir)
    return Settings(config_dir, values=overrides)


def timestamp(module: AnsibleModule, name: str, default: str) -> str:
    value = module.params[name]
    if value is None:
        return default
    if parse_timestamp(value) is None:
        module.fail_json(msg="%s must be an RFC 3339 timestamp with an offset, got %r" % (name, value))
    return value


def build(module: AnsibleModule, started_default: str) -> dict:
    params = module.params
    sections = dict(params["sections"])
    reserved = sorted(set(sections).intersection(RESERVED_SECTIONS))
    if reserved:
        module.fail_json(msg="sections cannot set %s" % ", ".join(reserved))
    for name in ("job", "snapshot", "restore", "error"):
        if params[name] is not None:
            sections[name] = params[name]
    if params["repository"] is not None:
        repository = dict(params["repository"])
        if isinstance(repository.get("url"), str):
            repository["url"] = strip_url_credentials(repository["url"])
        sections["repository"] = repository
    sections.setdefault("tools", {"bk": BK_VERSION, "ansible": ansible_version, "python": platform.python_version()})
    now = rfc3339(utc_now())
    return new_manifest(
        params["kind"],
        params["status"],
        timestamp(module, "started_at", started_default),
        timestamp(module, "finished_at", now),
        **sections,
    )


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    started_default = rfc3339(utc_now())
    try:
        settings = load_settings(module.params)
    except ConfigError as exc:
        module.fail_json(msg=str(exc))
    doc = build(module, started_default)
    state = read_state(settings.state_dir, settings.host)
    preview = dict(doc, host=settings.host, seq=state.seq + 1, prev=state.last_sha256)
    problems = validate(preview)
    if problems:
        module.fail_json(msg="the manifest would be invalid: " + "; ".join(problems), manifest=preview)
    if module.check_mode:
        module.exit_json(changed=True, manifest=preview, id=doc["id"], seq=preview["seq"])
    try:
        envelope = Recorder(settings).record(doc)
    except Exception as exc:  # signing or writing failed: report, change nothing more
        module.fail_json(msg="could not sign and spool the manifest: %s" % exc)
    recorded = json.loads(envelope["manifest"])
    module.exit_json(changed=True, envelope=envelope, manifest=recorded, id=recorded["id"], seq=recorded["seq"])


if __name__ == "__main__":
    main()
