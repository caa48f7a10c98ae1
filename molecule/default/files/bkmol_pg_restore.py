"""A job's PostgreSQL dump restored from the hub into a fresh database and compared with the original."""

from __future__ import annotations

import argparse

from bkmol_hosts import Json, jobs, run, text
from bkmol_restic import job_repo_env, restic_json

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
