"""Evidence gathering and checks for the molecule scenario's verify step.

Runs on the machine (the molecule controller) and reaches the instances with
``podman exec``, so that secrets read from the hosts never pass through Ansible
module arguments or results (and so never reach a log). Every subcommand prints
one JSON object: what it saw, and ``problems``, a list of human sentences. The
exit status is 1 when ``problems`` is not empty, 0 otherwise; verify.yml asserts
on the JSON.

The checks read the hosts' own configuration as the runner contract
(docs/runner.md) defines it: /etc/bk/bk.json, /etc/bk/jobs/*.json,
/etc/bk/hub.json, /etc/bk/maintenance.json, /etc/bk/offsite/*.json, the chain
state and the spool. Nothing here knows the roles' variable names.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

PODMAN = os.environ.get("MOLECULE_PODMAN_EXECUTABLE") or "podman"
NAMESPACE = "bk-manifest@v1"
DROPIN_NAME = "zz-bk-molecule-fire.conf"

Json = dict[str, Any]


class CheckFailed(Exception):
    """A command on an instance failed in a way the check cannot continue from."""


# --- instances -----------------------------------------------------------------------------


SSH_CONFIG = os.environ.get("BKMOL_SSH_CONFIG")


def run(
    host: str,
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv on an instance; stdout and stderr are captured as bytes.

    Through SSH when BKMOL_SSH_CONFIG names an ssh_config for the instances (one multiplexed
    connection per instance: fast), else `podman exec`. `env` never reaches a command line:
    over SSH it is read by the remote shell from stdin, with podman it passes through
    podman's own environment (`podman exec --env NAME`).
    """
    if SSH_CONFIG and Path(SSH_CONFIG).is_file() and not (env and stdin):
        remote = shlex.join(argv)
        if env:
            stdin = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())).encode()
            remote = f'eval "$(cat)" && exec {remote}'
        cmd = [
            "ssh",
            "-F",
            SSH_CONFIG,
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=120s",
            "-o",
            "ControlPath=/tmp/bkmol-%C",
            "-o",
            "BatchMode=yes",
            host,
            remote,
        ]
        proc_env = None
    else:
        names = sorted(env or {})
        cmd = [PODMAN, "exec", "-i", *(f"--env={name}" for name in names), host, *argv]
        proc_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, input=stdin or b"", capture_output=True, timeout=timeout, check=False, env=proc_env)
    if check and proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-2000:]
        raise CheckFailed(f"{host}: {shlex.join(argv)} exited {proc.returncode}: {tail}")
    return proc


def text(host: str, argv: Sequence[str], **kwargs: Any) -> str:
    return run(host, argv, **kwargs).stdout.decode("utf-8", "replace")


def read_file(host: str, path: str) -> str | None:
    proc = run(host, ["cat", "--", path], check=False)
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def read_json(host: str, path: str, default: Any = None) -> Any:
    raw = read_file(host, path)
    if raw is None:
        return default
    return json.loads(raw)


def list_dir(host: str, path: str) -> list[str]:
    proc = run(host, ["find", path, "-mindepth", "1", "-maxdepth", "1", "-printf", "%f\\n"], check=False)
    if proc.returncode != 0:
        return []
    return sorted(line for line in proc.stdout.decode().splitlines() if line)


_CONFIGS: dict[str, Json] = {}


def bk_config(host: str) -> Json:
    """/etc/bk/bk.json of a host (read once per run: configuration does not change under verify)."""
    if host not in _CONFIGS:
        cfg = read_json(host, "/etc/bk/bk.json", {})
        _CONFIGS[host] = cfg if isinstance(cfg, dict) else {}
    return _CONFIGS[host]


def state_dir(host: str) -> str:
    return bk_config(host).get("state_dir") or "/var/lib/bk"


def spool_dir(host: str) -> str:
    return bk_config(host).get("spool_dir") or "/var/spool/bk"


def jobs(host: str) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for name in list_dir(host, "/etc/bk/jobs"):
        if name.endswith(".json"):
            doc = read_json(host, f"/etc/bk/jobs/{name}")
            if isinstance(doc, dict):
                out[name[: -len(".json")]] = doc
    return out


def show(host: str, unit: str, props: Iterable[str]) -> dict[str, str]:
    return show_many(host, [unit], props)[unit]


def show_many(host: str, units: Sequence[str], props: Iterable[str], *, utc: bool = False) -> dict[str, dict[str, str]]:
    """`systemctl show` of several units in one call, by unit name."""
    props = ["Id", *props]
    flags = ["--timestamp=us+utc"] if utc else []
    argv = ["systemctl", "show", *flags, *(f"--property={p}" for p in props), "--", *units]
    blocks = text(host, argv).split("\n\n")
    result: dict[str, dict[str, str]] = {}
    for unit, block in zip(units, blocks, strict=False):
        values: dict[str, str] = {}
        for line in block.splitlines():
            key, _sep, value = line.partition("=")
            values[key] = value
        result[unit] = values
    return result


