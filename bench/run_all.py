"""Run every bk benchmark once and write docs/benchmarks.md with the figures of that run.

    .venv/bin/python bench/run_all.py            # or: make bench

Stages, one after the other (each figure is a ratio against a baseline measured in the same stage):
1. bench/evidence.py  ed25519 sign/verify rates; bk-run backup vs bare restic backup of 1 GB
                      (wall, CPU, peak RSS; reporter up, refusing, dropping packets)
2. bench/callback.py  500-task playbook over 4 hosts, callback off vs on (up, refusing, dropping)
3. bench/ingest.py    single, batch and open-loop ingest vs the raw insert rate (its own printed output)
4. bench/ui.py        every page that reads events at 100,000 vs 10,000,000 events (its own printed output);
                      the databases are cached in --ui-dir (loaded once, reused while present)
5. converge           first and no-change site.yml runs: only with --with-lab (fresh lab fleets of 4
                      and 12 hosts, --converge-hosts to change, on the network bk-bench; site.yml once
                      and then NO_CHANGE_RUNS times more on each, wall time and controller CPU, the
                      no-change figure their median; tens of minutes on 2 shared cores, hence the
                      flag) or from a log given with
                      --converge-log (a molecule or ansible-playbook log with the two PLAY RECAPs);
                      otherwise the document says it was not measured.

The machine (CPU, cores, RAM, disk, kernel, tool versions) and the load average at the start and
end of every stage are recorded beside the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lab_fleet

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The converge fleets: names and a network of their own, apart from the demo's lab and molecule's.
CONVERGE_PREFIX = "bench-"
CONVERGE_NETWORK = "bk-bench"
CONVERGE_STATE = ".cache/bench/lab"
RECAP_HOST = re.compile(r"^\W*(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def sh(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    except OSError:
        return ""


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"MemTotal:\s*(\d+)", meminfo)
    disk = shutil.disk_usage(REPO)
    device = sh(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(REPO)])
    rota = sh(["lsblk", "-d", "-n", "-o", "NAME,ROTA,SIZE,MODEL"]).replace("\n", "; ")
    servers = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    postgres = sh([str(servers[-1]), "--version"]) if servers else "not found"
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": str(os.cpu_count()),
        "ram": f"{int(total.group(1)) / 1024 / 1024:.1f} GiB" if total else "?",
        "disk": f"{device} ({disk.total / 2**30:.0f} GiB, {disk.free / 2**30:.0f} GiB free); block devices: {rota}",
        "kernel": platform.release(),
        "os": sh(["bash", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "restic": sh(["restic", "version"]),
        "postgresql": postgres,
        "python (bench, reporter)": platform.python_version(),
        "python (bk-run, system)": sh(["/usr/bin/python3", "--version"]),
        "ansible-core": sh(
            [str(REPO / ".venv" / "bin" / "python"), "-c", "import ansible; print(ansible.__version__)"]
        ),
        "commit": sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
        + (" + uncommitted changes" if sh(["git", "-C", str(REPO), "status", "--porcelain", "-uno"]) else ""),
    }


class Stage:
    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.output = ""
        self.seconds = 0.0
        self.load_start = ""
        self.load_end = ""
        self.status = 0

    def run(self) -> None:
        print(f"\n=== {self.name}: {shlex.join(self.command)}  (load {load()})", flush=True)
        self.load_start = load()
        started = time.monotonic()
        process = subprocess.Popen(
            self.command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            lines.append(line)
        self.status = process.wait()
        self.seconds = time.monotonic() - started
        self.load_end = load()
        self.output = "".join(lines)
        print(
            f"=== {self.name}: exit {self.status} after {self.seconds / 60:.1f} min (load {self.load_end})", flush=True
        )

    def clean_output(self) -> str:
        """Printed output without progress lines (carriage returns)."""
        kept = [line.split("\r")[-1] for line in ANSI.sub("", self.output).splitlines()]
        return "\n".join(line for line in kept if line.strip())


def wait_for_cluster(directory: Path, limit_seconds: float) -> None:
    """Wait while another bench/ui.py holds the cached cluster (e.g. still loading the 10M database)."""
    pid_file = directory / "pg" / "pgdata" / "postmaster.pid"
    waited = 0.0
    while pid_file.exists() and waited < limit_seconds:
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except (ValueError, OSError):
            return
        if waited == 0:
            print(f"waiting for the cluster in {directory} (another bench/ui.py is using it)", flush=True)
        time.sleep(10)
        waited += 10


# --- converge ------------------------------------------------------------------------------


def recaps(text: str) -> list[dict[str, dict[str, int]]]:
    """Every PLAY RECAP of a log: {host: {ok, changed, unreachable, failed}}."""
    found: list[dict[str, dict[str, int]]] = []
    current: dict[str, dict[str, int]] | None = None
    for raw in ANSI.sub("", text).splitlines():
        if "PLAY RECAP" in raw:
            current = {}
            found.append(current)
            continue
        match = RECAP_HOST.match(raw.replace("│", " "))
        if current is not None and match:
            host, ok, changed, unreachable, failed = match.groups()
            current[host] = {
                "ok": int(ok),
                "changed": int(changed),
                "unreachable": int(unreachable),
                "failed": int(failed),
            }
        elif current is not None and re.search(r"\b(PLAY|TASK|INFO|WARNING)\b", raw):
            current = None
    return [recap for recap in found if recap]


def converge_from_log(path: Path) -> dict[str, object]:
    """The converge and idempotence recaps of a molecule log (or the last two recaps of any log)."""
    text = path.read_text(errors="replace")
    clean = ANSI.sub("", text)
    sections = {}
    for step in ("converge", "idempotence"):
        match = re.search(rf"➜ {step}: Executing(.*?)➜ {step}: Executed", clean, re.S)
        if match:
            found = recaps(match.group(1))
            sections[step] = found[-1] if found else None
    if not sections:
        found = recaps(text)
        sections = {"converge": found[-2] if len(found) > 1 else None, "idempotence": found[-1] if found else None}
    took = re.findall(r"Playbook run took (.+)", clean)
    modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return {
        "source": str(path),
        "date": modified.strftime("%Y-%m-%d %H:%M UTC"),
        "first": sections.get("converge"),
        "second": sections.get("idempotence"),
        "durations": took,
    }


def site_run(inventory: list[str], log: Path) -> dict[str, object]:
    """One timed site.yml run: wall seconds, the controller's CPU seconds, the recap, the load; its
    output is kept in LOG, so that a failed run can be read after the fleet is gone."""
    load_start = load()
    before = os.times()
    started = time.monotonic()
    completed = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), *inventory, "playbooks/site.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    after = os.times()
    log.write_text(completed.stdout + completed.stderr)
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    found = recaps(completed.stdout)
    return {
        "seconds": seconds,
        "controller_cpu": cpu,
        "exit": completed.returncode,
        "log": str(log.relative_to(REPO)),
        "recap": found[-1] if found else None,
        "load": [load_start, load()],
    }


# No-change site.yml runs per fleet: one run's wall time varies by about 10 % on this machine's shared
# cores (the same fleet measured 29-38 s back to back), so the figure is their median.
NO_CHANGE_RUNS = 3


def converge_fleet(hosts: int) -> dict[str, object]:
    """A fresh lab fleet of HOSTS hosts on a network of its own, site.yml once and NO_CHANGE_RUNS times more,
    the fleet removed."""
    inventory_file = REPO / ".cache" / "bench" / f"converge-{hosts}.yml"
    inventory_file.parent.mkdir(parents=True, exist_ok=True)
    fleet = lab_fleet.fleet(hosts, CONVERGE_PREFIX)
    inventory_file.write_text(json.dumps(fleet, indent=1) + "\n")
    names = lab_fleet.names(fleet)
    env = dict(
        os.environ,
        BK_LAB_NETWORK=CONVERGE_NETWORK,
        BK_LAB_STATE=CONVERGE_STATE,
        BK_LAB_DEBIAN12_HOSTS=CONVERGE_PREFIX + "client1",
    )
    lab = [str(REPO / "scripts" / "lab.sh")]
    subprocess.run([*lab, "down", *names], cwd=REPO, env=env, check=True)
    subprocess.run([*lab, "up", *names], cwd=REPO, env=env, check=True)
    try:
        inventory = ["-i", str(inventory_file), "-i", str(REPO / CONVERGE_STATE / "ssh-inventory.yml")]
        names_of_runs = ["first", *(f"no-change-{number}" for number in range(1, NO_CHANGE_RUNS + 1))]
        logs = [inventory_file.with_name(f"converge-{hosts}-{run}.log") for run in names_of_runs]
        runs = [site_run(inventory, log) for log in logs]
    finally:
        subprocess.run([*lab, "down", *names], cwd=REPO, env=env, check=False)
    return {"hosts": hosts, "runs": runs}


def converge_with_lab(sizes: list[int]) -> dict[str, object]:
    """First and no-change site.yml runs on a fresh lab fleet of each size, one size after the other."""
    return {
        "source": "this run (--with-lab)",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "forks": os.environ.get("ANSIBLE_FORKS", "5 (Ansible's default)"),
        "fleets": [converge_fleet(hosts) for hosts in sizes],
    }


# --- the document --------------------------------------------------------------------------


def changed_total(recap: dict[str, dict[str, int]] | None) -> str:
    if not recap:
        return "?"
    per_host = ", ".join(f"{host} {counts['changed']}" for host, counts in sorted(recap.items()))
    return f"{sum(c['changed'] for c in recap.values())} ({per_host})"


def runner_section(figures: dict) -> list[str]:
    runner = figures["runner"]
    signing = figures["signing"]
    variants = runner["variants"]
    data = runner["data"]
    bare = variants["bare"]
    lines = [
        f"Signing (ed25519, a {signing['manifest_bytes']}-byte backup manifest, bk_evidence.sshsig): "
        f"**{signing['signed_per_s']:,.0f} signed/s** (the key read from disk each time), "
        f"**{signing['verified_per_s']:,.0f} verified/s**.",
        "",
        f"Backup of {data['size_mb']} MB ({data['files']} files of random data) into a fresh local repository per "
        f"run (each a copy of one empty repository), {data['repeat']} runs of each variant interleaved in rotated "
        "order (bare, up, refused, dropped; then up, refused, dropped, bare; ...). Medians; ratio = median / median "
        "of the bare runs; paired = median of each run over the bare run of the same round; own s = median of wall "
        "minus restic's own `total_duration` (its backup phase, which varies by several per cent from run to run "
        "whoever starts it) minus the same for bare, and own ratio = (bare wall + own s) / bare wall.",
        "",
        "| variant | wall s (median) | spread | ratio | paired | added s | own s | own ratio | CPU s | CPU ratio "
        "| peak RSS of tree MB | RSS ratio | largest process MB | load (min..max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "bare": "bare `restic backup --json`",
        "up": "`bk-run backup`, reporter up",
        "refused": "`bk-run backup`, reporter refuses",
        "dropped": "`bk-run backup`, reporter drops packets",
    }
    for name in ("bare", "up", "refused", "dropped"):
        v = variants[name]
        lines.append(
            f"| {labels[name]} | {v['wall_median']:.2f} | {v['wall_spread']} | {v['wall_ratio']:.3f} "
            f"| {v['paired_wall_ratio']:.3f} | {v['wall_added']:+.2f} | {v['outside_restic_added']:+.2f} "
            f"| {v['outside_restic_ratio']:.3f} | {v['cpu_median']:.2f} | {v['cpu_ratio']:.3f} "
            f"| {v['tree_peak_mb']:.0f} | {v['tree_peak_mb'] / bare['tree_peak_mb']:.2f} | {v['maxrss_mb']:.0f} "
            f"| {v['load'][0]:.2f}..{v['load'][1]:.2f} |"
        )
    lines += [
        "",
        f"Manifests stored by the loopback reporter: {runner['stored_by_reporter']}; waiting in the spools "
        f"of the unreachable variants: {runner['pending_in_spool']}.",
        "",
        "Every run (wall s / CPU s / tree peak MB / load at start):",
        "",
    ]
    for name in ("bare", "up", "refused", "dropped"):
        runs = "; ".join(
            f"{r['wall']:.2f}/{r['cpu']:.2f}/{r['tree_peak_mb']:.0f}/{r['load']:.2f}" for r in variants[name]["runs"]
        )
        lines.append(f"- {labels[name]}: {runs}")
    return lines


def callback_section(figures: dict) -> list[str]:
    variants = figures["variants"]
    labels = {
        "off": "callback disabled",
        "up": "enabled, reporter up",
        "refused": "enabled, reporter refuses",
        "dropped": "enabled, reporter drops packets",
    }
    lines = [
        f"{figures['tasks']} tasks (`ansible.builtin.debug`) x {figures['hosts']} hosts (`ansible_connection=local`, "
        f"distinct inventory names), {figures['repeat']} runs of each variant interleaved in rotated order, "
        "callback timeout at its default (3 s). Ratio = median / median with the callback disabled.",
        "",
        "| variant | wall s (median) | spread | ratio | paired | CPU s | CPU ratio | load (min..max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("off", "up", "refused", "dropped"):
        if name not in variants:
            continue
        v = variants[name]
        lines.append(
            f"| {labels[name]} | {v['wall_median']:.2f} | {v['wall_spread']} | {v['wall_ratio']:.3f} "
            f"| {v['paired_wall_ratio']:.3f} | {v['cpu_median']:.2f} | {v['cpu_ratio']:.3f} "
            f"| {v['load'][0]:.2f}..{v['load'][1]:.2f} |"
        )
    lines += [
        "",
        f"`ansible-run` manifests stored by the loopback reporter: {figures['recorded_by_reporter']}; "
        f"waiting in the spools of the unreachable variants: {figures['waiting_in_spool']}.",
        "",
        "Every run (wall s / load at start): "
        + "; ".join(
            f"{labels[name]}: " + ", ".join(f"{r['wall']:.2f}/{r['load']:.2f}" for r in variants[name]["runs"])
            for name in variants
        ),
    ]
    return lines


def targets(figures: dict[str, dict]) -> list[str]:
    """The issues' targets against this run's figures."""
    rows = []

    def noise(*variants: dict) -> float:
        """The widest half-range of the variants' wall times, in % of their median."""
        widest = 0.0
        for variant in variants:
            walls = [run["wall"] for run in variant["runs"]]
            widest = max(widest, 50 * (max(walls) - min(walls)) / variant["wall_median"])
        return widest

    def mark(ok: bool, spread_pct: float = 0.0, margin_pct: float = 100.0) -> str:
        verdict = "met" if ok else "**not met**"
        if spread_pct > margin_pct:
            return (
                f"{verdict} on medians, but **inconclusive**: "
                f"runs spread ±{spread_pct:.0f} % > the {margin_pct:g} % margin"
            )
        return verdict

    if "evidence" in figures:
        v = figures["evidence"]["runner"]["variants"]
        up, refused, dropped = v["up"], v["refused"], v["dropped"]
        over_up = dropped["wall_median"] - up["wall_median"]
        bare = v["bare"]
        seconds_pct = 100 * 2 / bare["wall_median"]  # 2 s in % of the backup
        rows += [
            f"| bk-run over bare restic, reporter up (issue 3) | wall ratio <= 1.05 | {up['wall_ratio']:.3f} "
            f"(paired {up['paired_wall_ratio']:.3f}; CPU {up['cpu_ratio']:.3f}) "
            f"| {mark(up['wall_ratio'] <= 1.05, noise(bare, up), 5)} |",
            f"| bk-run over bare restic, reporter refuses | wall ratio <= 1.05 | {refused['wall_ratio']:.3f} "
            f"(paired {refused['paired_wall_ratio']:.3f}) "
            f"| {mark(refused['wall_ratio'] <= 1.05, noise(bare, refused), 5)} |",
        ]
        for name, variant in (("up", up), ("refuses", refused)):
            rows.append(
                f"| bk-run's own time (outside restic's backup phase) over bare, reporter {name} | ratio <= 1.05 "
                f"| {variant['outside_restic_ratio']:.3f} ({variant['outside_restic_added']:+.2f} s) "
                f"| {mark(variant['outside_restic_ratio'] <= 1.05)} |"
            )
        rows += [
            f"| time added when the reporter drops packets (issue 3), over bare restic | <= 2 s "
            f"| {dropped['wall_added']:+.2f} s "
            f"| {mark(dropped['wall_added'] <= 2, noise(bare, dropped), seconds_pct)} |",
            f"| time added when the reporter drops packets, over bk-run with the reporter up | <= 2 s "
            f"| {over_up:+.2f} s | {mark(over_up <= 2, noise(up, dropped), seconds_pct)} |",
        ]
    if "callback" in figures:
        for name, label in (
            ("up", "reporter up"),
            ("refused", "reporter refuses"),
            ("dropped", "reporter drops packets"),
        ):
            v = figures["callback"]["variants"].get(name)
            off = figures["callback"]["variants"]["off"]
            if v:
                rows.append(
                    f"| callback enabled, {label} (issue 8) | <= 3 % slower | {100 * (v['wall_ratio'] - 1):+.1f} % "
                    f"(paired {100 * (v['paired_wall_ratio'] - 1):+.1f} %; CPU {100 * (v['cpu_ratio'] - 1):+.1f} %) "
                    f"| {mark(v['wall_ratio'] <= 1.03, noise(off, v), 3)} |"
                )
    if "ingest" in figures:
        ingest = figures["ingest"]
        opened, batch = ingest.get("open_loop"), ingest.get("batch")
        if opened:
            rows.append(
                f"| open-loop ingest at {opened['offered_rate']:.0f} single manifests/s offered (issue 18) "
                f"| p99 <= 50 ms | p99 {opened['p99_ms']:.1f} ms (p50 {opened['p50_ms']:.1f} ms; "
                f"achieved {opened['rate']:.0f}/s) | {mark(opened['p99_ms'] <= 50)} |"
            )
        if batch:
            rows.append(
                f"| batch ingest over the raw executemany rate (issue 18) | ratio >= 0.25 "
                f"| {batch['ratio']:.2f} ({batch['rate']:.0f} of {ingest['raw']['rate']:.0f}/s) "
                f"| {mark(batch['ratio'] >= 0.25)} |"
            )
    if "ui" in figures:
        rows += _ui_targets(figures["ui"], mark)
    if "converge" in figures:
        rows += _converge_targets(figures["converge"], mark)
    if not rows:
        return []
    return ["| target | goal | this run (medians) | |", "|---|---|---|---|", *rows]


