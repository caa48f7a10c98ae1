"""The reporter as the checks read it: its HTTP API, the signed manifests of its events, and their
signatures verified with stock ssh-keygen against the hosts' own keys. Subcommands reporter-up and
reporter-url.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bkmol_hosts import PODMAN, CheckFailed, Json, bk_config, text

NAMESPACE = "bk-manifest@v1"


# --- the reporter ---------------------------------------------------------------------------


class Reporter:
    """The reporter's HTTP API, at the URL the hosts deliver to.

    When the reporter's host is a container of this machine (the URL names it), the API is
    read directly at the container's address; otherwise through `curl` on the instance `via`.
    """

    def __init__(self, via: str, url: str | None = None) -> None:
        cfg = bk_config(via)
        self.via = via
        self.url = (url or cfg.get("reporter_url") or "").rstrip("/")
        self.ca_file = cfg.get("reporter_ca_file")
        if not self.url:
            raise CheckFailed(f"{via}: /etc/bk/bk.json has no reporter_url")
        self.direct = self._direct_url()

    def _direct_url(self) -> str | None:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme != "http" or not parsed.hostname:
            return None
        proc = subprocess.run([PODMAN, "inspect", parsed.hostname], capture_output=True, check=False)
        if proc.returncode != 0:
            return None
        networks = json.loads(proc.stdout)[0]["NetworkSettings"]["Networks"]
        addresses = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
        return f"http://{addresses[0]}:{parsed.port or 80}" if addresses else None

    def _curl(self) -> list[str]:
        argv = ["curl", "-sS", "--max-time", "20"]
        if self.ca_file and self.url.startswith("https:"):
            argv += ["--cacert", self.ca_file]
        return argv

    def _fetch(self, path: str) -> Any:
        assert self.direct
        try:
            with urllib.request.urlopen(self.direct + path, timeout=20) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise CheckFailed(f"GET {path}: {exc.code} {exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise CheckFailed(f"GET {path}: {exc}") from exc

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        path = path + ("?" + urllib.parse.urlencode(params) if params else "")
        if self.direct:
            return self._fetch(path)
        body = text(self.via, [*self._curl(), "--fail-with-body", self.url + path])
        return json.loads(body)

    def get_many(self, paths: Sequence[str]) -> list[Any]:
        """Several GETs (through one curl run when not direct: one document per line)."""
        if self.direct:
            return [self._fetch(p) for p in paths]
        config = "".join(f'url = "{self.url}{p}"\nwrite-out = "\\n"\n' for p in paths)
        lines = [
            line for line in text(self.via, [*self._curl(), "-K", "-"], stdin=config.encode()).splitlines() if line
        ]
        if len(lines) != len(paths):
            raise CheckFailed(f"asked the reporter for {len(paths)} documents, got {len(lines)}")
        return [json.loads(line) for line in lines]

    def events(self, host: str) -> list[Json]:
        """Every stored event of a host (all kinds) with its manifest text and signature.

        Events never change once stored, so their details are cached on disk by id.
        """
        listed: list[Json] = []
        params: dict[str, str] = {"host": host, "limit": "1000"}
        for _page in range(1000):
            page = self.get("/api/v1/events", params)
            listed.extend(page["events"])
            if not page.get("next_cursor"):
                break
            params = {"host": host, "limit": "1000", "cursor": page["next_cursor"]}
        cache = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY") or tempfile.gettempdir()) / "bkmol-events"
        cache.mkdir(parents=True, exist_ok=True)
        wanted = [e["id"] for e in listed if not (cache / f"{e['id']}.json").exists()]
        for start in range(0, len(wanted), 200):
            chunk = wanted[start : start + 200]
            for event_id, doc in zip(chunk, self.get_many([f"/api/v1/events/{i}" for i in chunk]), strict=True):
                if not isinstance(doc, dict) or "manifest" not in doc:
                    raise CheckFailed(f"event {event_id}: no manifest in the reporter's answer: {str(doc)[:300]}")
                (cache / f"{event_id}.json").write_text(json.dumps(doc))
        return [json.loads((cache / f"{e['id']}.json").read_text()) for e in listed]

    def hosts(self) -> Any:
        return self.get("/api/v1/hosts")


def _envelope_part(event: Json, part: str, keys: Sequence[str], what: str) -> str:
    """One part of a stored event's signed envelope ("manifest" or "signature"): the first of
    `keys` the event holds as a string, else the part inside its "envelope"."""
    for key in keys:
        value = event.get(key)
        if isinstance(value, str):
            return value
    envelope = event.get("envelope")
    if isinstance(envelope, dict) and isinstance(envelope.get(part), str):
        return envelope[part]
    raise CheckFailed(f"event without its {what}: keys {sorted(event)}")


def event_text(event: Json) -> str:
    """The exact signed manifest text of a stored event."""
    return _envelope_part(event, "manifest", ("manifest_text", "manifest", "text"), "manifest text")


def event_signature(event: Json) -> str:
    return _envelope_part(event, "signature", ("signature",), "signature")


def event_id(event: Json) -> str:
    try:
        return str(json.loads(event_text(event))["id"])
    except (CheckFailed, ValueError, KeyError):
        return str(event.get("id"))


def manifests(events: list[Json]) -> list[tuple[Json, str, str]]:
    """(document, text, signature) per event, ordered by seq."""
    out = [(json.loads(event_text(e)), event_text(e), event_signature(e)) for e in events]
    return sorted(out, key=lambda item: int(item[0].get("seq", 0)))


# --- signatures ---------------------------------------------------------------------------


def host_public_keys(host: str) -> list[str]:
    raw = text(host, ["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"], check=False)
    return [" ".join(line.split()[:2]) for line in raw.splitlines() if len(line.split()) >= 2]


def ssh_verify(message: str, signature: str, principal: str, keys: Sequence[str], workdir: Path) -> bool:
    """Verify with stock `ssh-keygen -Y verify` against the host's own public keys."""
    allowed = workdir / "allowed_signers"
    allowed.write_text("".join(f'{principal} namespaces="{NAMESPACE}" {k}\n' for k in keys))
    sig = workdir / "msg.sig"
    sig.write_text(signature)
    proc = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", NAMESPACE, "-s", str(sig)],
        input=message.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


# --- subcommand: reporter-up ------------------------------------------------------------------


def cmd_reporter_up(args: argparse.Namespace) -> Json:
    """Wait until the reporter answers GET /api/v1/hosts."""
    reporter = Reporter(args.via)
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            reporter.hosts()
            return {"url": reporter.url, "problems": []}
        except (CheckFailed, ValueError) as exc:
            last = str(exc)
            time.sleep(1)
    return {"url": reporter.url, "problems": [f"the reporter did not answer within {args.timeout} s: {last[-300:]}"]}


def cmd_reporter_url(args: argparse.Namespace) -> Json:
    """The reporter's URL as the hosts use it, and the same service at the container's address."""
    reporter = Reporter(args.via)
    parsed = urllib.parse.urlsplit(reporter.url)
    inspect = json.loads(
        subprocess.run([PODMAN, "inspect", args.reporter], capture_output=True, check=True).stdout.decode()
    )
    networks = inspect[0]["NetworkSettings"]["Networks"]
    address = (networks.get(args.network) or next(iter(networks.values())))["IPAddress"]
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return {
        "url": reporter.url,
        "direct_url": f"{parsed.scheme}://{address}:{port}",
        "address": address,
        "port": port,
        "ca_file": reporter.ca_file,
        "problems": [],
    }
