"""The instances as the checks reach them: commands (SSH or ``podman exec``), files, the hosts' bk
configuration (runner contract), their systemd units and journal.

``CheckFailed`` and ``Json``, which every check uses, live here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PODMAN = os.environ.get("MOLECULE_PODMAN_EXECUTABLE") or "podman"


# The hub's append-only server (the role's rest-server, or rclone's `serve restic`).
HUB_SERVERS = frozenset({"rest-server", "restic-rest-server", "rclone"})


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
    hub_servers: dict[str, list[str]] = {}
    for name, props in (show_many(host, service_names, ["ExecStart"]) if service_names else {}).items():
        argv = exec_argv(props.get("ExecStart", ""))
        if any(Path(a).name in {"bk-run", "bk-reporter"} or "bk_run" in a for a in argv[:3]):
            services[name] = argv
        elif argv and Path(argv[0]).name in HUB_SERVERS and "--append-only" in argv:
            hub_servers[name] = argv
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
        if any(Path(a).name == "bk-reporter" for a in argv):
            for verb, key in (("serve", "reporter"), ("notify", "notify")):
                if verb in words:
                    result[key] = entry
    for service in hub_servers:
        result["hub_server"] = {"service": service, "timer": None}
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
