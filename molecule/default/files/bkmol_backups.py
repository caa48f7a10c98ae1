"""Backups and their evidence: the chain of manifests at the reporter, hub receipts, timers firing
their services, the units, a host's state, snapshots, append-only refusals, file trees compared, and
one signed manifest of a kind.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from bkmol_hosts import (
    CheckFailed,
    Json,
    bk_units,
    jobs,
    journal,
    list_dir,
    monotonic_usec,
    read_file,
    read_json,
    run,
    show,
    show_many,
    spool_dir,
    state_dir,
    systemd_time,
    text,
    wait_for_run,
)
from bkmol_reporter import Reporter, host_public_keys, manifests, ssh_verify
from bkmol_restic import hub_data_dir, job_repo_env, parse_time, repo_name_from_url, restic_json

DROPIN_NAME = "zz-bk-molecule-fire.conf"


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
                out.append(fire_one(host, timer, args.timeout, args.expect, args.stop_after))
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


def fire_one(host: str, timer: str, timeout: float, expect: str, stop_after: float | None = None) -> Json:
    """Make a bk timer elapse now (runtime drop-in OnActiveSec=1s) and wait for its service run.

    The unit files the role wrote are untouched: a runtime drop-in in /run adds one
    trigger, and is removed again after the run. A run still going after `stop_after`
    seconds is stopped the way systemd stops it (SIGTERM), as an operator stops a backup
    that waits on an unreachable hub (restic 0.17+ retries for 15 minutes).
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
    stopped = False
    try:
        try:
            state = wait_for_run(host, service, before, stop_after or timeout)
        except CheckFailed:
            if not stop_after:
                raise
            run(host, ["systemctl", "stop", service], timeout=timeout)
            stopped = True
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
        "stopped_after_seconds": stop_after if stopped else None,
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
        for verb in ("receipts", "maintain", "flush", "reporter", "notify", "hub_server")
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


# --- subcommand: manifest ----------------------------------------------------------------------------


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
