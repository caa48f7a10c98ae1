# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One machine's evidence pipeline: sign with its key, chain, spool, deliver."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Optional

from .chain import Chain
from .runlog import RunLog
from .settings import Settings
from .spool import Spool

if TYPE_CHECKING:
    from .delivery import DeliveryReport

# The signing code (cryptography) and the delivery code (urllib, ssl) are most of bk-run's start-up
# time. They are imported where they are used, so that bk-run starts restic without them, and
# Recorder.prepare_in_background loads them while restic runs.

from .version import BK_VERSION  # noqa: F401  # pylint: disable=unused-import

EARLY_ANSWER_FRESH_SECONDS = 60.0


class EarlyDelivery:
    """While the work runs: deliver what the spool already holds, or, with an empty spool, see whether
    the reporter's port opens at all; both bounded by the delivery deadline.

    When the reporter could not be reached, the delivery after the work is skipped if that answer is
    recent (the work was short): a reporter that drops packets then costs the run nothing after the
    work, instead of a full deadline. Nothing is lost; the new manifests wait in the spool."""

    def __init__(self, recorder: "Recorder", deadline_seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline_seconds = deadline_seconds
        self.unreachable = False
        self.answered_at: Optional[float] = None
        self.thread = threading.Thread(target=self._run, args=(recorder,), name="bk-early-delivery", daemon=True)
        self.thread.start()

    def _run(self, recorder: "Recorder") -> None:
        from .delivery import reachable

        try:
            if recorder.spool.pending():
                report = recorder.deliver(self.deadline_seconds)
                self.unreachable = report is None or report.unreachable
            else:
                self.unreachable = not reachable(str(recorder.settings.reporter_url), self.deadline_seconds)
        except Exception:  # the delivery after the work tries again and reports
            self.unreachable = False
        self.answered_at = time.monotonic()

    def reporter_away(self) -> bool:
        """Wait for the early attempt (within its deadline); whether to skip the delivery after the work."""
        self.thread.join(max(0.0, self.started + self.deadline_seconds + 1.0 - time.monotonic()))
        if self.answered_at is None:  # still trying (a name that does not resolve): unreachable
            return True
        return self.unreachable and time.monotonic() - self.answered_at < EARLY_ANSWER_FRESH_SECONDS


class Recorder:
    """Chains, signs and spools this machine's manifests and delivers its spool."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key_path = settings.host_key
        self._spool: Optional[Spool] = None
        self._chain: Optional[Chain] = None
        self._preparing: Optional[threading.Thread] = None

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
        from .sshsig import preferred_host_key

        if self._key_path is None:
            self._key_path = preferred_host_key()
        return self._key_path

    def record(self, doc: Dict[str, Any]) -> Dict[str, str]:
        """Chain, sign and spool a manifest built by ``manifest.new_manifest``; the envelope."""
        from .sshsig import sign

        if self._preparing is not None:
            self._preparing.join()
        signed = self.chain.append(doc, lambda data: sign(data, self.key_path))
        self.runs.note(json.loads(signed["manifest"]))
        return signed

    def deliver(self, deadline_seconds: float) -> Optional[DeliveryReport]:
        """Deliver what the spool holds, within the deadline; None without a reporter or if abandoned."""
        if not self.settings.reporter_url:
            return None
        from .delivery import deliver_bounded

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

    def prepare_in_background(self) -> None:
        """Load the signing and delivery code in a thread, and OpenSSL's through one throwaway
        signature with the host key: bk-run does this while restic runs, so that recording the
        manifest afterwards takes milliseconds. A failure here is left for ``record`` to report.

        Not a daemon thread: a run that records nothing (receipts with no new snapshot) would
        otherwise exit while the thread is inside cryptography's Rust code, and the interpreter's
        end of a daemon thread there aborts the process ("FATAL: exception not rethrown", SIGABRT).
        The work is a few imports and one local signature, so waiting for it at exit is short."""
        self._preparing = threading.Thread(target=self._prepare, name="bk-prepare", daemon=False)
        self._preparing.start()

    def _prepare(self) -> None:
        from . import delivery  # noqa: F401  (loaded for later)
        from .sshsig import HAS_CRYPTOGRAPHY, sign

        if HAS_CRYPTOGRAPHY:  # ssh-keygen would sign for nothing
            with contextlib.suppress(Exception):
                sign(b"", self.key_path)

    def start_early_delivery(self, deadline_seconds: float) -> EarlyDelivery:
        """Try the reporter now, in a thread, while the work runs (see EarlyDelivery)."""
        return EarlyDelivery(self, deadline_seconds)
