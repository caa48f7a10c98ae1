# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One machine's evidence pipeline: sign with its key, chain, spool, deliver."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional

from .chain import Chain
from .config import Settings
from .delivery import DeliveryReport, deliver_bounded
from .runlog import RunLog
from .spool import Spool
from .sshsig import preferred_host_key, sign

BK_VERSION = "0.1.0"


class Recorder:
    """Chains, signs and spools this machine's manifests and delivers its spool."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key_path = settings.host_key
        self._spool: Optional[Spool] = None
        self._chain: Optional[Chain] = None

    # The spool and the chain are opened on first use: a broken state or spool directory must not
    # keep a backup from running (its manifest then fails loudly instead).
    @property
    def spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.settings.spool_dir)
        return self._spool

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            self._chain = Chain(self.settings.state_dir, self.settings.host, self.spool)
        return self._chain

    @property
    def runs(self) -> RunLog:
        return RunLog(self.settings.state_dir)

    @property
    def key_path(self) -> str:
        if self._key_path is None:
            self._key_path = preferred_host_key()
        return self._key_path

    def record(self, doc: Dict[str, Any]) -> Dict[str, str]:
        """Chain, sign and spool a manifest built by ``manifest.new_manifest``; the envelope."""
        signed = self.chain.append(doc, lambda data: sign(data, self.key_path))
        self.runs.note(json.loads(signed["manifest"]))
        return signed

    def deliver(self, deadline_seconds: float) -> Optional[DeliveryReport]:
        """Deliver what the spool holds, within the deadline; None without a reporter or if abandoned."""
        if not self.settings.reporter_url:
            return None
        self.chain.recover()
        self.spool.clean_partial()
        return deliver_bounded(
            self.spool,
            self.settings.reporter_url,
            ca_file=self.settings.reporter_ca_file,
            deadline_seconds=deadline_seconds,
            ready=self.chain.deliverable,
        )

    def deliver_quietly(self, deadline_seconds: float) -> Optional[DeliveryReport]:
        """``deliver`` that reports its own failures on stderr instead of raising."""
        try:
            return self.deliver(deadline_seconds)
        except Exception as exc:  # delivery must never change what the work's outcome was
            sys.stderr.write("bk: delivery failed, manifests stay in the spool: %s\n" % exc)
            return None