def systemd_time(value: str) -> float:
    """Epoch seconds of a systemd timestamp as `systemctl show` prints it (UTC hosts)."""
    value = value.strip()
    if not value or value == "n/a":
        return 0.0
    for fmt in ("%a %Y-%m-%d %H:%M:%S.%f %Z", "%a %Y-%m-%d %H:%M:%S %Z"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    raise CheckFailed(f"cannot parse systemd timestamp {value!r}")


def exec_argv(exec_start: str) -> list[str]:
    """The argv of the first command in a `systemctl show -p ExecStart` value."""
    match = re.search(r"argv\[\]=(.*?) ;", exec_start)
    return shlex.split(match.group(1)) if match else []


def bk_units(host: str) -> Json:
    """Timers and services of bk on a host, by what their service runs (runner contract).

    {"timers": {timer: {"service": s, "argv": [...]}},
     "backup": {job: {"timer": t, "service": s}}, "check": {...}, "offsite": {dest: {...}},
     "receipts": {...} | None, "maintain": {...} | None, "flush": {...} | None,
     "services": {service: argv}}
    """
    listing = text(host, ["systemctl", "list-unit-files", "--no-legend", "--plain", "--type=service,timer"])
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    names = [n for n in names if "bk" in n and "@." not in n]
    services: dict[str, list[str]] = {}
    timers: dict[str, Json] = {}
    service_names = [n for n in names if n.endswith(".service")]
    timer_names = [n for n in names if n.endswith(".timer")]
    for name, props in (show_many(host, service_names, ["ExecStart"]) if service_names else {}).items():
        argv = exec_argv(props.get("ExecStart", ""))
        if any(Path(a).name in {"bk-run", "bk-reporter"} or "bk_run" in a for a in argv[:3]):
            services[name] = argv
    for name, props in (show_many(host, timer_names, ["Triggers"]) if timer_names else {}).items():
        for service in props.get("Triggers", "").split():
            if service in services:
                timers[name] = {"service": service, "argv": services[service]}
    result: Json = {"services": services, "timers": timers, "backup": {}, "check": {}, "offsite": {}}
    for service, argv in services.items():
        words = [a for a in argv if not a.startswith("-")]
        timer = next((t for t, v in timers.items() if v["service"] == service), None)
        entry = {"service": service, "timer": timer}
        for verb in ("backup", "check", "offsite"):
            if verb in words and words.index(verb) + 1 < len(words):
                result[verb][words[words.index(verb) + 1]] = entry
        for verb in ("receipts", "maintain", "flush"):
            if verb in words:
                result[verb] = entry
        if "serve" in words and any(Path(a).name == "bk-reporter" for a in argv):
            result["reporter"] = entry
    return result


def monotonic_usec(host: str) -> int:
    """CLOCK_MONOTONIC of the instance (shared with the machine's kernel), in microseconds."""
    raw = text(host, ["python3", "-c", "import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)"])
    return int(raw.strip())


def wait_for_run(host: str, service: str, after_usec: int, timeout: float) -> dict[str, str]:
    """Wait until a oneshot service started after `after_usec` (monotonic) has finished."""
    props = [
        "ActiveState",
        "Result",
        "ExecMainStatus",
        "ExecMainStartTimestamp",
        "ExecMainStartTimestampMonotonic",
        "ExecMainExitTimestamp",
        "ExecMainExitTimestampMonotonic",
        "InvocationID",
        "TriggeredBy",
    ]
    deadline = time.monotonic() + timeout
    while True:
        state = show(host, service, props)
        started = int(state.get("ExecMainStartTimestampMonotonic") or 0)
        exited = int(state.get("ExecMainExitTimestampMonotonic") or 0)
        if started > after_usec and exited >= started and state.get("ActiveState") in {"inactive", "failed"}:
            return state
        if time.monotonic() > deadline:
            raise CheckFailed(f"{host}: {service} did not run to completion within {timeout:.0f} s: {state}")
        time.sleep(1)


def journal(host: str, unit: str, invocation: str | None = None) -> list[str]:
    argv = ["journalctl", "--no-pager", "-q", "-o", "short-iso", "-u", unit]
    if invocation:
        # The service's own lines, and systemd's lines about this run of it.
        argv = [
            "journalctl",
            "--no-pager",
            "-q",
            "-o",
            "short-iso",
            f"_SYSTEMD_INVOCATION_ID={invocation}",
            "+",
            f"INVOCATION_ID={invocation}",
        ]
    return text(host, argv, check=False).splitlines()


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


def event_text(event: Json) -> str:
    """The exact signed manifest text of a stored event."""
    for key in ("manifest_text", "manifest", "text"):
        value = event.get(key)
        if isinstance(value, str):
            return value
    envelope = event.get("envelope")
    if isinstance(envelope, dict) and isinstance(envelope.get("manifest"), str):
        return envelope["manifest"]
    raise CheckFailed(f"event without its manifest text: keys {sorted(event)}")


def event_signature(event: Json) -> str:
    for key in ("signature",):
        value = event.get(key)
        if isinstance(value, str):
            return value
    envelope = event.get("envelope")
    if isinstance(envelope, dict) and isinstance(envelope.get("signature"), str):
        return envelope["signature"]
    raise CheckFailed(f"event without its signature: keys {sorted(event)}")


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


# --- subcommand: chain ------------------------------------------------------------------------


def chain_report(reporter: Reporter, host: str, workdir: Path) -> Json:
    """The reporter's copy of one host's chain, checked against the host itself."""
    problems: list[str] = []
    state = read_json(host, f"{state_dir(host)}/chain.json", {}) or {}
    made = int(state.get("seq") or 0)
    outbox = [n for n in list_dir(host, f"{spool_dir(host)}/outbox") if n.endswith(".json")]
    rejected = [n for n in list_dir(host, f"{spool_dir(host)}/rejected") if n.endswith(".json")]
    keys = host_public_keys(host)
    stored = manifests(reporter.events(host))
    seqs = [int(doc["seq"]) for doc, _text, _sig in stored]
    ids = [str(doc["id"]) for doc, _text, _sig in stored]
    pending_seqs = sorted(int(n.split("-", 1)[0]) for n in outbox if n.split("-", 1)[0].isdigit())
    if len(set(ids)) != len(ids):
        problems.append(f"{host}: duplicate manifest ids stored")
    if len(set(seqs)) != len(seqs):
        problems.append(f"{host}: duplicate seq stored")
    expected_stored = [s for s in range(1, made + 1) if s not in pending_seqs]
    if sorted(seqs) != expected_stored:
        missing = sorted(set(expected_stored) - set(seqs))
        extra = sorted(set(seqs) - set(expected_stored))
        problems.append(
            f"{host}: made {made} manifests, {len(pending_seqs)} in the outbox, reporter holds {len(seqs)}; "
            f"missing seq {missing[:20]}, unexpected seq {extra[:20]}"
        )
    if rejected:
        problems.append(f"{host}: {len(rejected)} manifests were rejected by the reporter: {rejected[:5]}")
    previous: tuple[int, str] | None = None
    bad_signatures = []
    for doc, body, signature in stored:
        if doc.get("host") != host:
            problems.append(f"{host}: stored manifest {doc.get('id')} names host {doc.get('host')}")
        if not ssh_verify(body, signature, host, keys, workdir):
            bad_signatures.append(int(doc["seq"]))
        seq = int(doc["seq"])
        if seq == 1 and doc.get("prev") is not None:
            problems.append(f"{host}: seq 1 has prev {doc.get('prev')}")
        if previous and previous[0] == seq - 1:
            want = hashlib.sha256(previous[1].encode("utf-8")).hexdigest()
            if doc.get("prev") != want:
                problems.append(f"{host}: seq {seq} prev does not hash seq {seq - 1}")
        previous = (seq, body)
    if bad_signatures:
        problems.append(f"{host}: signatures that do not verify with the host's own keys: seq {bad_signatures[:20]}")
    if stored and made and max(seqs) == made and state.get("last_sha256"):
        last_text = stored[-1][1]
        if hashlib.sha256(last_text.encode("utf-8")).hexdigest() != state["last_sha256"]:
            problems.append(f"{host}: the reporter's last manifest is not the one the host chained last")
    kinds: dict[str, int] = {}
    for doc, _text, _sig in stored:
        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
    return {
        "host": host,
        "made": made,
        "stored": len(stored),
        "outbox": len(outbox),
        "rejected": len(rejected),
        "signatures_verified": len(stored) - len(bad_signatures),
        "host_keys": len(keys),
        "kinds": kinds,
        "problems": problems,
    }


def cmd_chain(args: argparse.Namespace) -> Json:
    reporter = Reporter(args.via)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for host in args.hosts:
            reports.append(chain_report(reporter, host, Path(tmp)))
    problems = [p for r in reports for p in r["problems"]]
    if args.expect_empty_outbox:
        problems += [f"{r['host']}: {r['outbox']} manifests still wait in the outbox" for r in reports if r["outbox"]]
    return {"hosts": reports, "problems": problems}


# --- subcommand: receipts --------------------------------------------------------------------


def repo_name_from_url(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def cmd_receipts(args: argparse.Namespace) -> Json:
    """Every snapshot a client claims (backup manifests) is confirmed by a signed hub receipt."""
    reporter = Reporter(args.via)
    problems: list[str] = []
    received: dict[str, set[str]] = {}
    for doc, _text, _sig in manifests(reporter.events(args.hub)):
        if doc.get("kind") == "hub-receipt":
            repo = (doc.get("repository") or {}).get("name", "")
            for snap in (doc.get("receipt") or {}).get("snapshots", []):
                received.setdefault(repo, set()).add(snap["id"])
    claims = []
    for client in args.clients:
        for doc, _text, _sig in manifests(reporter.events(client)):
            snap = (doc.get("snapshot") or {}).get("id")
            if doc.get("kind") != "backup" or not snap:
                continue
            repo = doc.get("repository") or {}
            if repo.get("name") != args.repository_label:
                continue
            hub_repo = repo_name_from_url(repo.get("url", ""))
            confirmed = snap in received.get(hub_repo, set())
            claims.append({"host": client, "job": doc.get("job"), "snapshot": snap, "confirmed": confirmed})
            if not confirmed:
                problems.append(f"{client}: snapshot {snap[:12]} ({doc.get('job')}) has no hub receipt in {hub_repo}")
    for client in args.clients:
        if not any(c["host"] == client for c in claims):
            problems.append(f"{client}: no backup manifest with a snapshot in repository {args.repository_label!r}")
    return {"claims": claims, "receipts": {k: len(v) for k, v in received.items()}, "problems": problems}


# --- subcommand: fire (a timer fires its service) ------------------------------------------------


def cmd_fire(args: argparse.Namespace) -> Json:
    """Fire HOST:TIMER pairs: hosts in parallel, the timers of one host one after the other."""
    by_host: dict[str, list[str]] = {}
    for pair in args.pairs:
        host, _sep, timer = pair.partition(":")
        by_host.setdefault(host, []).append(timer)

    def fire_host(host: str) -> list[Json]:
        out = []
        for timer in by_host[host]:
            try:
                out.append(fire_one(host, timer, args.timeout, args.expect))
            except CheckFailed as exc:
                out.append({"host": host, "timer": timer, "problems": [str(exc)]})
        return out

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(by_host) or 1) as pool:
        runs = [r for results in pool.map(fire_host, by_host) for r in results]
    summary = [
        f"{r['host']} {r['timer']} -> {r.get('service')}: {r.get('result', 'failed')}, started "
        f"{r.get('seconds_from_trigger_to_start')} s after the trigger, ran {r.get('duration_seconds')} s"
        for r in runs
    ]
    return {
        "summary": summary,
        "runs": runs,
        "fired": {f"{r['host']}:{r['timer']}": r for r in runs},
        "problems": [p for r in runs for p in r["problems"]],
    }


def fire_one(host: str, timer: str, timeout: float, expect: str) -> Json:
    """Make a bk timer elapse now (runtime drop-in OnActiveSec=1s) and wait for its service run.

    The unit files the role wrote are untouched: a runtime drop-in in /run adds one
    trigger, and is removed again after the run.
    """
    service = show(host, timer, ["Triggers"]).get("Triggers", "").split()[0]
    before = monotonic_usec(host)
    fired_at = float(text(host, ["date", "+%s.%N"]).strip())
    dropin_dir = f"/run/systemd/system/{timer}.d"
    dropin = "[Timer]\nOnActiveSec=1s\nAccuracySec=1ms\nRandomizedDelaySec=0\n"
    run(host, ["mkdir", "-p", dropin_dir])
    run(host, ["tee", f"{dropin_dir}/{DROPIN_NAME}"], stdin=dropin.encode())
    run(host, ["systemctl", "daemon-reload"])
    run(host, ["systemctl", "restart", timer])
    try:
        state = wait_for_run(host, service, before, timeout)
        # Read the trigger before the timer restarts: a timer without Persistent=true
        # forgets its last trigger when restarted.
        triggered_state = show(host, timer, ["LastTriggerUSec"])
    finally:
        run(host, ["rm", "-f", f"{dropin_dir}/{DROPIN_NAME}"])
        run(host, ["rmdir", "--ignore-fail-on-non-empty", dropin_dir], check=False)
        run(host, ["systemctl", "daemon-reload"])
        run(host, ["systemctl", "restart", timer])
    timer_state = {**show(host, timer, ["ActiveState", "Triggers"]), **triggered_state}
    start_utc = show_many(host, [service], ["ExecMainStartTimestamp"], utc=True)[service]["ExecMainStartTimestamp"]
    triggered = systemd_time(timer_state.get("LastTriggerUSec", ""))
    started_at = systemd_time(start_utc)
    started = int(state["ExecMainStartTimestampMonotonic"])
    problems = []
    # LastTriggerUSec is shown to the second (rounded): allow that second on either side.
    if not (fired_at - 1 <= triggered <= started_at + 1):
        problems.append(
            f"{host}: {timer} did not trigger {service}: fired {fired_at:.3f}, "
            f"last trigger {timer_state.get('LastTriggerUSec')}, service start {start_utc}"
        )
    if started_at - triggered > 5:
        problems.append(f"{host}: {service} started {started_at - triggered:.1f} s after {timer} elapsed")
    if timer not in state.get("TriggeredBy", "").split():
        problems.append(f"{host}: {service} is not triggered by {timer}: {state.get('TriggeredBy')}")
    if expect == "success" and (state["Result"] != "success" or state["ExecMainStatus"] != "0"):
        problems.append(f"{host}: {service} failed: Result={state['Result']} status={state['ExecMainStatus']}")
    lines = journal(host, service, state.get("InvocationID"))
    if timer_state.get("ActiveState") != "active":
        problems.append(f"{host}: {timer} is {timer_state.get('ActiveState')} after the run")
    return {
        "host": host,
        "timer": timer,
        "service": service,
        "fired_at_epoch": fired_at,
        "timer_last_trigger": timer_state.get("LastTriggerUSec"),
        "service_started": state["ExecMainStartTimestamp"],
        "service_exited": state["ExecMainExitTimestamp"],
        "seconds_from_trigger_to_start": round(started_at - triggered, 3),
        "duration_seconds": round((int(state["ExecMainExitTimestampMonotonic"]) - started) / 1e6, 3),
        "result": state["Result"],
        "exit_status": int(state["ExecMainStatus"] or -1),
        "invocation": state.get("InvocationID"),
        "journal": lines[-15:],
        "problems": problems,
    }


# --- subcommand: units -------------------------------------------------------------------------


def cmd_units(args: argparse.Namespace) -> Json:
    """bk units per host, plus flat lists of what verify fires: backup jobs, the hub's services."""
    per_host = {host: bk_units(host) for host in args.hosts}
    flat: dict[str, list[Json]] = {"backup": [], "check": [], "offsite": []}
    for host, units in per_host.items():
        configs = jobs(host) if units["backup"] else {}
        for verb, entries in flat.items():
            for name, entry in sorted(units[verb].items()):
                extra = {"dump": bool((configs.get(name) or {}).get("dump"))} if verb == "backup" else {}
                entries.append({"host": host, "name": name, "pair": f"{host}:{entry['timer']}", **entry, **extra})
    singles = {
        verb: [{"host": h, "pair": f"{h}:{u[verb]['timer']}", **u[verb]} for h, u in per_host.items() if u.get(verb)]
        for verb in ("receipts", "maintain", "flush", "reporter")
    }
    problems = [f"{e['host']}: {e['service']} has no timer" for e in flat["backup"] if not e["timer"]]
    return {"hosts": per_host, **flat, **singles, "problems": problems}


# --- subcommand: state (chain, spool, runs) -----------------------------------------------------


def cmd_state(args: argparse.Namespace) -> Json:
    host = args.host
    state = read_json(host, f"{state_dir(host)}/chain.json", {}) or {}
    outbox = [n for n in list_dir(host, f"{spool_dir(host)}/outbox") if n.endswith(".json")]
    pending = []
    for name in outbox:
        envelope = read_json(host, f"{spool_dir(host)}/outbox/{name}", {})
        doc = json.loads(envelope.get("manifest", "{}")) if isinstance(envelope, dict) else {}
        snapshot = doc.get("snapshot") or {}
        pending.append(
            {
                "file": name,
                "seq": doc.get("seq"),
                "kind": doc.get("kind"),
                "status": doc.get("status"),
                "snapshot": snapshot.get("id"),
            }
        )
    return {
        "host": host,
        "seq": int(state.get("seq") or 0),
        "outbox": pending,
        "rejected": [n for n in list_dir(host, f"{spool_dir(host)}/rejected") if n.endswith(".json")],
        "runs": read_json(host, f"{state_dir(host)}/runs.json", {}),
        "problems": [],
    }


# --- subcommand: snapshots ---------------------------------------------------------------------


def restic_json(host: str, env: dict[str, str], argv: Sequence[str], timeout: float = 600) -> Any:
    proc = run(host, ["restic", "--no-lock", *argv, "--json"], env=env, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise CheckFailed(f"{host}: restic {' '.join(argv)} failed: {proc.stderr.decode()[-1500:]}")
    out = proc.stdout.decode().strip()
    if not out:
        return None
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        # Some commands (`ls`) print one JSON document per line.
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def job_repo_env(host: str, job: str, label: str) -> dict[str, str]:
    doc = jobs(host)[job]
    repo = next(r for r in doc["repositories"] if r["name"] == label)
    return {"RESTIC_REPOSITORY_FILE": repo["repository_file"], "RESTIC_PASSWORD_FILE": repo["password_file"]}


def maintenance_repo(hub: str, name: str) -> Json:
    cfg = read_json(hub, "/etc/bk/maintenance.json", {}) or {}
    for repo in cfg.get("repositories", []):
        if repo.get("name") == name:
            return repo
    raise CheckFailed(f"{hub}: /etc/bk/maintenance.json has no repository {name!r}")


def maintenance_env(hub: str, name: str) -> dict[str, str]:
    repo = maintenance_repo(hub, name)
    return {"RESTIC_REPOSITORY_FILE": repo["repository_file"], "RESTIC_PASSWORD_FILE": repo["password_file"]}


def hub_data_dir(hub: str) -> str:
    cfg = read_json(hub, "/etc/bk/hub.json", {}) or {}
    return cfg.get("data_dir") or "/srv/bk-hub"


def cmd_snapshots(args: argparse.Namespace) -> Json:
    """Snapshots of a client's job as the client sees them, and the hub's snapshot files."""
    env = job_repo_env(args.host, args.job, args.repository_label)
    snaps = restic_json(args.host, env, ["snapshots"]) or []
    cfg = jobs(args.host)[args.job]
    url = read_file(args.host, env["RESTIC_REPOSITORY_FILE"]) or ""
    hub_repo = repo_name_from_url(url.strip())
    on_hub = list_dir(args.hub, f"{hub_data_dir(args.hub)}/{hub_repo}/snapshots")
    problems = [
        f"{args.host}: snapshot {s['id'][:12]} is not in {hub_repo}/snapshots on {args.hub}"
        for s in snaps
        if s["id"] not in on_hub
    ]
    newer = [s for s in snaps if parse_time(s["time"]).timestamp() >= args.newer_than]
    if not newer:
        problems.append(f"{args.host}: no snapshot of job {args.job} newer than {args.newer_than}")
    return {
        "host": args.host,
        "job": args.job,
        "paths": cfg.get("paths"),
        "hub_repository": hub_repo,
        "snapshots": [
            {"id": s["id"], "time": s["time"], "paths": s.get("paths"), "tags": s.get("tags")} for s in snaps
        ],
        "latest": max(snaps, key=lambda s: s["time"])["id"] if snaps else None,
        "newer_than": [s["id"] for s in newer],
        "hub_snapshot_files": on_hub,
        "problems": problems,
    }


# --- subcommand: append-only ---------------------------------------------------------------------


def cmd_append_only(args: argparse.Namespace) -> Json:
    """A client cannot forget its own snapshot, nor read another client's repository."""
    host, other = args.host, args.other
    env = job_repo_env(host, args.job, args.repository_label)
    before = restic_json(host, env, ["snapshots"]) or []
    problems: list[str] = []
    if not before:
        return {"problems": [f"{host}: no snapshot to try forgetting"]}
    victim = max(before, key=lambda s: s["time"])["id"]
    started = time.monotonic()
    forget = run(host, ["restic", "forget", victim], env=env, check=False, timeout=300)
    forget_seconds = time.monotonic() - started
    forget_err = forget.stderr.decode("utf-8", "replace")
    if forget.returncode == 0:
        problems.append(f"{host}: restic forget {victim[:12]} succeeded against the append-only hub")
    if "403" not in forget_err and "Forbidden" not in forget_err:
        problems.append(f"{host}: restic forget failed but not with 403 Forbidden: {forget_err[-400:]}")
    after = restic_json(host, env, ["snapshots"]) or []
    if victim not in {s["id"] for s in after}:
        problems.append(f"{host}: snapshot {victim[:12]} is gone after the refused forget")
    url = (read_file(host, env["RESTIC_REPOSITORY_FILE"]) or "").strip()
    own = repo_name_from_url(url)
    foreign_url = url.rstrip("/")[: -len(own)] + other + "/"
    # restic with this client's credentials against the other client's repository; the URL
    # goes through a 0600 file, as the runner passes it.
    scratch = "/run/bk-molecule-foreign.repository"
    run(host, ["install", "-m", "0600", "/dev/stdin", scratch], stdin=foreign_url.encode())
    foreign = run(
        host,
        ["restic", "--no-lock", "snapshots"],
        env={"RESTIC_REPOSITORY_FILE": scratch, "RESTIC_PASSWORD_FILE": env["RESTIC_PASSWORD_FILE"]},
        check=False,
        timeout=300,
    )
    run(host, ["rm", "-f", scratch])
    foreign_err = foreign.stderr.decode("utf-8", "replace").replace(url, "<own url>").replace(foreign_url, "<url>")
    if foreign.returncode == 0:
        problems.append(f"{host}: could list snapshots of {other}'s repository")
    # The raw REST protocol too: the other repository's config file and snapshot listing,
    # with the credential in a curl config read from stdin.
    parsed = urllib.parse.urlsplit(foreign_url.removeprefix("rest:"))
    netloc = (parsed.hostname or "") + (f":{parsed.port}" if parsed.port else "")
    user = f"{urllib.parse.unquote(parsed.username or '')}:{urllib.parse.unquote(parsed.password or '')}"
    codes = {}
    for path in ("config", "snapshots/"):
        target = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path + path, "", ""))
        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "-K", "-"]
        proc = run(host, curl, stdin=f'url = "{target}"\nuser = "{user}"\n'.encode(), check=False)
        codes[path] = proc.stdout.decode().strip()
    # rclone serve restic answers 403, rest-server 401: both refuse.
    if any(code not in ("401", "403") for code in codes.values()):
        answers = f"{codes} (want 401 or 403)"
        problems.append(f"{host}: HTTP answers for {other}'s repository with {host}'s credential: {answers}")
    return {
        "host": host,
        "forget_snapshot": victim,
        "forget_exit": forget.returncode,
        "forget_seconds": round(forget_seconds, 1),
        "forget_error": forget_err.strip().splitlines()[-3:],
        "snapshot_still_there": victim in {s["id"] for s in after},
        "other": other,
        "foreign_restic_exit": foreign.returncode,
        "foreign_restic_error": foreign_err.strip().splitlines()[-2:],
        "foreign_http": codes,
        "problems": problems,
    }


