"""Shared helpers of the bench scripts: timing a command with its process tree's CPU and memory,
and the reporter states whose variants they compare against a baseline.

`run_measured` starts a command, samples the summed RSS of its process tree every 20 ms (from
/proc), and reaps it with os.wait4, whose rusage gives the tree's CPU time (user + system of the
command and every descendant it waited for) and ru_maxrss (the largest single process of the
tree). Wall time is measured around the whole.

The scripts that import this module put tests/ on sys.path first (for support.*).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from support.fake_reporter import FakeReporter
from support.net import dropping_listener, refusing_port

SAMPLE_SECONDS = 0.02


@dataclass
class Measured:
    wall: float  # seconds
    cpu: float  # seconds, user + system of the tree
    maxrss_mb: float  # largest single process of the tree (rusage ru_maxrss)
    tree_peak_mb: float  # largest sampled sum of the tree's RSS
    load: float  # 1-minute load average when the command started

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss_kb(root: int) -> int:
    total, pending, seen = 0, [root], set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kb(pid)
        pending.extend(_children(pid))
    return total


def run_measured(
    command: list[str], env: dict[str, str] | None = None, cwd: str | None = None, stdout: Path | None = None
) -> Measured:
    """Run a command to completion (its output discarded, or written to `stdout`); raise SystemExit if it fails."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with stdout.open("wb") if stdout else contextlib.nullcontext(subprocess.DEVNULL) as output:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.PIPE
        )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_kb(process.pid))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stderr is not None
    errors = process.stderr.read()  # until the tree closes it; the command's own stderr is small
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {errors.decode(errors='replace')[-800:]}")
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        tree_peak_mb=peak[0] / 1024,
        load=load,
    )


def spread(values: list[float]) -> str:
    """min..max and the relative half-range, e.g. '19.8..21.0 (±2.9 %)'."""
    low, high = min(values), max(values)
    middle = statistics.median(values)
    return f"{low:.2f}..{high:.2f} (±{50 * (high - low) / middle:.1f} %)" if middle else f"{low:.2f}..{high:.2f}"


def interleaved(variants: list[str], repeat: int) -> list[tuple[int, str]]:
    """(repetition, variant) in rotated order: ABCD, BCDA, CDAB... so no variant always goes first."""
    order = []
    for rep in range(repeat):
        shift = rep % len(variants)
        order.extend((rep, variant) for variant in variants[shift:] + variants[:shift])
    return order


# The states of the reporter a variant delivers to, by variant name, as the output names them.
REPORTER_STATES = {"up": "reporter up", "refused": "reporter refuses", "dropped": "reporter drops packets"}


def variant_labels(baseline: str, baseline_label: str, subject: str) -> dict[str, str]:
    """The labels of a benchmark's variants, in the order they run: the baseline, then `subject`
    with the reporter in each of its states."""
    return {baseline: baseline_label} | {state: f"{subject}, {label}" for state, label in REPORTER_STATES.items()}


@contextlib.contextmanager
def reporter_states(hosts: dict[str, list[str]]) -> Iterator[tuple[FakeReporter, dict[str, str]]]:
    """A loopback reporter that knows `hosts` (names to public key lines), and the URL of each
    reporter state: that reporter, a port that refuses connections, one that drops packets."""
    with FakeReporter(hosts) as reporter, refusing_port() as refused, dropping_listener() as dropped:
        yield reporter, {"up": reporter.url, "refused": refused, "dropped": dropped}
