"""Writes a playbook run's per-host stats and failed tasks as JSON, for the scenario's checks.

verify enables it for the site.yml runs it makes (ANSIBLE_CALLBACK_PLUGINS names this directory,
ANSIBLE_CALLBACKS_ENABLED=bkmol_stats, BKMOL_STATS_FILE the file to write): the numbers come from
Ansible's own AggregateStats, not from parsing the recap printed for people.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bkmol_stats
type: aggregate
short_description: per-host stats and failed tasks of a run, as JSON in BKMOL_STATS_FILE
description:
  - >-
    When the run ends, writes a JSON object with "stats" (per host: ok, changed, failures,
    unreachable, skipped, rescued, ignored) and "failed" (play, task, host and msg of each failure).
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bkmol_stats"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.play = ""
        self.failed: list[dict[str, str]] = []

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.play = play.get_name()

    def _note(self, result: Any) -> None:
        self.failed.append(
            {
                "play": self.play,
                "task": result._task.get_name(),
                "host": result._host.get_name(),
                "msg": str(result._result.get("msg", ""))[:2000],
            }
        )

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._note(result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._note(result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        path = os.environ.get("BKMOL_STATS_FILE")
        if not path:
            return
        document = {"stats": {host: stats.summarize(host) for host in sorted(stats.processed)}, "failed": self.failed}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
