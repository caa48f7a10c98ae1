# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time-bounded delivery of spooled envelopes to the reporter's batch endpoint.

Per item: 200/201 removes the file; a 4xx other than 408/429 moves it to ``rejected/`` (and says
so on stderr); anything else keeps it. A refused or reset connection, or a 5xx/408/429 answer to
the whole request, is retried with exponential backoff inside the deadline; a timeout (a
reporter that drops packets or never answers) ends delivery at once: the next run tries again."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .spool import Spool

BATCH_PATH = "/api/v1/manifests/batch"
REQUEST_TIMEOUT_SECONDS = 3.0
DEFAULT_DEADLINE_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.2
BATCH_MAX_ITEMS = 100
BATCH_MAX_BYTES = 1000000
RESPONSE_MAX_BYTES = 10 * 1000000
STORED = (200, 201)
TRANSIENT_CLIENT_ERRORS = (408, 429)

Item = Tuple[Path, Dict[str, Any]]


class DeliveryReport:
    """What one delivery attempt did."""

    def __init__(self) -> None:
        self.delivered = 0
        self.rejected = 0
        self.remaining = 0
        self.stopped: Optional[str] = None
        self.unreachable = False  # stopped because the reporter could not be reached (timeout, refused)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "delivered": self.delivered,
            "rejected": self.rejected,
            "remaining": self.remaining,
            "stopped": self.stopped,
        }