# --- subcommand: tree (sha256 of every file under paths) -------------------------------------------

TREE_SCRIPT = r"""
import hashlib, json, os, stat, sys
root, exclude_caches, subs = sys.argv[1], sys.argv[2] == "exclude-caches", sys.argv[3:]
TAG = b"Signature: 8a477f597d28d172789f06886806bc55"

def tagged(directory):
    try:
        with open(os.path.join(directory, "CACHEDIR.TAG"), "rb") as f:
            return f.read(len(TAG)) == TAG
    except OSError:
        return False

out = {}
for sub in subs or [""]:
    base = os.path.join(root, sub.lstrip("/")) if sub else root
    if os.path.islink(base) or os.path.isfile(base):
        walk = [(os.path.dirname(base), [], [os.path.basename(base)])]
    else:
        walk = os.walk(base)
    for dirpath, dirnames, filenames in walk:
        dirnames.sort()
        if exclude_caches and tagged(dirpath):
            # restic --exclude-caches keeps the tag file and nothing else of the directory
            dirnames[:] = []
            filenames = ["CACHEDIR.TAG"]
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = "%o:%s" % (stat.S_IMODE(st.st_mode), h.hexdigest())
print(json.dumps(out))
"""


def tree(host: str, root: str, subs: Sequence[str] = (), *, exclude_caches: bool = False) -> dict[str, str]:
    """sha256 and mode of every file (target of every link) under root, or under root/SUB..."""
    flag = "exclude-caches" if exclude_caches else "all"
    return json.loads(text(host, ["python3", "-c", TREE_SCRIPT, root, flag, *subs]))


