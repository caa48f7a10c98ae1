"""bk evidence benchmark.

Prints, in one run:
- ed25519 manifests signed and verified per second (bk_evidence.sshsig, a realistic backup manifest);
- the wall-clock ratio of `bk-run backup` over a bare `restic backup --json` of the same data into
  an empty repository, with the reporter up (a loopback stand-in) and unreachable (packets dropped).

The host runner runs as on a host: the system python3 with the package as /usr/local/lib/bk would
hold it. Default data set: 200 MB of incompressible files; --gigabytes 1 for the 1 GB target.
All network traffic stays on 127.0.0.1.

    .venv/bin/python bench/evidence.py [--size-mb 200 | --gigabytes 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bk_evidence_testing import FakeReporter, dropping_listener, make_key, public_line  # noqa: E402

from bk_evidence import manifest, sshsig  # noqa: E402

RESTIC = "/usr/bin/restic"
SYSTEM_PYTHON = "/usr/bin/python3"
PASSWORD = "benchmark password, not a secret"
FILE_SIZE = 8 * 1024 * 1024


def sample_manifest() -> str:
    now = manifest.utc_now()
    doc = manifest.new_manifest(
        "backup",
        "success",
        now,
        now,
        job="home",
        repository={"name": "hub", "url": "rest:https://hub.example:8000/web1/", "id": "ab" * 32},
        snapshot={
            "id": "cd" * 32,
            "short_id": "cdcdcdcd",
            "paths": ["/home", "/etc"],
            "tags": ["daily"],
            "parent": None,
        },
        stats={name: 12345 for name in ("files_new", "files_changed", "files_unmodified", "data_added")},
        cadence_seconds=86400,
        tools={"restic": "0.14.0", "bk": "0.1.0", "python": "3.11.2"},
    )
    return manifest.dumps(dict(doc, host="web1", seq=1234, prev="ef" * 32))


def rate(action: object, seconds: float = 2.0) -> float:
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        action()  # type: ignore[operator]
        count += 1
    return count / (time.perf_counter() - started)


def signing_rates(scratch: Path) -> None:
    key = make_key(scratch, "ed25519")
    public = public_line(key)
    message = sample_manifest().encode()
    signature = sshsig.sign(message, str(key))
    signed = rate(lambda: sshsig.sign(message, str(key)))
    verified = rate(lambda: sshsig.verify(message, signature, [public]))
    print(f"ed25519, {len(message)}-byte manifest: {signed:,.0f} signed/s (reading the key each time)")
    print(f"ed25519, {len(message)}-byte manifest: {verified:,.0f} verified/s")


def make_data(directory: Path, size_mb: int) -> None:
    directory.mkdir()
    remaining = size_mb * 1024 * 1024
    index = 0
    while remaining > 0:
        chunk = min(FILE_SIZE, remaining)
        (directory / f"file{index:05d}").write_bytes(os.urandom(chunk))
        remaining -= chunk
        index += 1


def restic_env(scratch: Path) -> dict[str, str]:
    return dict(os.environ, RESTIC_PASSWORD_FILE=str(scratch / "password"), RESTIC_CACHE_DIR=str(scratch / "cache"))


def fresh_repository(scratch: Path, name: str) -> Path:
    repository = scratch / "repos" / name
    subprocess.run([RESTIC, "init", "-q", "-r", str(repository)], env=restic_env(scratch), check=True)
    return repository


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({completed.returncode}): {completed.stderr.decode()[-500:]}")
    return elapsed


def bare_backup(scratch: Path, data: Path, run: int) -> float:
    repository = fresh_repository(scratch, f"bare{run}")
    command = [RESTIC, "-r", str(repository), "backup", "--json", "--host", "web1"]
    timed([*command, str(scratch / "empty")], restic_env(scratch))  # the same priming as the runner's
    return timed([*command, str(data)], restic_env(scratch))


def runner_backup(scratch: Path, data: Path, key: Path, url: str, label: str) -> float:
    """One `bk-run backup` as host `bench-<label>` (each run has its own chain, so its own name)."""
    repository = fresh_repository(scratch, label)
    config = scratch / "etc" / label
    (config / "jobs").mkdir(parents=True)
    (scratch / f"{label}.repository").write_text(f"{repository}\n")
    settings = {
        "host": f"bench-{label}",
        "host_key": str(key),
        "state_dir": str(scratch / "state" / label),
        "spool_dir": str(scratch / "spool" / label),
        "reporter_url": url,
        "restic": RESTIC,
        "cache_dir": str(scratch / "cache"),
    }
    job = {
        "name": "bench",
        "paths": [str(scratch / "empty")],
        "cadence_seconds": 86400,
        "repositories": [
            {
                "name": "local",
                "repository_file": str(scratch / f"{label}.repository"),
                "password_file": str(scratch / "password"),
            }
        ],
    }
    (config / "bk.json").write_text(json.dumps(settings))
    command = [SYSTEM_PYTHON, "-m", "bk_evidence.runner", "--config", str(config), "backup", "bench"]
    env = dict(os.environ, PYTHONPATH=str(scratch / "lib"))
    # Steady state, as on a host after its first run: the repository id is known (restic cat
    # config runs once per repository), the chain exists. Priming backs up an empty directory.
    (config / "jobs" / "bench.json").write_text(json.dumps(job))
    timed(command, env)
    (config / "jobs" / "bench.json").write_text(json.dumps(dict(job, paths=[str(data)])))
    return timed(command, env)


def overhead(scratch: Path, size_mb: int, repeat: int) -> None:
    data = scratch / "data"
    make_data(data, size_mb)
    (scratch / "password").write_text(PASSWORD + "\n")
    (scratch / "empty").mkdir()
    (scratch / "lib").mkdir()
    (scratch / "lib" / "bk_evidence").symlink_to(REPO / "plugins" / "module_utils")
    key = make_key(scratch, "ed25519", "host_key")
    subprocess.run(["cat", *sorted(str(path) for path in data.iterdir())], stdout=subprocess.DEVNULL, check=True)
    bare, up, down = [], [], []
    hosts = {f"bench-{kind}{run}": [public_line(key)] for kind in ("up", "down") for run in range(repeat)}
    with FakeReporter(hosts) as reporter, dropping_listener() as unreachable:
        for run in range(repeat):
            bare.append(bare_backup(scratch, data, run))
            up.append(runner_backup(scratch, data, key, reporter.url, f"up{run}"))
            down.append(runner_backup(scratch, data, key, unreachable, f"down{run}"))
        stored = len(reporter.manifests())
    base = statistics.median(bare)
    print(f"data set: {size_mb} MB in {len(list(data.iterdir()))} files, {repeat} run(s) each, medians:")
    print(f"  bare restic backup --json      {base:7.2f} s")
    print(f"      runs: {', '.join(f'{t:.2f}' for t in bare)}")
    for label, times in (("reporter up", up), ("reporter unreachable", down)):
        median = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  bk-run backup, {label:20} {median:7.2f} s  ratio {median / base:.3f}  (+{median - base:.2f} s)")
        print(f"      runs: {runs}")
    unreachable_cost = statistics.median(down) - statistics.median(up)
    print(f"  added by the unreachable reporter over the reachable one: {unreachable_cost:.2f} s")
    print(f"  manifests stored by the loopback reporter: {stored} of {2 * repeat} (priming runs included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size-mb", type=int, default=200, help="data set size in MB (default 200)")
    size.add_argument("--gigabytes", type=int, help="data set size in GB (the target is stated for 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant; medians are printed")
    parser.add_argument("--scratch", help="directory for data and repositories (default: a temporary one)")
    args = parser.parse_args()
    size_mb = args.gigabytes * 1024 if args.gigabytes else args.size_mb
    with tempfile.TemporaryDirectory(prefix="bk-bench-", dir=args.scratch) as scratch:
        signing_rates(Path(scratch))
        overhead(Path(scratch), size_mb, args.repeat)


if __name__ == "__main__":
    main()
