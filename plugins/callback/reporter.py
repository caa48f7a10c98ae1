# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402  (Ansible wants the imports below DOCUMENTATION)

from __future__ import annotations

DOCUMENTATION = r"""
name: reporter
type: notification
short_description: Record playbook runs as signed bk manifests and forward the hosts' manifests
version_added: "0.1.0"
description:
  - Records each playbook run (playbook, hosts, ok/changed/failed/unreachable/skipped/rescued/ignored
    counts, duration, check mode) as an C(ansible-run) manifest signed with the controller key O(key),
    chained like a host's manifests under the name O(host).
  - Collects the signed manifests that tasks return (the C(envelope) of M(bkfleet.backup.manifest),
    or C(bk_envelope) / C(bk_envelopes) of any task, also as facts set by C(ansible.builtin.set_fact))
    and forwards them unchanged.
  - At the end of the run it posts everything to the reporter's batch endpoint in one request,
    bounded by O(timeout). When the reporter cannot be reached the manifests wait in O(spool_dir) and
    go with the next run. It never fails, and never holds up, a playbook; problems become warnings.
  - When the playbook starts it already delivers what O(spool_dir) holds (or opens a TCP connection to
    the reporter's port), bounded by O(timeout); if that finds the reporter out of reach less than a
    minute before the end, the delivery at the end is skipped.
author:
  - bk developers (@bkfleet)
requirements:
  - Enable it, for example with C(callbacks_enabled = bkfleet.backup.reporter) in C(ansible.cfg).
  - Enroll the public half of O(key) in the reporter as host O(host).
options:
  url:
    description: Base URL of the bk reporter. Unset, manifests only accumulate in O(spool_dir).
    type: str
    env:
      - name: BK_REPORTER_URL
    ini:
      - section: bk_reporter
        key: url
  ca_file:
    description: PEM bundle to verify the reporter's HTTPS certificate.
    type: path
    env:
      - name: BK_REPORTER_CA_FILE
    ini:
      - section: bk_reporter
        key: ca_file
  key:
    description:
      - The controller's unencrypted OpenSSH private key that signs C(ansible-run) manifests.
      - Unset, playbook runs are not recorded; host manifests are still forwarded.
    type: path
    env:
      - name: BK_REPORTER_KEY
    ini:
      - section: bk_reporter
        key: key
  host:
    description: The name the controller's manifests carry (its enrolled name in the reporter).
    type: str
    default: controller
    env:
      - name: BK_REPORTER_HOST
    ini:
      - section: bk_reporter
        key: host
  state_dir:
    description: Directory of the controller's chain state.
    type: path
    default: ~/.local/state/bk/controller
    env:
      - name: BK_REPORTER_STATE_DIR
    ini:
      - section: bk_reporter
        key: state_dir
  spool_dir:
    description: Directory where manifests wait until the reporter stored them.
    type: path
    default: ~/.local/state/bk/controller-spool
    env:
      - name: BK_REPORTER_SPOOL_DIR
    ini:
      - section: bk_reporter
        key: spool_dir
  timeout:
    description: Seconds the delivery at the end of a run may take in total.
    type: float
    default: 3
    env:
      - name: BK_REPORTER_TIMEOUT
    ini:
      - section: bk_reporter
        key: timeout
"""

import json
import os
import platform
import time

from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible.release import __version__ as ansible_version

from ansible_collections.bkfleet.backup.plugins.module_utils.manifest import new_manifest, utc_now
from ansible_collections.bkfleet.backup.plugins.module_utils.recorder import BK_VERSION, Recorder
from ansible_collections.bkfleet.backup.plugins.module_utils.settings import Settings

ENVELOPE_KEYS = ("envelope", "bk_envelope")
COUNTS = (("ok", "ok"), ("changed", "changed"), ("failures", "failed"), ("unreachable", "unreachable"))
MORE_COUNTS = (("skipped", "skipped"), ("rescued", "rescued"), ("ignored", "ignored"))


def is_envelope(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("manifest"), str)
        and isinstance(value.get("signature"), str)
        and set(value) == {"manifest", "signature"}
    )


def envelopes_in(result: dict) -> list:
    """Envelopes a task returned, including those of its loop items."""
    found = [result[key] for key in ENVELOPE_KEYS if is_envelope(result.get(key))]
    facts = result.get("ansible_facts")
    for many in (result.get("bk_envelopes"), facts.get("bk_envelopes") if isinstance(facts, dict) else None):
        if isinstance(many, list):
            found.extend(item for item in many if is_envelope(item))
    for item in result.get("results") or []:
        if isinstance(item, dict):
            found.extend(envelopes_in(item))
    return found