def compare_trees(a: dict[str, str], b: dict[str, str], label: str) -> list[str]:
    problems = []
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    if missing:
        problems.append(f"{label}: missing {missing[:10]}")
    if extra:
        problems.append(f"{label}: unexpected {extra[:10]}")
    if differ:
        problems.append(f"{label}: content or mode differs for {differ[:10]}")
    if not a:
        problems.append(f"{label}: the source has no files")
    return problems


def cmd_compare(args: argparse.Namespace) -> Json:
    """Compare files under SRC_HOST:SRC_ROOT/SUB with DST_HOST:DST_ROOT/SUB (sha256 and mode)."""
    src = tree(args.src_host, args.src_root, args.sub)
    # --exclusive: the destination holds the selected paths and nothing else.
    dst = tree(args.dst_host, args.dst_root, () if args.exclusive else args.sub)
    return {
        "files": sum(1 for v in src.values() if not v.startswith("link:")),
        "links": sum(1 for v in src.values() if v.startswith("link:")),
        "problems": compare_trees(src, dst, f"{args.dst_host}:{args.dst_root}"),
    }


# --- subcommand: offsite ----------------------------------------------------------------------


def rclone_conf(hub: str, path: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in (read_file(hub, path) or "").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith(("#", ";")):
            key, _sep, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def offsite_repository(hub: str, dest: Json, repo: str) -> tuple[str, dict[str, str]]:
    """The restic repository URL and environment that read the offsite copy of `repo` directly."""
    remote = dest["remote"].rstrip("/")
    name, _sep, rest = remote.partition(":")
    conf = rclone_conf(hub, dest["rclone_config"]).get(name, {})
    kind = conf.get("type", "local" if not rest else "")
    if kind == "alias":
        target = conf.get("remote", "")
        return offsite_repository(hub, dict(dest, remote=target + ("/" if rest else "") + rest), repo)
    if kind == "local" or remote.startswith("/"):
        path = rest if ":" in remote else remote
        return f"{path}/{repo}", {}
    if kind == "s3":
        endpoint = conf["endpoint"].rstrip("/")
        env = {
            "AWS_ACCESS_KEY_ID": conf.get("access_key_id", ""),
            "AWS_SECRET_ACCESS_KEY": conf.get("secret_access_key", ""),
        }
        if conf.get("region"):
            env["AWS_DEFAULT_REGION"] = conf["region"]
        return f"s3:{endpoint}/{rest.strip('/')}/{repo}", env
    raise CheckFailed(f"{hub}: offsite remote type {kind!r} is not readable by this check")


def latest_offsite_manifest(reporter: Reporter, hub: str, destination: str, repo: str) -> Json | None:
    found = [
        doc
        for doc, _text, _sig in manifests(reporter.events(hub))
        if doc.get("kind") == "offsite-copy"
        and (doc.get("repository") or {}).get("name") == repo
        and (doc.get("offsite") or {}).get("destination") == destination
    ]
    return max(found, key=lambda d: int(d["seq"])) if found else None


def cmd_offsite(args: argparse.Namespace) -> Json:
    """Read an offsite copy with restic directly: list, check --read-data, restore, compare."""
    hub = args.hub
    dest = read_json(hub, f"/etc/bk/offsite/{args.destination}.json")
    if not isinstance(dest, dict):
        raise CheckFailed(f"{hub}: no /etc/bk/offsite/{args.destination}.json")
    reporter = Reporter(args.via) if args.via else None
    problems: list[str] = []
    repos = []
    for client in args.clients:
        env_hub = maintenance_env(hub, client)
        hub_snaps = {s["id"] for s in restic_json(hub, env_hub, ["snapshots"]) or []}
        url, env = offsite_repository(hub, dest, client)
        env = {**env, "RESTIC_REPOSITORY": url, "RESTIC_PASSWORD_FILE": env_hub["RESTIC_PASSWORD_FILE"]}
        snaps = restic_json(hub, env, ["snapshots"]) or []
        ids = {s["id"] for s in snaps}
        where = f"{args.destination}/{client}"
        if not hub_snaps <= ids:
            problems.append(f"{where}: snapshots on the hub missing offsite: {sorted(hub_snaps - ids)[:5]}")
        if reporter:
            doc = latest_offsite_manifest(reporter, hub, args.destination, client)
            if doc is None:
                problems.append(f"{where}: the reporter has no offsite-copy manifest")
            elif set(doc["offsite"].get("snapshots") or []) != ids or doc.get("status") != "success":
                problems.append(f"{where}: the offsite-copy manifest ({doc.get('status')}) lists other snapshots")
        check = run(hub, ["restic", "--no-lock", "check", "--read-data"], env=env, check=False, timeout=900)
        check_out = check.stdout.decode("utf-8", "replace")
        if check.returncode != 0 or "no errors were found" not in check_out:
            problems.append(
                f"{where}: restic check --read-data: exit {check.returncode}: "
                f"{check_out[-300:]} {check.stderr.decode()[-300:]}"
            )
        compared = 0
        file_jobs = {name: cfg for name, cfg in jobs(client).items() if cfg.get("paths") and not cfg.get("dump")}
        for job, cfg in file_jobs.items():
            own = [s for s in snaps if sorted(s.get("paths") or []) == sorted(cfg["paths"])]
            if not own:
                problems.append(f"{where}: no offsite snapshot of job {job}")
                continue
            latest = max(own, key=lambda s: s["time"])
            target = f"/var/tmp/bk-molecule/offsite-{args.destination}-{client}-{job}"
            run(hub, ["rm", "-rf", target])
            restore = run(
                hub,
                ["restic", "--no-lock", "restore", latest["id"], "--target", target],
                env=env,
                check=False,
                timeout=900,
            )
            if restore.returncode != 0:
                problems.append(f"{where}: restore failed: {restore.stderr.decode()[-300:]}")
            else:
                for path in cfg["paths"]:
                    # What the job backs up: its exclude_caches applied to the source.
                    src = tree(client, path, exclude_caches=bool(cfg.get("exclude_caches")))
                    dst = tree(hub, target + path)
                    compared += sum(1 for v in src.values() if not v.startswith("link:"))
                    problems += compare_trees(src, dst, f"{where}:{path}")
            run(hub, ["rm", "-rf", target])
        repos.append(
            {
                "repository": client,
                "url": re.sub(r"//[^/@]*@", "//", url),
                "snapshots_offsite": len(ids),
                "snapshots_on_hub": len(hub_snaps),
                "check_read_data": check.returncode == 0,
                "files_restored_identical": compared,
            }
        )
    if not any(r["files_restored_identical"] for r in repos):
        problems.append(f"no file of any client was restored from {args.destination} and compared")
    return {"destination": args.destination, "mode": dest.get("mode"), "repositories": repos, "problems": problems}


def cmd_offsite_keeps(args: argparse.Namespace) -> Json:
    """Snapshots the hub's retention removed are still at the destination (copy never deletes)."""
    hub = args.hub
    dest = read_json(hub, f"/etc/bk/offsite/{args.destination}.json") or {}
    plan = json.loads(Path(args.state).read_text())
    problems = []
    result = {}
    for repo, expect in plan.items():
        url, env = offsite_repository(hub, dest, repo)
        env = {
            **env,
            "RESTIC_REPOSITORY": url,
            "RESTIC_PASSWORD_FILE": maintenance_env(hub, repo)["RESTIC_PASSWORD_FILE"],
        }
        ids = {s["id"] for s in restic_json(hub, env, ["snapshots"]) or []}
        gone = set(expect["before"]) - ids
        if gone:
            problems.append(f"{args.destination}/{repo}: {len(gone)} snapshots removed offsite too")
        result[repo] = {"offsite": len(ids), "removed_on_hub_still_offsite": len(set(expect["expect_removed"]) & ids)}
    return {"destination": args.destination, "mode": dest.get("mode"), "repositories": result, "problems": problems}


def cmd_manifest(args: argparse.Namespace) -> Json:
    """The reporter holds a signed manifest of KIND from HOST finished after --since (epoch)."""
    reporter = Reporter(args.via)
    keys = host_public_keys(args.host)
    found = [
        (doc, body, sig)
        for doc, body, sig in manifests(reporter.events(args.host))
        if doc.get("kind") == args.kind and parse_time(doc["finished_at"]).timestamp() >= args.since
    ]
    problems = []
    if not found:
        state = cmd_state(argparse.Namespace(host=args.host))
        waiting = [m for m in state["outbox"] if m["kind"] == args.kind]
        problems.append(
            f"{args.host}: the reporter has no {args.kind} manifest since {args.since} ({len(waiting)} in the outbox)"
        )
        return {"problems": problems}
    doc, body, sig = max(found, key=lambda item: int(item[0]["seq"]))
    with tempfile.TemporaryDirectory() as tmp:
        verified = ssh_verify(body, sig, args.host, keys, Path(tmp))
    if not verified:
        problems.append(f"{args.host}: the {args.kind} manifest does not verify with the host's own key")
    if doc.get("status") != "success":
        problems.append(f"{args.host}: {args.kind} manifest status {doc.get('status')}: {doc.get('error')}")
    restore = doc.get("restore") or {}
    if args.kind in {"restore", "drill"} and (not restore.get("files_checked") or restore.get("mismatches")):
        problems.append(
            f"{args.host}: {args.kind} checked {restore.get('files_checked')} files, "
            f"{restore.get('mismatches')} mismatches"
        )
    return {
        "host": args.host,
        "kind": args.kind,
        "seq": doc["seq"],
        "status": doc.get("status"),
        "signature_verified": verified,
        "snapshot": restore.get("snapshot"),
        "files_checked": restore.get("files_checked"),
        "mismatches": restore.get("mismatches"),
        "problems": problems,
    }


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


# --- subcommand: pg-restore -------------------------------------------------------------------

PG_FINGERPRINT = r"""
set -euo pipefail
db=$1
q() { runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1 -d "$db" -c "$1"; }
for t in $(q "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"); do
  echo "$t $(q "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, E'
' ORDER BY x::text)), '-') FROM $t x")"
done
runuser -u postgres -- pg_dump --schema-only --no-owner --no-privileges "$db" |
  grep -v -E '^(--|SET |SELECT pg_catalog|\\(un)?restrict )' | md5sum
"""


def cmd_pg_restore(args: argparse.Namespace) -> Json:
    """Restore the job's latest database dump from the hub into a fresh database and compare."""
    host = args.host
    cfg = jobs(host)[args.job]
    dump = cfg.get("dump") or {}
    database = dump.get("database")
    filename = dump.get("filename") or f"{database}.pgdump"
    env = job_repo_env(host, args.job, args.repository_label)
    snaps = [s for s in restic_json(host, env, ["snapshots"]) or [] if any(filename in p for p in s.get("paths") or [])]
    if not snaps:
        return {"problems": [f"{host}: no snapshot of job {args.job} holds {filename}"]}
    latest = max(snaps, key=lambda s: s["time"])
    listing = restic_json(host, env, ["ls", latest["id"]]) or []
    files = [n for n in (listing if isinstance(listing, list) else [listing]) if isinstance(n, dict)]
    entries = [n.get("path") for n in files if n.get("type") == "file"]
    path = next((p for p in entries if p and p.endswith("/" + filename.lstrip("/"))), None)
    if not path:
        return {"problems": [f"{host}: snapshot {latest['id'][:12]} has no file {filename}: {entries[:5]}"]}
    fresh = args.fresh
    run(host, ["runuser", "-u", "postgres", "--", "dropdb", "--if-exists", fresh])
    run(host, ["runuser", "-u", "postgres", "--", "createdb", fresh])
    script = (
        'set -o pipefail; restic --no-lock dump "$1" "$2" | '
        'runuser -u postgres -- pg_restore --no-owner --exit-on-error -d "$3"'
    )
    restore = run(host, ["bash", "-c", script, "restore", latest["id"], path, fresh], env=env, check=False, timeout=900)
    problems = []
    if restore.returncode != 0:
        problems.append(f"{host}: restic dump | pg_restore failed: {restore.stderr.decode()[-500:]}")
    original = text(host, ["bash", "-c", PG_FINGERPRINT, "fp", database]).splitlines()
    restored = text(host, ["bash", "-c", PG_FINGERPRINT, "fp", fresh]).splitlines()
    if original != restored:
        problems.append(f"{host}: {fresh} differs from {database}: {sorted(set(original) ^ set(restored))[:6]}")
    tables = original[:-1]
    if not tables or all(line.split()[1] == "0" for line in tables):
        problems.append(f"{host}: {database} has no data; the comparison proves nothing")
    run(host, ["runuser", "-u", "postgres", "--", "dropdb", "--if-exists", fresh])
    return {
        "host": host,
        "snapshot": latest["id"],
        "dump_file": path,
        "tables": {line.split()[0]: int(line.split()[1]) for line in tables},
        "schema_md5_equal": original[-1:] == restored[-1:],
        "problems": problems,
    }


# --- subcommand: retention ---------------------------------------------------------------------


def _bucketers() -> dict[str, Callable[[dt.datetime, int], Any]]:
    return {
        "keep_last": lambda t, n: n,
        "keep_hourly": lambda t, n: (t.year, t.month, t.day, t.hour),
        "keep_daily": lambda t, n: (t.year, t.month, t.day),
        "keep_weekly": lambda t, n: t.isocalendar()[:2],
        "keep_monthly": lambda t, n: (t.year, t.month),
        "keep_yearly": lambda t, n: t.year,
    }


def parse_time(value: str) -> dt.datetime:
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        raise CheckFailed(f"cannot parse restic time {value!r}")
    frac = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return dt.datetime.fromisoformat(match.group(1) + frac + zone)


def parse_duration(value: str) -> dt.timedelta:
    """restic durations: 1y2m3d4h (y = 365 d and m = 30 d are what restic does for `within`)."""
    days = hours = 0
    for number, unit in re.findall(r"(\d+)([ymdh])", value):
        n = int(number)
        if unit == "y":
            days += 365 * n
        elif unit == "m":
            days += 30 * n
        elif unit == "d":
            days += n
        else:
            hours += n
    return dt.timedelta(days=days, hours=hours)


def expected_forget(
    snapshots: list[Json], policy: Json, group_by: str, keeps_oldest: bool = False
) -> tuple[set[str], set[str]]:
    """restic's forget policy, applied independently: (kept ids, removed ids). ``keeps_oldest``:
    restic 0.17 and later also keep a group's oldest snapshot for a keep-<period> rule whose
    count is not used up ("oldest daily snapshot"); 0.14 does not."""
    fields = [f.strip() for f in (group_by or "host,paths").split(",") if f.strip()]
    groups: dict[str, list[Json]] = {}
    for snap in snapshots:
        key = []
        for field in fields:
            if field == "host":
                key.append(snap.get("hostname", ""))
            elif field == "paths":
                key.append(",".join(sorted(snap.get("paths") or [])))
            elif field == "tags":
                key.append(",".join(sorted(snap.get("tags") or [])))
        groups.setdefault("|".join(key), []).append(snap)
    kept: set[str] = set()
    removed: set[str] = set()
    for group in groups.values():
        members = sorted(group, key=lambda s: parse_time(s["time"]), reverse=True)
        counters = {k: int(policy[k]) for k in _bucketers() if policy.get(k)}
        last: dict[str, Any] = {}
        newest = parse_time(members[0]["time"])
        within = parse_duration(policy["keep_within"]) if policy.get("keep_within") else None
        tags = set(policy.get("keep_tags") or [])
        for index, snap in enumerate(members):
            when = parse_time(snap["time"]).astimezone(dt.UTC)
            keep = False
            if tags and tags & set(snap.get("tags") or []):
                keep = True
            if within is not None and parse_time(snap["time"]) > newest - within:
                keep = True
            for rule, bucket in _bucketers().items():
                if counters.get(rule, 0) > 0:
                    value = bucket(when, index)
                    if last.get(rule, object()) != value:
                        keep = True
                        last[rule] = value
                        counters[rule] -= 1
            (kept if keep else removed).add(snap["id"])
        if keeps_oldest and any(counters.get(rule, 0) > 0 for rule in _bucketers() if rule != "keep_last"):
            removed.discard(members[-1]["id"])
            kept.add(members[-1]["id"])
    return kept, removed


def hub_restic_keeps_oldest(hub: str) -> bool:
    """Whether the hub's restic keeps the oldest snapshot of an unfilled keep-<period> rule (0.17+)."""
    words = run(hub, ["restic", "version"]).stdout.decode().split()
    major, minor = (int(part) for part in words[1].split(".")[:2])
    return (major, minor) >= (0, 17)


def cmd_retention(args: argparse.Namespace) -> Json:
    """before: record the hub's snapshots and the expected result; after: compare."""
    hub = args.hub
    state_file = Path(args.state)
    if args.phase == "before":
        plan = {}
        for repo in args.repos:
            cfg = maintenance_repo(hub, repo)
            snaps = restic_json(hub, maintenance_env(hub, repo), ["snapshots"]) or []
            keeps_oldest = hub_restic_keeps_oldest(hub)
            kept, removed = expected_forget(snaps, cfg["policy"], cfg.get("group_by") or "host,paths", keeps_oldest)
            plan[repo] = {
                "planned_at": dt.datetime.now(dt.UTC).isoformat(),
                "policy": cfg["policy"],
                "group_by": cfg.get("group_by") or "host,paths",
                "before": sorted(s["id"] for s in snaps),
                "expect_kept": sorted(kept),
                "expect_removed": sorted(removed),
            }
        state_file.write_text(json.dumps(plan))
        problems = []
        if not any(p["expect_removed"] for p in plan.values()):
            problems.append("the policies would remove nothing: the test would prove nothing")
        return {
            "plan": {
                r: {k: (len(v) if isinstance(v, list) else v) for k, v in p.items() if k != "planned_at"}
                for r, p in plan.items()
            },
            "problems": problems,
        }
    plan = json.loads(state_file.read_text())
    reporter = Reporter(args.via)
    problems = []
    result = {}
    forgets = [d for d, _text, _sig in manifests(reporter.events(hub)) if d.get("kind") == "forget"]
    for repo, expect in plan.items():
        snaps = restic_json(hub, maintenance_env(hub, repo), ["snapshots"]) or []
        now = sorted(s["id"] for s in snaps)
        files = list_dir(hub, f"{hub_data_dir(hub)}/{repo}/snapshots")
        if now != expect["expect_kept"]:
            problems.append(
                f"{repo}: after maintenance {len(now)} snapshots, policy {expect['policy']} "
                f"keeps {len(expect['expect_kept'])}; "
                f"wrongly removed {sorted(set(expect['expect_kept']) - set(now))[:5]}, "
                f"wrongly kept {sorted(set(now) - set(expect['expect_kept']))[:5]}"
            )
        if sorted(files) != now:
            problems.append(f"{repo}: snapshot files on the hub differ from restic's listing")
        # This run's forget manifests for the repository: a policy that removes nothing still
        # leaves one, with an empty removed list.
        planned_at = dt.datetime.fromisoformat(expect["planned_at"])
        mine = [
            d
            for d in forgets
            if (d.get("repository") or {}).get("name") == repo and parse_time(d["started_at"]) >= planned_at
        ]
        if not mine:
            problems.append(f"{repo}: no forget manifest at the reporter for this maintenance run")
        else:
            latest = max(mine, key=lambda d: int(d["seq"]))
            if sorted(latest["forget"].get("removed") or []) != expect["expect_removed"]:
                problems.append(f"{repo}: the forget manifest's removed list differs from the policy's")
            if latest.get("status") != "success":
                problems.append(f"{repo}: forget manifest status {latest.get('status')}")
        result[repo] = {
            "before": len(expect["before"]),
            "after": len(now),
            "removed": len(expect["expect_removed"]),
            "policy": expect["policy"],
        }
    return {"repositories": result, "problems": problems}


# --- subcommand: secrets ---------------------------------------------------------------------------

SECRET_KEYS = re.compile(r"(pass|secret|key|token|credential|account)", re.IGNORECASE)
MIN_SECRET = 8


def url_password(url: str) -> str | None:
    parsed = urllib.parse.urlsplit(url.strip().removeprefix("rest:"))
    return urllib.parse.unquote(parsed.password) if parsed.password else None


def gather_secrets(hosts: Sequence[str]) -> dict[str, str]:
    """label -> secret, read from where the roles put them on the hosts."""
    found: dict[str, str] = {}

    def add(label: str, value: str | None) -> None:
        if value and len(value.strip()) >= MIN_SECRET:
            found[label] = value.strip()

    for host in hosts:
        for job, cfg in jobs(host).items():
            for repo in cfg.get("repositories", []):
                add(f"{host}:{job}:{repo['name']}:password", read_file(host, repo["password_file"]))
                url = read_file(host, repo["repository_file"]) or ""
                add(f"{host}:{job}:{repo['name']}:credential", url_password(url))
        maint = read_json(host, "/etc/bk/maintenance.json", {}) or {}
        for repo in maint.get("repositories", []):
            add(f"{host}:maintenance:{repo['name']}:password", read_file(host, repo["password_file"]))
            add(
                f"{host}:maintenance:{repo['name']}:credential",
                url_password(read_file(host, repo["repository_file"]) or ""),
            )
        for name in list_dir(host, "/etc/bk/offsite"):
            if not name.endswith(".json"):
                continue
            dest = read_json(host, f"/etc/bk/offsite/{name}", {}) or {}
            for section, values in rclone_conf(host, dest.get("rclone_config") or "/nonexistent").items():
                for key, value in values.items():
                    if SECRET_KEYS.search(key):
                        add(f"{host}:rclone:{section}:{key}", value)
    for index, value in enumerate(json.loads(os.environ.get("BKMOL_EXTRA_SECRETS") or "[]")):
        add(f"inventory:{index}", value)
    return found


def secret_forms(secret: str) -> set[str]:
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
    }
    return {f for f in forms if len(f) >= MIN_SECRET}


