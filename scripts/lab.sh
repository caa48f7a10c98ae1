#!/usr/bin/env bash
# Starts, stops and lists the lab fleet: rootful podman containers running
# systemd, one per host, on the user-created network bk-lab. Container name ==
# hostname (podman's DNS resolves names, not --hostname).
#
# Usage: scripts/lab.sh up|down|status [HOST...]
# Default hosts: hub reporter client1 client2 (or $BK_LAB_HOSTS); client1 on
# Debian 12 (localhost/bk-lab:12), the others on Debian 13 (localhost/bk-lab:13).
#
# `up` also writes every lab host's address into each lab host's /etc/hosts,
# authorizes the key .cache/lab/id_ed25519 for root, and writes
# .cache/lab/ssh-inventory.yml: add it after tests/lab/inventory.yml
# (`-i tests/lab/inventory.yml -i .cache/lab/ssh-inventory.yml`) to reach the
# hosts over SSH with pipelining, many times faster than `podman exec`.
# BK_LAB_STATE (default .cache/lab) holds that key and inventory: a second fleet
# on a network of its own (bench/run_all.py's converge fleets) keeps its own.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every lab host boots Debian 13 but the clients named here, on Debian 12: real
# fleets upgrade host by host. BK_LAB_IMAGE puts every host on one image instead.
read -r -a DEBIAN12_HOSTS <<<"${BK_LAB_DEBIAN12_HOSTS-client1}"
NETWORK=${BK_LAB_NETWORK:-bk-lab}
STATE=${BK_LAB_STATE:-.cache/lab}
read -r -a DEFAULT_HOSTS <<<"${BK_LAB_HOSTS:-hub reporter client1 client2}"
RUN_FLAGS=(
  --runtime runc
  --ulimit nofile=16384:16384 --ulimit nproc=16384:16384
  --cap-add SYS_ADMIN
  --systemd=always
  --label bk.lab=1
)

say() { printf '\033[1m==> lab: %s\033[0m\n' "$*" >&2; }

image_for() {
  local host=$1 old
  if [ -n "${BK_LAB_IMAGE:-}" ]; then echo "$BK_LAB_IMAGE"; return; fi
  for old in "${DEBIAN12_HOSTS[@]}"; do
    if [ "$old" = "$host" ]; then echo localhost/bk-lab:12; return; fi
  done
  echo localhost/bk-lab:13
}

wait_booted() {
  local host=$1 state _
  for _ in $(seq 1 180); do
    state=$(podman exec "$host" systemctl is-system-running 2>/dev/null || true)
    case "$state" in
      running | degraded) echo "$state"; return 0 ;;
    esac
    sleep 0.5
  done
  echo "${state:-unknown}"
  return 1
}

up() {
  scripts/lab-image.sh
  podman network exists "$NETWORK" || { say "creating network $NETWORK"; podman network create "$NETWORK" >/dev/null; }
  local host
  for host in "$@"; do
    # podman can report a container as running whose processes are gone (its
    # conmon was killed with the session that started it): only a container
    # that still runs commands is reused, any other is replaced.
    if [ "$(podman container inspect --format '{{.State.Running}}' "$host" 2>/dev/null)" = true ]; then
      if podman exec "$host" true 2>/dev/null; then
        say "$host already running"
        continue
      fi
      say "$host is reported running but does not answer: replacing it"
    fi
    podman container exists "$host" && podman rm -f "$host" >/dev/null
    podman run -d --name "$host" --hostname "$host" --network "$NETWORK" "${RUN_FLAGS[@]}" \
      "$(image_for "$host")" /sbin/init >/dev/null
  done
  local state
  for host in "$@"; do
    state=$(wait_booted "$host") || { say "$host did not finish booting: $state"; exit 1; }
    say "$host: $state"
  done
  write_hosts
  write_ssh_access
}

# podman's CNI backend resolves container names only with the dnsname plugin:
# write every lab host's name and address into each lab host's /etc/hosts.
write_hosts() {
  local entries host
  entries=$(podman ps --filter label=bk.lab=1 --filter "network=$NETWORK" --format '{{.Names}}' |
    while read -r host; do
      printf '%s %s # bk-lab\n' \
        "$(podman inspect --format "{{ (index .NetworkSettings.Networks \"$NETWORK\").IPAddress }}" "$host")" "$host"
    done)
  for host in $(podman ps --filter label=bk.lab=1 --filter "network=$NETWORK" --format '{{.Names}}'); do
    # /etc/hosts is bind-mounted: rewrite it in place, never rename onto it.
    podman exec -i "$host" sh -c 'grep -v " # bk-lab$" /etc/hosts >/tmp/.hosts; cat /tmp/.hosts - >/etc/hosts; rm -f /tmp/.hosts' <<<"$entries"
  done
}

down() {
  local host
  for host in "$@"; do
    podman container exists "$host" && { say "removing $host"; podman rm -f -t 5 "$host" >/dev/null; }
  done
  if podman network exists "$NETWORK" &&
    [ -z "$(podman ps -a --filter "network=$NETWORK" --format '{{.Names}}')" ]; then
    say "removing network $NETWORK"
    podman network rm "$NETWORK" >/dev/null
    rm -f "$STATE/ssh-inventory.yml"
  elif podman network exists "$NETWORK"; then
    write_hosts
    write_ssh_access
  fi
}

# SSH access for Ansible: a lab-only key, and an inventory fragment with each
# host's address (host keys change with every container: not pinned).
write_ssh_access() {
  local dir=$STATE host address
  mkdir -p "$dir"
  [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C bk-lab -f "$dir/id_ed25519"
  {
    echo "# Written by scripts/lab.sh up: SSH access to the running lab hosts."
    echo "all:"
    echo "  hosts:"
    for host in $(podman ps --filter label=bk.lab=1 --filter "network=$NETWORK" --format '{{.Names}}' | sort); do
      podman exec -i "$host" sh -c 'umask 077; mkdir -p /root/.ssh; cat >/root/.ssh/authorized_keys' <"$dir/id_ed25519.pub"
      address=$(podman inspect --format "{{ (index .NetworkSettings.Networks \"$NETWORK\").IPAddress }}" "$host")
      echo "    $host:"
      echo "      ansible_connection: ssh"
      echo "      ansible_host: $address"
      echo "      ansible_user: root"
      echo "      ansible_ssh_private_key_file: $PWD/$dir/id_ed25519"
      echo "      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
      echo "      ansible_ssh_pipelining: true"
    done
  } >"$dir/ssh-inventory.yml"
}

status() {
  podman ps -a --filter label=bk.lab=1 --format '{{.Names}}\t{{.Status}}\t{{.Networks}}'
}

cmd=${1:-}
shift || true
[ $# -gt 0 ] || set -- "${DEFAULT_HOSTS[@]}"
case "$cmd" in
  up) up "$@" ;;
  down) down "$@" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status [HOST...]" >&2; exit 2 ;;
esac
