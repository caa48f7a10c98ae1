#!/usr/bin/env bash
# `make demo` / `make demo-down`: a lab fleet backed up by bk, shown by its reporter.
#
#   scripts/demo.sh up     build what is missing (the lab image), start the lab fleet
#                          (podman containers with systemd), run playbooks/site.yml,
#                          fire every backup through its systemd timer, let the hub
#                          sign its receipts and copy offsite, run a restore drill,
#                          then serve the reporter on http://127.0.0.1:8080 and prove,
#                          with a screenshot, that every host has a confirmed backup.
#   scripts/demo.sh down   stop the port forward and remove the lab fleet.
#   scripts/demo.sh status what is running.
#
# Idempotent: a second `up` reuses the image, the running containers and the
# forward; site.yml changes nothing the second time; backups run again.
# Environment: BK_DEMO_INVENTORY (default: the lab inventory in tests/lab/),
# BK_DEMO_PORT (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# shellcheck source=scripts/env.sh
source scripts/env.sh

PORT=${BK_DEMO_PORT:-8080}
STATE=.cache/demo
FORWARD_PID=$STATE/forward.pid
FORWARD_LOG=$STATE/forward.log
BKMOL=molecule/default/files/bkmol.py
OUTPUT=tests/output
STARTED=$SECONDS
STEP=0
STEPS=9

say() { printf '\033[1m==> demo: %s\033[0m\n' "$*" >&2; }
step() {
  STEP=$((STEP + 1))
  printf '\n\033[1;34m[%d/%d %4ds] %s\033[0m\n' "$STEP" "$STEPS" "$((SECONDS - STARTED))" "$*" >&2
}
die() { printf '\033[1;31mdemo: %s\033[0m\n' "$*" >&2; exit 1; }

inventory() {
  if [ -n "${BK_DEMO_INVENTORY:-}" ]; then
    echo "$BK_DEMO_INVENTORY"
  elif [ -e tests/lab/inventory.yml ]; then
    echo tests/lab/inventory.yml
  else
    die "no lab inventory tests/lab/inventory.yml (set BK_DEMO_INVENTORY)"
  fi
}

# The lab inventory, plus the SSH access scripts/lab.sh up writes (much faster
# than podman exec) when it is there.
inventory_args() {
  INV_ARGS=(-i "$INVENTORY")
  [ -f .cache/lab/ssh-inventory.yml ] && INV_ARGS+=(-i .cache/lab/ssh-inventory.yml)
  return 0
}

# An ssh_config for the lab helper from the SSH access scripts/lab.sh writes, so that
# it reaches the hosts over multiplexed SSH rather than `podman exec`.
lab_ssh_config() {
  [ -f .cache/lab/ssh-inventory.yml ] || return 0
  mkdir -p "$STATE"
  ansible-inventory -i .cache/lab/ssh-inventory.yml --list 2>/dev/null | python3 -c 'import json, sys
hostvars = json.load(sys.stdin).get("_meta", {}).get("hostvars", {})
for name, v in sorted(hostvars.items()):
    address, user, key = v["ansible_host"], v.get("ansible_user", "root"), v["ansible_ssh_private_key_file"]
    print(f"Host {name}\n  HostName {address}\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes")
print("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR")' >"$STATE/ssh_config"
  export BKMOL_SSH_CONFIG=$PWD/$STATE/ssh_config
}

# Hosts of a group of the lab inventory, one per line.
group_hosts() {
  ansible-inventory "${INV_ARGS[@]}" --list 2>/dev/null |
    python3 -c 'import json, sys
inv = json.load(sys.stdin)
def hosts(group, seen=()):
    node = inv.get(group, {})
    out = list(node.get("hosts", []))
    for child in node.get("children", []):
        if child not in seen:
            out += hosts(child, seen + (group,))
    return out
print("\n".join(dict.fromkeys(hosts(sys.argv[1]))))' "$1"
}

# Runs one check or action of the lab helper and prints its summary and problems.
bkmol() {
  local out rc=0
  out=$(python3 "$BKMOL" "$@") || rc=$?
  printf '%s\n' "$out" | python3 -c 'import json, sys
r = json.load(sys.stdin)
for line in r.get("summary") or []:
    print("    " + line)
for problem in r.get("problems") or []:
    print("    PROBLEM: " + problem)' >&2
  [ "$rc" = 0 ] || die "lab check failed: $1"
}