def cmd_secrets(args: argparse.Namespace) -> Json:
    secrets = gather_secrets(args.hosts)
    sources: dict[str, str] = {}
    for path in args.files:
        p = Path(path)
        if p.is_file():
            sources[f"file:{p.name}"] = p.read_text("utf-8", "replace")
    for host in args.hosts:
        sources[f"journal:{host}"] = text(host, ["journalctl", "--no-pager", "-q", "-o", "json"], check=False)
        spool = spool_dir(host)
        for sub in ("outbox", "rejected"):
            for name in list_dir(host, f"{spool}/{sub}"):
                sources[f"spool:{host}:{sub}/{name}"] = read_file(host, f"{spool}/{sub}/{name}") or ""
    if args.via:
        reporter = Reporter(args.via)
        for host in args.manifest_hosts or args.hosts:
            body = "\n".join(event_text(e) for e in reporter.events(host))
            sources[f"manifests:{host}"] = body
    leaks = []
    for label, secret in secrets.items():
        forms = secret_forms(secret)
        for source, content in sources.items():
            if any(form in content for form in forms):
                leaks.append({"secret": label, "found_in": source})
    problems = [f"secret {leak['secret']} appears in {leak['found_in']}" for leak in leaks]
    if len(secrets) < args.min_secrets:
        problems.append(
            f"only {len(secrets)} secrets found on the hosts (want at least {args.min_secrets}): the scan proves little"
        )
    return {
        "secrets": sorted(secrets),
        "sources": {k: len(v) for k, v in sorted(sources.items()) if not k.startswith("spool:")},
        "spool_files": sum(1 for k in sources if k.startswith("spool:")),
        "bytes_scanned": sum(len(v) for v in sources.values()),
        "leaks": leaks,
        "problems": problems,
    }


