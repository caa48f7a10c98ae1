"""Callback plugin benchmark: a generated 500-task playbook over 4 hosts, bkfleet.backup.reporter off vs on.

Variants, interleaved in rotated order and repeated:
- off: the callback not enabled (the baseline);
- up: enabled, posting to a loopback stand-in of the reporter (tests/support/fake_reporter.FakeReporter,
  which verifies every signature);
- refused: enabled, nothing listens on the reporter's port;
- dropped: enabled, the reporter's port drops packets (a listener whose backlog is full).

The hosts are four inventory names with ansible_connection=local (everything stays on this
machine); each task is an ansible.builtin.debug with a templated message, so the playbook is
as fast as Ansible gets and the callback's share of the run is as large as it can be. The
callback's delivery timeout is its default (3 s). Prints the median wall time of each variant,
its spread, its ratio to `off`, and the load average. Target: <= 3 % slower in every case.

    .venv/bin/python bench/callback.py [--tasks 500] [--hosts 4] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from measure import Measured, interleaved, reporter_states, run_measured, spread, variant_labels  # noqa: E402

from support.keys import make_key, public_line  # noqa: E402

LABELS = variant_labels("off", "callback disabled", "enabled")
VARIANTS = tuple(LABELS)


def write_playbook(directory: Path, tasks: int, hosts: int) -> tuple[Path, Path]:
    inventory = directory / "inventory.ini"
    lines = ["[bench]"] + [
        f"bench-host{n} ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
        for n in range(1, hosts + 1)
    ]
    inventory.write_text("\n".join(lines) + "\n")
    playbook = directory / "playbook.yml"
    body = ["- name: Callback benchmark", "  hosts: bench", "  gather_facts: false", "  tasks:"]
    for n in range(1, tasks + 1):
        body += [
            f"    - name: Step {n}",
            "      ansible.builtin.debug:",
            f'        msg: "step {n} on {{{{ inventory_hostname }}}}"',
        ]
    playbook.write_text("\n".join(body) + "\n")
    return inventory, playbook


def environment(directory: Path, variant: str, url: str | None, key: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
        "ANSIBLE_HOME": str(directory / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(directory / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INJECT_FACT_VARS": "False",
        "ANSIBLE_ALLOW_EMBEDDED_TEMPLATES": "False",
    }
    for name in [name for name in env if name.startswith("BK_REPORTER_")]:
        del env[name]
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if variant != "off":
        env.update(
            ANSIBLE_CALLBACKS_ENABLED="bkfleet.backup.reporter",
            BK_REPORTER_KEY=str(key),
            BK_REPORTER_HOST="controller",
            BK_REPORTER_STATE_DIR=str(directory / variant / "state"),
            BK_REPORTER_SPOOL_DIR=str(directory / variant / "spool"),
            BK_REPORTER_URL=str(url),
        )
    return env


def run(tasks: int, hosts: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bk-bench-callback-") as scratch:
        directory = Path(scratch)
        inventory, playbook = write_playbook(directory, tasks, hosts)
        key = make_key(directory, "controller_key")
        command = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(playbook)]
        results: dict[str, list[Measured]] = {variant: [] for variant in VARIANTS}
        with reporter_states({"controller": [public_line(key)]}) as (reporter, urls):
            run_measured(command, environment(directory, "up", reporter.url, key))  # warm-up, not counted
            for index, variant in interleaved(list(VARIANTS), repeat):
                measured = run_measured(command, environment(directory, variant, urls.get(variant), key))
                results[variant].append(measured)
                print(
                    f"  run {index + 1}/{repeat} {LABELS[variant]:32} {measured.wall:6.2f} s wall"
                    f" {measured.cpu:6.2f} s cpu  load {measured.load:.2f}",
                    flush=True,
                )
            recorded = len(reporter.manifests())
        waiting = {
            variant: len(list((directory / variant / "spool" / "outbox").glob("*.json")))
            for variant in ("refused", "dropped")
        }
    base = statistics.median(m.wall for m in results["off"])
    base_cpu = statistics.median(m.cpu for m in results["off"])
    variants = {}
    for variant, runs in results.items():
        wall = [m.wall for m in runs]
        variants[variant] = {
            "runs": [m.as_dict() for m in runs],
            "wall_median": statistics.median(wall),
            "wall_spread": spread(wall),
            "wall_ratio": statistics.median(wall) / base,
            "paired_wall_ratio": statistics.median(m.wall / b.wall for m, b in zip(runs, results["off"], strict=True)),
            "cpu_median": statistics.median(m.cpu for m in runs),
            "cpu_ratio": statistics.median(m.cpu for m in runs) / base_cpu,
            "load": [min(m.load for m in runs), max(m.load for m in runs)],
        }
    summary = {
        "tasks": tasks,
        "hosts": hosts,
        "repeat": repeat,
        "variants": variants,
        "recorded_by_reporter": recorded,
        "waiting_in_spool": waiting,
    }
    print(
        f"{tasks} tasks x {hosts} hosts (ansible.builtin.debug, connection local), {repeat} interleaved runs, medians:"
    )
    for variant in VARIANTS:
        v = variants[variant]
        print(
            f"  {LABELS[variant]:32} wall {v['wall_median']:6.2f} s  ratio {v['wall_ratio']:.3f}"
            f" (paired {v['paired_wall_ratio']:.3f})  spread {v['wall_spread']}  cpu ratio {v['cpu_ratio']:.3f}"
            f"  load {v['load'][0]:.2f}..{v['load'][1]:.2f}"
        )
    print(f"  ansible-run manifests stored by the loopback reporter: {recorded}; waiting in the spools: {waiting}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each variant")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    summary = run(args.tasks, args.hosts, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