# HOST:TIMER pairs of kinds of units (backup, receipts, offsite...) from `bkmol units`.
units_pairs() {
  local units=$1
  shift
  printf '%s' "$units" | python3 -c 'import json, sys
u = json.load(sys.stdin)
print(" ".join(e["pair"] for kind in sys.argv[1:] for e in u[kind]))' "$@"
}

# Lab clients whose jobs dump a PostgreSQL database (client2) run the server the
# dump reads: the image ships it disabled, as a fresh Debian host would be.
start_databases() {
  local host
  for host in $(group_hosts bk_clients); do
    ansible-inventory "${INV_ARGS[@]}" --host "$host" 2>/dev/null |
      python3 -c 'import json, sys
jobs = json.load(sys.stdin).get("client_jobs") or []
sys.exit(0 if any((j.get("dump") or {}).get("type") == "postgresql" for j in jobs) else 1)' || continue
    podman exec "$host" systemctl enable --now --quiet postgresql.service
    podman exec "$host" runuser -u postgres -- pg_isready --quiet --timeout=60 ||
      die "PostgreSQL on $host does not accept connections"
    say "$host: PostgreSQL running (its backup job dumps a database)"
  done
}

reporter_target() {
  # The reporter's address on the lab network and the port its clients deliver to.
  local reporter url port ip
  reporter=$(group_hosts bk_reporter | sed -n 1p)
  [ -n "$reporter" ] || die "the lab inventory has no bk_reporter host"
  url=$(podman exec "$reporter" python3 -c 'import json; print(json.load(open("/etc/bk/bk.json")).get("reporter_url") or "")' 2>/dev/null || true)
  if [ -z "$url" ]; then
    local client
    client=$(group_hosts bk_clients | sed -n 1p)
    url=$(podman exec "$client" python3 -c 'import json; print(json.load(open("/etc/bk/bk.json")).get("reporter_url") or "")')
  fi
  port=$(python3 -c 'import sys, urllib.parse; u = urllib.parse.urlsplit(sys.argv[1]); print(u.port or (443 if u.scheme == "https" else 80))' "$url")
  ip=$(podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$reporter" | awk '{print $1}')
  [ -n "$ip" ] || die "cannot find $reporter's address"
  echo "$ip $port"
}

FORWARDER='
import asyncio, sys
listen_port, target_host, target_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(client_reader, client_writer):
    try:
        reader, writer = await asyncio.open_connection(target_host, target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print(f"forwarding 127.0.0.1:{listen_port} to {target_host}:{target_port}", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'

forward_running() {
  [ -s "$FORWARD_PID" ] || return 1
  local pid
  pid=$(head -n1 "$FORWARD_PID")
  kill -0 "$pid" 2>/dev/null && grep -q "bk-demo-forward" "/proc/$pid/cmdline" 2>/dev/null
}

forward_start() {
  local ip=$1 port=$2 want="$1:$2"
  mkdir -p "$STATE"
  if forward_running && [ "$(sed -n 2p "$FORWARD_PID")" = "$want" ]; then
    say "port forward 127.0.0.1:$PORT -> $want already running (pid $(head -n1 "$FORWARD_PID"))"
    return
  fi
  forward_stop
  if python3 -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$PORT"; then
    die "127.0.0.1:$PORT is taken by another program; set BK_DEMO_PORT"
  fi
  setsid python3 -c "$FORWARDER" "$PORT" "$ip" "$port" bk-demo-forward >"$FORWARD_LOG" 2>&1 </dev/null &
  printf '%s\n%s\n' "$!" "$want" >"$FORWARD_PID"
  local _
  for _ in $(seq 1 50); do
    python3 -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$PORT" && break
    sleep 0.1
  done
  say "port forward 127.0.0.1:$PORT -> $want (pid $(head -n1 "$FORWARD_PID"))"
}

forward_stop() {
  if forward_running; then
    local pid
    pid=$(head -n1 "$FORWARD_PID")
    kill "$pid" 2>/dev/null || true
    say "stopped the port forward (pid $pid)"
  fi
  rm -f "$FORWARD_PID"
}

wait_reporter() {
  local _
  for _ in $(seq 1 60); do
    curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$PORT/api/v1/hosts" && return 0
    sleep 1
  done
  die "the reporter does not answer on http://127.0.0.1:$PORT/api/v1/hosts"
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (rootful podman): sudo make demo"
  INVENTORY=$(inventory)
  inventory_args

  step "lab images: Debian 13 and 12 (built once, cached)"
  scripts/lab-image.sh

  step "lab fleet: podman containers with systemd ($(group_hosts all | tr '\n' ' '))"
  scripts/lab.sh up
  inventory_args
  lab_ssh_config
  start_databases

  step "ansible-playbook playbooks/site.yml (hub, reporter, clients, offsite)"
  ansible-playbook "${INV_ARGS[@]}" playbooks/site.yml

  local hosts units
  mapfile -t hosts < <(group_hosts all)
  units=$(python3 "$BKMOL" units "${hosts[@]}") || die "bk units missing: $units"
  local without
  without=$(printf '%s' "$units" | python3 -c 'import json, sys
u = json.load(sys.stdin)
print(" ".join(h for h in sys.argv[1:] if not any(e["host"] == h for e in u["backup"])))' "${hosts[@]}")
  [ -z "$without" ] || say "lab hosts without a backup job of their own (not in the check): $without"

  step "backups: every client job fired through its systemd timer"
  # shellcheck disable=SC2046
  bkmol fire $(units_pairs "$units" backup) --timeout 900

  step "hub: signed receipts and offsite copies (through their timers)"
  # shellcheck disable=SC2046
  bkmol fire $(units_pairs "$units" receipts offsite) --timeout 900

  step "restore drill (playbooks/drill.yml): a signed drill manifest"
  ansible-playbook "${INV_ARGS[@]}" playbooks/drill.yml
  # The drill's manifests wait in each host's spool; the flush timers deliver them.
  # shellcheck disable=SC2046
  bkmol fire $(units_pairs "$units" flush)

  step "reporter: http://127.0.0.1:$PORT"
  local target
  target=$(reporter_target)
  # shellcheck disable=SC2086
  forward_start $target
  wait_reporter

  step "check: every lab host has a confirmed backup (API + screenshot)"
  mkdir -p "$OUTPUT"
  BK_REPORTER_URL="http://127.0.0.1:$PORT" BK_SCREENSHOT=demo-overview.png \
    BK_EXPECT_HOSTS=$(group_hosts bk_clients | paste -sd, -) \
    pytest -p no:cacheprovider -q tests/lab/test_demo_overview.py

  step "done in $((SECONDS - STARTED)) s"
  cat >&2 <<EOF

  bk demo is up. Look at:
    Reporter (UI)         http://127.0.0.1:$PORT/
    Hosts and jobs (API)  http://127.0.0.1:$PORT/api/v1/hosts
    Events (API)          http://127.0.0.1:$PORT/api/v1/events?host=$(group_hosts bk_clients | sed -n 1p)
    Screenshot            $OUTPUT/demo-overview.png
    The fleet             scripts/lab.sh status
    A host's timers       podman exec $(group_hosts bk_clients | sed -n 1p) systemctl list-timers 'bk-*'
    Back up now           ansible-playbook ${INV_ARGS[*]} playbooks/backup_now.yml
    Restore drill         ansible-playbook ${INV_ARGS[*]} playbooks/drill.yml

  Stop it with:  make demo-down
EOF
}

down() {
  step "stop the port forward"
  forward_stop
  step "remove the lab fleet"
  scripts/lab.sh down
  say "the lab images stay cached (podman rmi localhost/bk-lab:13 localhost/bk-lab:12 removes them)"
}

status() {
  INV_ARGS=()
  scripts/lab.sh status
  if forward_running; then
    echo "port forward 127.0.0.1:$PORT -> $(sed -n 2p "$FORWARD_PID") (pid $(head -n1 "$FORWARD_PID"))"
  else
    echo "no port forward"
  fi
}

case "${1:-}" in
  up) up ;;
  down) STEPS=2; down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