# --- main ----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:  # noqa: PLR0915 (one flat list of subcommands reads best)
    top = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("units", help="bk timers and services of hosts")
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=cmd_units)

    p = sub.add_parser("state", help="chain state, outbox and runs of a host")
    p.add_argument("host")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("fire", help="make timers elapse now and wait for their services")
    p.add_argument("pairs", nargs="+", metavar="HOST:TIMER")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--expect", choices=["success", "any"], default="success")
    p.set_defaults(func=cmd_fire)

    p = sub.add_parser("snapshots", help="a client job's snapshots and the hub's snapshot files")
    p.add_argument("host")
    p.add_argument("job")
    p.add_argument("--hub", required=True)
    p.add_argument("--repository-label", default="hub")
    p.add_argument("--newer-than", type=float, default=0, help="epoch seconds: a snapshot at least this new exists")
    p.set_defaults(func=cmd_snapshots)

    p = sub.add_parser("chain", help="the reporter's manifests of hosts, verified against the hosts")
    p.add_argument("--via", required=True, help="instance whose bk.json names the reporter")
    p.add_argument("--expect-empty-outbox", action="store_true")
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("receipts", help="hub receipts confirm the clients' claimed snapshots")
    p.add_argument("--via", required=True)
    p.add_argument("--hub", required=True)
    p.add_argument("--repository-label", default="hub")
    p.add_argument("clients", nargs="+")
    p.set_defaults(func=cmd_receipts)

    p = sub.add_parser("append-only", help="forget refused; another client's repository refused")
    p.add_argument("host")
    p.add_argument("job")
    p.add_argument("--other", required=True)
    p.add_argument("--repository-label", default="hub")
    p.set_defaults(func=cmd_append_only)

    p = sub.add_parser("compare", help="compare two file trees across instances")
    p.add_argument("src_host")
    p.add_argument("src_root")
    p.add_argument("dst_host")
    p.add_argument("dst_root")
    p.add_argument("sub", nargs="*")
    p.add_argument("--exclusive", action="store_true", help="the destination holds nothing but SUB")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("offsite", help="read an offsite copy with restic directly")
    p.add_argument("--hub", required=True)
    p.add_argument("--via", default=None, help="check the reporter's offsite-copy manifests too")
    p.add_argument("destination")
    p.add_argument("clients", nargs="+")
    p.set_defaults(func=cmd_offsite)

    p = sub.add_parser("offsite-keeps", help="what retention removed on the hub is still offsite")
    p.add_argument("--hub", required=True)
    p.add_argument("--state", required=True, help="the plan written by `retention before`")
    p.add_argument("destination")
    p.set_defaults(func=cmd_offsite_keeps)

    p = sub.add_parser("manifest", help="the reporter holds a recent signed manifest of a kind from a host")
    p.add_argument("--via", required=True)
    p.add_argument("--since", type=float, default=0)
    p.add_argument("host")
    p.add_argument("kind")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("reporter-up", help="wait until the reporter answers")
    p.add_argument("--via", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(func=cmd_reporter_up)

    p = sub.add_parser("reporter-url", help="the reporter's URL, and at its container's address")
    p.add_argument("--via", required=True)
    p.add_argument("--network", default="bk-molecule")
    p.add_argument("reporter")
    p.set_defaults(func=cmd_reporter_url)

    p = sub.add_parser("pg-restore", help="restore a job's database dump into a fresh database and compare")
    p.add_argument("host")
    p.add_argument("job")
    p.add_argument("--fresh", default="bk_molecule_restored")
    p.add_argument("--repository-label", default="hub")
    p.set_defaults(func=cmd_pg_restore)

    p = sub.add_parser("retention", help="the hub's maintenance removes exactly what the policy says")
    p.add_argument("phase", choices=["before", "after"])
    p.add_argument("--hub", required=True)
    p.add_argument("--via", default=None)
    p.add_argument("--state", required=True)
    p.add_argument("repos", nargs="+")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("secrets", help="secrets appear in no output, journal, spool or manifest")
    p.add_argument("--via", default=None, help="scan the reporter's manifests too")
    p.add_argument("--file", dest="files", action="append", default=[])
    p.add_argument("--manifest-host", dest="manifest_hosts", action="append", default=[])
    p.add_argument("--min-secrets", type=int, default=1)
    p.add_argument("hosts", nargs="+")
    p.set_defaults(func=cmd_secrets)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.func(args)
    except CheckFailed as exc:
        result = {"problems": [str(exc)]}
    except Exception as exc:  # a broken check must fail with its reason, as JSON
        result = {"problems": [f"{type(exc).__name__}: {exc}"]}
    # Credentials in URLs never leave this program, whatever a tool printed.
    print(re.sub(r"//[^/@\s\"]*:[^/@\s\"]*@", "//***@", json.dumps(result, indent=1, sort_keys=True)))
    return 1 if result.get("problems") else 0


if __name__ == "__main__":
    sys.exit(main())