def _ui_targets(ui: dict, mark: Callable[[bool], str]) -> list[str]:
    """Every page's p50 at the largest size against the smallest (issue 18: under 1.3)."""
    largest = next(size for size in ui["sizes"] if size["events"] == ui["largest"])
    rows = []
    for page, ratio in ui["p50_ratios"].items():
        p50 = largest["pages"][page]["p50_ms"]
        rows.append(
            f"| web UI {page} page, {ui['largest']:,} vs {ui['smallest']:,} events (issue 18) | p50 ratio < 1.3 "
            f"| {ratio:.2f} ({p50:.1f} ms at {ui['largest']:,}) | {mark(ratio < 1.3)} |"
        )
    return rows


def no_change_seconds(fleet: dict) -> float:
    """The median wall time of a fleet's no-change site.yml runs (every run after its first)."""
    return statistics.median(run["seconds"] for run in fleet["runs"][1:])


def clean(run: dict) -> bool:
    """The run went through and found nothing to change."""
    recap = run["recap"] or {}
    return run["exit"] == 0 and bool(recap) and all(counts["changed"] == 0 for counts in recap.values())


def _converge_targets(converge: dict, mark: Callable[[bool], str]) -> list[str]:
    """The no-change site.yml: under 30 s at 4 hosts, under 3 x that at 12 (issue 18), by the median of each
    fleet's no-change runs, every one of which must have changed nothing."""
    fleets = {fleet["hosts"]: fleet for fleet in converge.get("fleets", [])}
    all_clean = {hosts: all(clean(run) for run in fleet["runs"][1:]) for hosts, fleet in fleets.items()}
    rows = []
    if 4 in fleets:
        seconds = no_change_seconds(fleets[4])
        rows.append(
            f"| `site.yml` with nothing to change, 4 lab hosts, median of {len(fleets[4]['runs']) - 1} runs (issue 18) "
            f"| < 30 s | {seconds:.1f} s | {mark(seconds < 30 and all_clean[4])} |"
        )
    if 4 in fleets and 12 in fleets:
        ratio = no_change_seconds(fleets[12]) / no_change_seconds(fleets[4])
        rows.append(
            f"| `site.yml` with nothing to change, 12 lab hosts over 4 (issue 18) | < 3 x | {ratio:.2f} x "
            f"({no_change_seconds(fleets[12]):.1f} s) | {mark(ratio < 3 and all_clean[12])} |"
        )
    return rows