def playbook_name(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "bkfleet.backup.reporter"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: object = None) -> None:
        super().__init__(display=display)
        self._started_at = utc_now()
        self._started = time.monotonic()
        self._playbook = None
        self._envelopes = {}
        self._early = None

    def _guarded(self, action: object, *args: object) -> None:
        try:
            action(*args)
        except Exception as exc:  # a reporting problem must never break a playbook
            self._display.warning("bkfleet.backup.reporter: %s" % exc)

    def v2_playbook_on_start(self, playbook: object) -> None:
        self._guarded(self._on_start, playbook)

    def v2_runner_on_ok(self, result: object) -> None:
        self._guarded(self._collect, result)

    def v2_runner_on_failed(self, result: object, ignore_errors: bool = False) -> None:
        self._guarded(self._collect, result)

    def v2_playbook_on_stats(self, stats: object) -> None:
        self._guarded(self._finish, stats)

    def _on_start(self, playbook: object) -> None:
        if self._playbook is None:
            self._playbook = playbook_name(playbook._file_name)
            self._started_at = utc_now()
            self._started = time.monotonic()
            if self.get_option("url"):
                # Try the reporter while the playbook runs; out of reach, the end does not wait for it.
                self._early = Recorder(self._settings()).start_early_delivery(float(self.get_option("timeout")))

    def _collect(self, result: object) -> None:
        for envelope in envelopes_in(result._result):
            self._envelopes[envelope["manifest"]] = envelope

    def _finish(self, stats: object) -> None:
        recorder = Recorder(self._settings())
        for envelope in self._envelopes.values():
            self._spool_forwarded(recorder, envelope)
        if self.get_option("key"):
            self._guarded(lambda: recorder.record(self._run_manifest(stats)))
        else:
            self._display.warning("bkfleet.backup.reporter: no controller key configured; this run is not recorded")
        if not self.get_option("url"):
            return
        if self._early is not None and self._early.reporter_away():
            self._display.warning(
                "bkfleet.backup.reporter: the reporter could not be reached when the playbook started;"
                " %d manifests wait in %s" % (len(recorder.spool.pending()), recorder.spool.outbox)
            )
            return
        report = recorder.deliver(float(self.get_option("timeout")))
        if report is None or report.remaining:
            self._display.warning(
                "bkfleet.backup.reporter: the reporter did not take every manifest (%s); they wait in %s"
                % (report.stopped if report else "delivery abandoned", recorder.spool.outbox)
            )

    def _settings(self) -> Settings:
        values = {
            "host": self.get_option("host"),
            "host_key": self.get_option("key"),
            "state_dir": self.get_option("state_dir"),
            "spool_dir": self.get_option("spool_dir"),
            "reporter_url": self.get_option("url"),
            "reporter_ca_file": self.get_option("ca_file"),
        }
        return Settings(self.get_option("state_dir"), values=values)

    def _spool_forwarded(self, recorder: Recorder, envelope: dict) -> None:
        doc = json.loads(envelope["manifest"])
        if not isinstance(doc.get("seq"), int) or not isinstance(doc.get("id"), str):
            self._display.warning("bkfleet.backup.reporter: ignoring a returned envelope without seq and id")
            return
        recorder.spool.put(envelope, doc["seq"], doc["id"])

    def _run_manifest(self, stats: object) -> dict:
        hosts = sorted(stats.processed)
        summaries = [stats.summarize(host) for host in hosts]
        counts = {name: sum(summary.get(key, 0) for summary in summaries) for key, name in COUNTS + MORE_COUNTS}
        failed = counts["failed"] or counts["unreachable"]
        return new_manifest(
            "ansible-run",
            "failure" if failed else "success",
            self._started_at,
            utc_now(),
            ansible_run={
                "playbook": self._playbook or "(unknown)",
                "hosts": hosts,
                "counts": counts,
                "duration_seconds": round(time.monotonic() - self._started, 3),
                "check_mode": bool(context.CLIARGS.get("check", False)),
                "forwarded": len(self._envelopes),
            },
            tools={"ansible": ansible_version, "bk": BK_VERSION, "python": platform.python_version()},
        )
