"""bk evidence benchmark.

Prints, in one run:
- ed25519 manifests signed and verified per second (bk_evidence.sshsig, a realistic backup manifest);
- `bk-run backup` against a bare `restic backup --json` of the same data, each into a fresh
  repository primed by one empty backup, with the reporter up (a loopback stand-in), refusing
  connections, and dropping packets (a listener whose backlog is full); the four variants
  interleaved in rotated order, each repeated; wall time, CPU time (the process tree's, from
  wait4) and peak memory (summed RSS of the tree, sampled; and the largest process) per run,
  medians and their ratios to the bare runs. One warm-up of each, not counted, reads the data
  into the page cache first; `sync` before each measured run keeps writeback out of the next.

The host runner runs as on a host: the system python3 with the package as /usr/local/lib/bk would
hold it. Default data set: 200 MB of incompressible files; --gigabytes 1 for the 1 GB target.
All network traffic stays on 127.0.0.1.

    .venv/bin/python bench/evidence.py [--size-mb 200 | --gigabytes 1] [--repeat 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from measure import Measured, interleaved, reporter_states, run_measured, spread, variant_labels  # noqa: E402

from bk_evidence import manifest, restic_output, sshsig  # noqa: E402
from support.fake_reporter import FakeReporter  # noqa: E402
from support.keys import make_key, public_line  # noqa: E402

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


def signing_rates(scratch: Path) -> dict[str, float]:
    key = make_key(scratch, "ed25519")
    public = public_line(key)
    message = sample_manifest().encode()
    signature = sshsig.sign(message, str(key))
    signed = rate(lambda: sshsig.sign(message, str(key)))
    verified = rate(lambda: sshsig.verify(message, signature, [public]))
    print(f"ed25519, {len(message)}-byte manifest: {signed:,.0f} signed/s (reading the key each time)")
    print(f"ed25519, {len(message)}-byte manifest: {verified:,.0f} verified/s")
    return {"manifest_bytes": len(message), "signed_per_s": signed, "verified_per_s": verified}


def make_data(directory: Path, size_mb: int) -> None:
    directory.mkdir()
    remaining = size_mb * 1024 * 1024
    index = 0
    while remaining > 0:
        chunk = min(FILE_SIZE, remaining)
        (directory / f"file{index:05d}").write_bytes(os.urandom(chunk))
        remaining -= chunk
        index += 1


def restic_env(scratch: Path, label: str) -> dict[str, str]:
    return dict(
        os.environ, RESTIC_PASSWORD_FILE=str(scratch / "password"), RESTIC_CACHE_DIR=str(scratch / "cache" / label)
    )


def fresh_repository(scratch: Path, name: str) -> Path:
    """A copy of one empty repository made at the start: every run opens a repository whose key was
    derived with the same scrypt parameters (restic calibrates them at `init`, by the load of the
    moment, and each restic call pays them: 0.3..0.6 s of CPU here)."""
    template = scratch / "template"
    if not template.exists():
        subprocess.run([RESTIC, "init", "-q", "-r", str(template)], env=restic_env(scratch, "template"), check=True)
    repository = scratch / "repos" / name
    shutil.copytree(template, repository)
    return repository


@dataclass
class Run:
    """One measured backup and the part of it restic itself reported as the backup's duration."""

    measured: Measured
    restic_seconds: float

    @property
    def outside_restic(self) -> float:
        """Wall time not spent in restic's backup proper: start-up, opening the repository, and for
        bk-run everything it adds (configuration, state files, signing, spooling, delivery)."""
        return self.measured.wall - self.restic_seconds


def bare_backup(scratch: Path, data: Path, label: str) -> Run:
    """A bare `restic backup --json` into a fresh repository (primed, like the runner's, by a backup of the
    same path with everything in it excluded: the measured run has a parent with an empty tree)."""
    repository = fresh_repository(scratch, label)
    command = [RESTIC, "-r", str(repository), "backup", "--json", "--host", "web1"]
    run_measured([*command, "--exclude", f"{data}/*", str(data)], restic_env(scratch, label))
    os.sync()  # the previous run's writeback must not land in this one
    output = scratch / f"{label}.out"
    measured = run_measured([*command, str(data)], restic_env(scratch, label), stdout=output)
    summary = restic_output.backup_summary(output.read_text())
    if summary is None:
        raise SystemExit(f"restic backup printed no summary: {output}")
    return Run(measured, float(summary["total_duration"]))