def shown_command(command: list[str]) -> str:
    """The stage's command as a reader would type it: repository-relative, scratch files as FILE."""
    return shlex.join(_shown_word(word) for word in command)


def _shown_word(word: str) -> str:
    if word.startswith(str(REPO) + "/"):
        return word[len(str(REPO)) + 1 :]
    return "FILE" if word.startswith(tempfile.gettempdir() + "/") else word


def exit_text(run: dict) -> str:
    """The exit status; for a failed run, the hosts that failed or were unreachable and the kept log."""
    if run["exit"] == 0:
        return "0"
    recap = run["recap"] or {}
    hosts = sorted(host for host, counts in recap.items() if counts["failed"] or counts["unreachable"])
    return f"{run['exit']} ({', '.join(hosts) or 'no recap'}; log `{run['log']}`)"


def converge_fleets_section(converge: dict) -> list[str]:
    rows = []
    for fleet in converge["fleets"]:
        for number, run in enumerate(fleet["runs"]):
            name = "first" if number == 0 else f"no change {number}"
            rows.append(
                f"| {fleet['hosts']} | {name} | {run['seconds']:.1f} | {run['controller_cpu']:.1f} | {exit_text(run)} "
                f"| {changed_total(run['recap'])} | {run['load'][0]} / {run['load'][1]} |"
            )
    lines = [
        f"Source: {converge['source']}, {converge['date']}; forks {converge['forks']}. Each fleet is started fresh "
        "(scripts/lab.sh, bench/lab_fleet.py: the lab inventory plus clients shaped like client1) and removed after; "
        "site.yml runs once on it, then again with nothing to change.",
        "",
        "| hosts | run | wall s | controller CPU s | exit | changed (total, per host) | load start / end |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    by_size = {fleet["hosts"]: fleet for fleet in converge["fleets"]}
    for hosts, fleet in sorted(by_size.items()):
        lines.append(
            f"{'' if hosts != min(by_size) else chr(10)}No change, {hosts} hosts, median: "
            f"**{no_change_seconds(fleet):.1f} s**."
        )
    if len(by_size) > 1:
        small, large = by_size[min(by_size)], by_size[max(by_size)]
        first = large["runs"][0]["seconds"] / small["runs"][0]["seconds"]
        no_change = no_change_seconds(large) / no_change_seconds(small)
        lines.append(
            f"Ratio {large['hosts']} / {small['hosts']} hosts, first run: **{first:.2f}**; "
            f"no change (medians): **{no_change:.2f}**."
        )
    return lines


def converge_section(converge: dict | None, reason: str) -> list[str]:
    if converge is None:
        return [f"**Not measured in this run.** {reason}"]
    if "fleets" in converge:
        return converge_fleets_section(converge)
    durations = converge["durations"]
    return [
        f"Source: the log `{converge['source']}` (last written {converge['date']}), not this run: "
        "`molecule test` of molecule/default, whose converge step is `playbooks/site.yml` on a fresh "
        "lab fleet and whose idempotence step runs it a second time.",
        "",
        f"- first run (converge): changed {changed_total(converge['first'])}",
        f"- second run (idempotence): changed {changed_total(converge['second'])}",
        "- wall time: "
        + (
            ", ".join(durations) if durations else "**not recorded in that log** (no timing callback), so no time ratio"
        ),
    ]


def write_document(
    path: Path,
    *,
    command: str,
    info: dict[str, str],
    stages: dict[str, Stage],
    figures: dict[str, dict],
    converge: dict | None,
    converge_reason: str,
    started: dt.datetime,
    total_seconds: float,
    load_start: str,
    load_end: str,
    notes: list[str],
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Figures from one run of `{command}`, started {started.strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{total_seconds / 60:.0f} min in all. Every figure is a ratio against a baseline measured in the same "
        "run; variants are interleaved so that other load hits them alike. Other work may share the machine, "
        "so the load average is given beside each figure.",
        "",
        "## Targets",
        "",
        *targets(figures),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in info.items()],
        f"| load average (1, 5, 15 min) | start {load_start}; end {load_end} |",
        "",
    ]
    sections = [
        ("evidence", "Host runner: `bk-run backup` vs bare `restic backup` (issue 3), and signing rates"),
        ("callback", "Callback plugin: 500-task playbook, callback off vs on"),
        ("ingest", "Reporter ingest: single, batch and open loop vs raw insert (bench/ingest.py)"),
        ("ui", "Web UI: every page that reads events, 100,000 vs 10,000,000 events (bench/ui.py)"),
    ]
    for key, title in sections:
        lines += [f"## {title}", ""]
        stage = stages.get(key)
        if stage is None:
            lines += ["Not run (skipped with --skip).", ""]
            continue
        lines.append(
            f"`{shown_command(stage.command)}` — {stage.seconds / 60:.1f} min, exit {stage.status}, "
            f"load {stage.load_start} at start, {stage.load_end} at end."
        )
        lines.append("")
        if key == "evidence" and key in figures:
            lines += runner_section(figures[key])
        elif key == "callback" and key in figures:
            lines += callback_section(figures[key])
        else:
            lines += ["```", stage.clean_output(), "```"]
        lines.append("")
    lines += [
        "## Converge: first and second `site.yml` on the lab fleet",
        "",
        *converge_section(converge, converge_reason),
        "",
    ]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    path.write_text("\n".join(lines) + kept_by_hand(path))


# From this heading on, docs/benchmarks.md is written by people (trials, what was tried and not
# kept) and every run keeps it as it is.
TRIALS_HEADING = "## Trials (kept by hand)"


def kept_by_hand(path: Path) -> str:
    """The hand-written tail of the previous docs/benchmarks.md, if it has one."""
    if not path.exists():
        return ""
    previous = path.read_text()
    at = previous.find("\n" + TRIALS_HEADING + "\n")
    return previous[at:] if at >= 0 else ""


def run_json_stage(
    name: str, options: list[str], scratch: Path, stages: dict[str, Stage], figures: dict[str, dict]
) -> None:
    """Run bench/NAME.py with --json into the scratch directory and keep its figures."""
    out = scratch / f"{name}.json"
    stages[name] = Stage(name, [PYTHON, f"bench/{name}.py", *options, "--json", str(out)])
    stages[name].run()
    if out.exists():
        figures[name] = json.loads(out.read_text())


def run_stages(args: argparse.Namespace) -> tuple[dict[str, Stage], dict[str, dict]]:
    scratch = Path(tempfile.mkdtemp(prefix="bk-bench-all-"))
    stages: dict[str, Stage] = {}
    figures: dict[str, dict] = {}
    try:
        if "evidence" not in args.skip:
            size = (
                ["--size-mb", str(args.runner_size_mb)] if args.runner_size_mb else ["--gigabytes", str(args.gigabytes)]
            )
            run_json_stage("evidence", [*size, "--repeat", str(args.runner_repeat)], scratch, stages, figures)
        if "callback" not in args.skip:
            run_json_stage(
                "callback",
                ["--tasks", str(args.callback_tasks), "--repeat", str(args.callback_repeat)],
                scratch,
                stages,
                figures,
            )
        if "ingest" not in args.skip:
            run_json_stage("ingest", shlex.split(args.ingest_args), scratch, stages, figures)
        if "ui" not in args.skip:
            wait_for_cluster(args.ui_dir, 3600)
            events = args.ui_events or [100_000, 10_000_000]
            command_ui = [PYTHON, "bench/ui.py", "--dir", str(args.ui_dir)]
            for count in events:
                command_ui += ["--events", str(count)]
            out = scratch / "ui.json"
            stages["ui"] = Stage("ui", [*command_ui, "--json", str(out)])
            stages["ui"].run()
            if out.exists():
                figures["ui"] = json.loads(out.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return stages, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--gigabytes", type=int, default=1, help="runner data set (default 1 GB)")
    parser.add_argument("--runner-size-mb", type=int, help="runner data set in MB instead (for a quick try)")
    parser.add_argument("--runner-repeat", type=int, default=5)
    parser.add_argument("--callback-repeat", type=int, default=3)
    parser.add_argument("--callback-tasks", type=int, default=500)
    parser.add_argument("--ui-dir", type=Path, default=REPO / ".cache" / "bench" / "ui", help="cached UI databases")
    parser.add_argument("--ui-events", type=int, action="append", help="default: 100000 and 10000000")
    parser.add_argument("--ingest-args", default="", help="extra arguments for bench/ingest.py")
    parser.add_argument(
        "--with-lab", action="store_true", help="converge fresh lab fleets (see --converge-hosts), site.yml twice each"
    )
    parser.add_argument(
        "--converge-hosts", type=int, action="append", help="lab fleet sizes for --with-lab (default: 4 and 12)"
    )
    parser.add_argument("--converge-log", type=Path, help="take converge figures from this molecule/ansible log")
    parser.add_argument("--skip", action="append", default=[], choices=["evidence", "callback", "ingest", "ui"])
    parser.add_argument("--note", action="append", default=[], help="a line for the Notes section")
    args = parser.parse_args()
    arguments = shlex.join(sys.argv[1:])
    if os.environ.get("BK_BENCH_VIA_MAKE"):
        command = "make bench" + (f" BENCH_ARGS={shlex.quote(arguments)}" if arguments else "")
    else:
        command = shlex.join(["bench/run_all.py", *sys.argv[1:]])

    started_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    load_start = load()
    info = machine()
    print(json.dumps(info, indent=1), flush=True)
    stages, figures = run_stages(args)

    converge = None
    reason = (
        "Run with `--with-lab` (fresh lab fleets of 4 and 12 hosts, site.yml twice on each: tens of minutes) "
        "or `--converge-log FILE` (a molecule "
        "log) to include it; the lab belongs to the end-to-end work and was not started by this benchmark."
    )
    if args.with_lab:
        converge = converge_with_lab(args.converge_hosts or [4, 12])
        figures["converge"] = converge
    elif args.converge_log:
        converge = converge_from_log(args.converge_log)
    notes = [f"- {note}" for note in args.note]
    ui_dir = args.ui_dir
    if "ui" in stages:
        notes.append(
            f"- The UI databases are cached in `{ui_dir.relative_to(REPO) if ui_dir.is_relative_to(REPO) else ui_dir}` "
            "(bench/ui.py reuses a database it loaded before; the `load` column says `reused` then). "
            "Delete that directory to rebuild them."
        )
    write_document(
        args.output,
        command=command,
        info=info,
        stages=stages,
        figures=figures,
        converge=converge,
        converge_reason=reason,
        started=started_at,
        total_seconds=time.monotonic() - started,
        load_start=load_start,
        load_end=load(),
        notes=notes,
    )
    print(f"\nwrote {args.output} ({(time.monotonic() - started) / 60:.1f} min)")
    return 1 if any(stage.status for stage in stages.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
