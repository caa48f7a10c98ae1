#!/usr/bin/env bash
# Starts, stops and lists the lab fleet: rootful podman containers running
# systemd, one per host, on the user-created network bk-lab. Container name ==
# hostname (podman's DNS resolves names, not --hostname).
#
# Usage: scripts/lab.sh up|down|status [HOST...]
# Default hosts: hub reporter client1 client2 (or $BK_LAB_HOSTS).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${BK_LAB_IMAGE:-localhost/bk-lab:12}
NETWORK=${BK_LAB_NETWORK:-bk-lab}
read -r -a DEFAULT_HOSTS <<<"${BK_LAB_HOSTS:-hub reporter client1 client2}"
RUN_FLAGS=(
  --runtime runc
  --ulimit nofile=16384:16384 --ulimit nproc=16384:16384
  --cap-add SYS_ADMIN
  --systemd=always
  --label bk.lab=1
)

say() { printf '\033[1m==> lab: %s\033[0m\n' "$*" >&2; }

wait_booted() {
  local host=$1 state i
  for i in $(seq 1 60); do
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
    if [ "$(podman container inspect --format '{{.State.Running}}' "$host" 2>/dev/null)" = true ]; then
      say "$host already running"
      continue
    fi
    podman container exists "$host" && podman rm -f "$host" >/dev/null
    podman run -d --name "$host" --hostname "$host" --network "$NETWORK" "${RUN_FLAGS[@]}" \
      "$IMAGE" /sbin/init >/dev/null
  done
  for host in "$@"; do
    say "$host: $(wait_booted "$host")"
  done
  write_hosts
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
  fi
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