def runner_backup(scratch: Path, data: Path, key: Path, url: str, label: str, *, reporter: FakeReporter) -> Run:
    """One `bk-run backup` as host `bench-<label>` into a fresh repository (each run has its own chain)."""
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
        "cache_dir": str(scratch / "cache" / label),
    }
    job = {
        "name": "bench",
        "paths": [str(data)],
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
    command = [SYSTEM_PYTHON, "-m", "bk_run", "--config", str(config), "backup", "bench"]
    env = dict(os.environ, PYTHONPATH=str(scratch / "lib"))
    # Steady state, as on a host after its first run: the repository id is known (restic cat
    # config runs once per repository), the chain exists, the job's last snapshot is known (the
    # fast path: --parent, no `restic snapshots`). Priming backs up the same path with its content excluded.
    (config / "jobs" / "bench.json").write_text(json.dumps(dict(job, exclude=[f"{data}/*"])))
    run_measured(command, env)
    (config / "jobs" / "bench.json").write_text(json.dumps(job))
    os.sync()
    measured = run_measured(command, env)
    return Run(measured, backup_duration(last_manifest(scratch / "spool" / label, reporter, f"bench-{label}")))


def last_manifest(spool_dir: Path, reporter: FakeReporter, host: str) -> dict:
    """The host's newest manifest: delivered to the reporter, or still waiting in its spool."""
    documents = [doc for doc in reporter.manifests() if doc["host"] == host]
    documents += [
        json.loads(json.loads(path.read_text())["manifest"]) for path in (spool_dir / "outbox").glob("*.json")
    ]
    return max(documents, key=lambda doc: doc["seq"])


def backup_duration(document: dict) -> float:
    """restic's own `total_duration` of the backup a manifest describes."""
    return float(document["stats"]["total_duration"])


LABELS = variant_labels("bare", "bare restic backup --json", "bk-run")
VARIANTS = tuple(LABELS)


def overhead(scratch: Path, size_mb: int, repeat: int) -> dict[str, object]:
    data = scratch / "data"
    make_data(data, size_mb)
    (scratch / "password").write_text(PASSWORD + "\n")
    (scratch / "empty").mkdir()
    (scratch / "lib").mkdir()
    (scratch / "lib" / "bk_evidence").symlink_to(REPO / "plugins" / "module_utils")
    (scratch / "lib" / "bk_run").symlink_to(REPO / "runner" / "bk_run")
    key = make_key(scratch, "host_key")
    hosts = {f"bench-{kind}{run}": [public_line(key)] for kind in VARIANTS for run in range(-1, repeat)}
    results: dict[str, list[Run]] = {variant: [] for variant in VARIANTS}
    with reporter_states(hosts) as (reporter, urls):
        # Warm-up, not counted: the data into the page cache, restic and python code read once.
        bare_backup(scratch, data, "bare-warm")
        runner_backup(scratch, data, key, reporter.url, "up-1", reporter=reporter)
        shutil.rmtree(scratch / "repos")
        for run, variant in interleaved(list(VARIANTS), repeat):
            label = f"{variant}{run}"
            if variant == "bare":
                result = bare_backup(scratch, data, label)
            else:
                result = runner_backup(scratch, data, key, urls[variant], label, reporter=reporter)
            results[variant].append(result)
            measured = result.measured
            print(
                f"  run {run + 1}/{repeat} {LABELS[variant]:32} {measured.wall:6.2f} s wall"
                f" ({result.outside_restic:5.2f} s outside restic's backup)"
                f" {measured.cpu:6.2f} s cpu {measured.tree_peak_mb:6.0f} MB  load {measured.load:.2f}",
                flush=True,
            )
            shutil.rmtree(scratch / "repos" / label)  # 1 GB each: keep the disk from filling
        stored = len(reporter.manifests())
        pending = {
            variant: sum(
                len(list((scratch / "spool" / f"{variant}{run}" / "outbox").glob("*"))) for run in range(repeat)
            )
            for variant in ("refused", "dropped")
        }
    summary = summarize(results)
    summary["data"] = {"size_mb": size_mb, "files": len(list(data.iterdir())), "repeat": repeat}
    summary["stored_by_reporter"] = stored
    summary["pending_in_spool"] = pending
    print_overhead(summary)
    return summary


def summarize(results: dict[str, list[Run]]) -> dict[str, object]:
    bare = [run.measured for run in results["bare"]]
    base = {name: statistics.median(getattr(m, name) for m in bare) for name in ("wall", "cpu")}
    base_outside = statistics.median(run.outside_restic for run in results["bare"])
    variants = {}
    for variant, runs in results.items():
        measured = [run.measured for run in runs]
        wall = [m.wall for m in measured]
        cpu = [m.cpu for m in measured]
        outside_added = statistics.median(run.outside_restic for run in runs) - base_outside
        variants[variant] = {
            "runs": [dict(run.measured.as_dict(), restic_seconds=run.restic_seconds) for run in runs],
            "wall_median": statistics.median(wall),
            "wall_spread": spread(wall),
            "wall_ratio": statistics.median(wall) / base["wall"],
            "wall_added": statistics.median(wall) - base["wall"],
            # paired: each run against the bare run of the same repetition (adjacent in time)
            "paired_wall_ratio": statistics.median(m.wall / b.wall for m, b in zip(measured, bare, strict=True)),
            # what the variant adds outside restic's own backup phase, which varies by ±5 % from run to
            # run whoever starts it: the overhead without that noise
            "outside_restic_added": outside_added,
            "outside_restic_ratio": (base["wall"] + outside_added) / base["wall"],
            "cpu_median": statistics.median(cpu),
            "cpu_ratio": statistics.median(cpu) / base["cpu"],
            "cpu_added": statistics.median(cpu) - base["cpu"],
            "maxrss_mb": max(m.maxrss_mb for m in measured),
            "tree_peak_mb": max(m.tree_peak_mb for m in measured),
            "load": [min(m.load for m in measured), max(m.load for m in measured)],
        }
    return {"variants": variants}


def print_overhead(summary: dict[str, object]) -> None:
    data = summary["data"]
    variants = summary["variants"]
    print(
        f"data set: {data['size_mb']} MB in {data['files']} files, fresh repository each run, "
        f"{data['repeat']} interleaved runs of each, medians:"
    )
    bare_rss = variants["bare"]["tree_peak_mb"]
    for variant in VARIANTS:
        v = variants[variant]
        print(
            f"  {LABELS[variant]:32} wall {v['wall_median']:6.2f} s  ratio {v['wall_ratio']:.3f}"
            f" (paired {v['paired_wall_ratio']:.3f}, {v['wall_added']:+.2f} s)  spread {v['wall_spread']}"
        )
        print(
            f"  {'':32} outside restic's backup phase: {v['outside_restic_added']:+.2f} s"
            f" over bare, overhead ratio {v['outside_restic_ratio']:.3f}"
        )
        print(
            f"  {'':32} cpu  {v['cpu_median']:6.2f} s  ratio {v['cpu_ratio']:.3f} ({v['cpu_added']:+.2f} s);"
            f" peak RSS tree {v['tree_peak_mb']:.0f} MB (ratio {v['tree_peak_mb'] / bare_rss:.2f}),"
            f" largest process {v['maxrss_mb']:.0f} MB; load {v['load'][0]:.2f}..{v['load'][1]:.2f}"
        )
    print(f"  manifests stored by the loopback reporter: {summary['stored_by_reporter']}")
    print(f"  manifests waiting in the spools (refused, dropped): {summary['pending_in_spool']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size-mb", type=int, default=200, help="data set size in MB (default 200)")
    size.add_argument("--gigabytes", type=int, help="data set size in GB (the target is stated for 1)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs of each variant; medians are printed")
    parser.add_argument("--scratch", help="directory for data and repositories (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    size_mb = args.gigabytes * 1024 if args.gigabytes else args.size_mb
    with tempfile.TemporaryDirectory(prefix="bk-bench-", dir=args.scratch) as scratch:
        rates = signing_rates(Path(scratch))
        figures = overhead(Path(scratch), size_mb, args.repeat)
    if args.json:
        args.json.write_text(json.dumps({"signing": rates, "runner": figures}, indent=1))


if __name__ == "__main__":
    main()