class _Retry(Exception):
    """The reporter is restarting, overloaded or refusing connections: try again shortly."""

    def __init__(self, message: str, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


class _Stop(Exception):
    """Delivery cannot make progress in this run."""

    def __init__(self, message: str, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


def _stderr(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")


def deliver(
    spool: Spool,
    reporter_url: str,
    *,
    ca_file: Optional[str] = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ready: Optional[Callable[[Dict[str, Any]], bool]] = None,
    log: Callable[[str], None] = _stderr,
) -> DeliveryReport:
    """Post the outbox, oldest first, in batches, within ``deadline_seconds``.

    ``ready(manifest_doc)`` selects the envelopes that may leave (see Chain.deliverable)."""
    report = DeliveryReport()
    deadline = time.monotonic() + deadline_seconds
    queue = _load_queue(spool, ready, report, log)
    opener = _opener(reporter_url, ca_file)
    url = reporter_url.rstrip("/") + BATCH_PATH
    backoff = FIRST_BACKOFF_SECONDS
    max_items = BATCH_MAX_ITEMS
    retrying_network = False  # the last retry was for a network failure (refused, reset)
    try:
        while queue:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Stop("delivery deadline of %.1f s reached" % deadline_seconds, retrying_network)
            batch = _take_batch(queue, max_items)
            try:
                results = _post(opener, url, [item[1] for item in batch], min(REQUEST_TIMEOUT_SECONDS, left))
            except _Retry as exc:
                retrying_network = exc.network
                if time.monotonic() + backoff >= deadline:
                    raise _Stop(str(exc), exc.network) from None
                time.sleep(backoff)
                backoff *= 2
                continue
            except _BatchTooLarge:
                if len(batch) == 1:
                    results = [{"status": 413, "code": "too_large", "message": "the reporter refused the size"}]
                else:
                    max_items = max(1, len(batch) // 2)
                    continue
            del queue[: len(batch)]
            _apply(spool, batch, results, report, log)
            retrying_network = False
    except _Stop as exc:
        report.stopped = str(exc)
        report.unreachable = exc.network
    report.remaining = len(spool.pending())
    return report


def deliver_bounded(spool: Spool, reporter_url: str, **options: Any) -> Optional[DeliveryReport]:
    """``deliver`` in a daemon thread, abandoned one second after its deadline.

    Socket timeouts do not cover name resolution; this bounds that too. None when abandoned
    (nothing is lost: files leave the outbox only after the reporter stored them)."""
    outcome: List[DeliveryReport] = []
    failure: List[Exception] = []

    def work() -> None:
        try:
            outcome.append(deliver(spool, reporter_url, **options))
        except Exception as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=work, name="bk-delivery", daemon=True)
    worker.start()
    worker.join(float(options.get("deadline_seconds", DEFAULT_DEADLINE_SECONDS)) + 1.0)
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


def reachable(reporter_url: str, timeout: float) -> bool:
    """Whether a TCP connection to the reporter's host and port opens within ``timeout`` seconds."""
    parsed = urllib.parse.urlsplit(reporter_url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class _BatchTooLarge(Exception):
    """413 for the whole request: send fewer envelopes at once."""


def _load_queue(
    spool: Spool, ready: Optional[Callable[[Dict[str, Any]], bool]], report: DeliveryReport, log: Callable[[str], None]
) -> List[Item]:
    queue: List[Item] = []
    for path in spool.pending():
        try:
            item = spool.read(path)
            doc = json.loads(item["manifest"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _reject(spool, path, "unreadable spool file: %s" % exc, report, log)
            continue
        if ready is None or ready(doc):
            queue.append((path, item))
    return queue


def _take_batch(queue: List[Item], max_items: int) -> List[Item]:
    batch: List[Item] = []
    size = 0
    for item in queue[:max_items]:
        item_size = len(item[1].get("manifest", "")) + len(item[1].get("signature", ""))
        if batch and size + item_size > BATCH_MAX_BYTES:
            break
        batch.append(item)
        size += item_size
    return batch


def _opener(reporter_url: str, ca_file: Optional[str]) -> urllib.request.OpenerDirector:
    # The reporter is reached directly: proxies from the environment are not used.
    handlers: List[Any] = [urllib.request.ProxyHandler({})]
    if reporter_url.startswith("https:"):
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file)))
    return urllib.request.build_opener(*handlers)


def _post(
    opener: urllib.request.OpenerDirector, url: str, envelopes: List[Dict[str, Any]], timeout: float
) -> List[Any]:
    body = json.dumps(envelopes).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=timeout) as response:
            payload = response.read(RESPONSE_MAX_BYTES)
    except urllib.error.HTTPError as exc:
        raise _request_status_error(exc.code, url) from None
    except urllib.error.URLError as exc:
        raise _classify_network_error(exc.reason, url) from None
    except OSError as exc:  # timeouts and resets while reading the answer
        raise _classify_network_error(exc, url) from None
    return _results(payload, len(envelopes))


def _request_status_error(status: int, url: str) -> Exception:
    if status == 413:
        return _BatchTooLarge()
    if status >= 500 or status in TRANSIENT_CLIENT_ERRORS:
        return _Retry("the reporter answered %d" % status)
    return _Stop("the reporter answered %d to the whole batch at %s (is the URL right?)" % (status, url))


def _classify_network_error(reason: Any, url: str) -> Exception:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _Stop("the reporter at %s did not answer in time" % url, network=True)
    if isinstance(reason, ssl.SSLError):
        return _Stop("TLS with the reporter at %s failed: %s" % (url, reason))
    if isinstance(reason, (ConnectionError, OSError)):
        return _Retry("cannot reach the reporter at %s: %s" % (url, reason), network=True)
    return _Stop("cannot reach the reporter at %s: %s" % (url, reason))


def _results(payload: bytes, expected: int) -> List[Any]:
    try:
        results = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Stop("the reporter's answer is not JSON") from None
    if not isinstance(results, list) or len(results) != expected:
        raise _Stop("the reporter's answer is not a list of %d results" % expected)
    return results


def _apply(
    spool: Spool, batch: List[Item], results: List[Any], report: DeliveryReport, log: Callable[[str], None]
) -> None:
    keep_reason = None
    for index, (path, _item) in enumerate(batch):
        result = results[index]
        status = result.get("status") if isinstance(result, dict) else None
        if status in STORED:
            spool.remove(path)
            report.delivered += 1
        elif isinstance(status, int) and 400 <= status < 500 and status not in TRANSIENT_CLIENT_ERRORS:
            reason = "%d %s: %s" % (status, result.get("code", ""), result.get("message", ""))
            _reject(spool, path, reason, report, log)
        else:
            keep_reason = keep_reason or "the reporter could not store %s now (%r)" % (path.name, status)
    if keep_reason:
        raise _Stop(keep_reason)


def _reject(spool: Spool, path: Path, reason: str, report: DeliveryReport, log: Callable[[str], None]) -> None:
    target = spool.reject(path, reason)
    report.rejected += 1
    log("bk: MANIFEST REJECTED, kept in %s: %s" % (target, reason))
