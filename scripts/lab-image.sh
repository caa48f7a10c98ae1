#!/usr/bin/env bash
# Builds the lab test-host images (Debian with systemd as PID 1) for rootful
# podman, with everything a converge needs already installed, so
# `ansible-playbook playbooks/site.yml` against lab hosts needs no network:
#   localhost/bk-lab:13  Debian 13 (trixie, the stable release): every lab host but one
#   localhost/bk-lab:12  Debian 12 (bookworm): one client, as real fleets upgrade host by host
#
# Cached: each image carries the label bk.recipe=<sha256 of its recipe below>
# (suite, package list, mirror, the install_packages() and customize()
# functions). It is rebuilt only when that hash changes, or with --force.
#
# Usage: scripts/lab-image.sh [--force] [--print-hash] [RELEASE...]
#        RELEASE: 13 or 12 (default: both)
#
# Packages (see tests/lab/README.md):
# - systemd, systemd-sysv, dbus: systemd as PID 1, timers, the journal.
# - python3, python3-apt, python3-venv: Ansible modules, the host runner, the
#   reporter's virtualenv.
# - python3-bcrypt: the hub role hashes htpasswd credentials on the hub.
# - python3-cryptography is deliberately NOT installed: the lab's hosts sign
#   their manifests through the `ssh-keygen -Y sign` fallback, the path a
#   minimal Debian host takes. The reporter gets cryptography from its own
#   wheelhouse inside its virtualenv.
# - openssh-server (+ per-container host keys, see below), sudo, iproute2,
#   ca-certificates, openssl (TLS certificates for the hub), curl (probes).
# - restic, rclone: the backup tools (Debian 13: restic 0.18, Debian 12: 0.14;
#   rclone 1.60 on both).
# - restic-rest-server (Debian 13 only; Debian 12 has no such package): the
#   hub's default server, installed by the hub role from this package.
# - postgresql: client hosts with a database, and the reporter's database.
#   Its service is disabled in the image: roles enable it where it is needed.
# - cron is not installed: every lab host has systemd, so the roles use timers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mirror.sh

# debootstrap installs the base set; apt-get in the chroot adds the rest with
# proper dependency resolution (debootstrap's own resolver fails on some).
BASE=(systemd systemd-sysv dbus python3 openssh-server sudo iproute2)
COMMON_PACKAGES=(
  python3-apt python3-venv python3-bcrypt
  ca-certificates openssl curl procps less
  restic rclone postgresql
)

# select_release RELEASE: sets IMAGE, SUITE and PACKAGES for one image.
select_release() {
  IMAGE=localhost/bk-lab:$1
  PACKAGES=("${COMMON_PACKAGES[@]}")
  case "$1" in
    13) SUITE=trixie; PACKAGES+=(restic-rest-server) ;;
    12) SUITE=bookworm ;;
    *) echo "lab-image: unknown Debian release $1 (known: 13, 12)" >&2; exit 2 ;;
  esac
}

say() { printf '\033[1m==> lab-image: %s\033[0m\n' "$*" >&2; }


# The second stage: the lab's packages, installed in the chroot. Part of the recipe.
install_packages() {
  local root=$1
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  local rc=0
  {
    chroot "$root" apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
  } >"$root/../apt.log" 2>&1 || rc=$?
  umount "$root/dev/pts" "$root/dev" "$root/proc"
  rm -f "$root/usr/sbin/policy-rc.d"
  if [ "$rc" != 0 ]; then tail -20 "$root/../apt.log" >&2; return "$rc"; fi
  chroot "$root" apt-get clean
}

# Runs inside the build, with ROOTFS as $1. Part of the recipe hash.
customize() {
  local root=$1
  rm -f "$root/etc/hostname"
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  # Every container generates its own SSH host keys on first boot.
  rm -f "$root"/etc/ssh/ssh_host_*
  cat >"$root/etc/systemd/system/bk-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate this container's SSH host keys
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sysinit.target
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target ssh.service
UNIT
  chroot "$root" systemctl enable bk-ssh-hostkeys.service 2>/dev/null
  # Roles start PostgreSQL where it is needed; the cluster from the package stays.
  chroot "$root" systemctl disable postgresql.service >/dev/null 2>&1
  # The hub role runs rest-server under its own units; the package's unit stays off.
  chroot "$root" systemctl disable restic-rest-server.service >/dev/null 2>&1 || true
  # Nothing in a container needs these.
  chroot "$root" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
  # Drop caches and lists: converge installs nothing from the network.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/usr/share/doc/* \
    "$root"/usr/share/man/*
  # The Debian sources (for hosts that may still install from the registry).
  mkdir -p "$root/etc/apt/sources.list.d"
}

recipe_hash() {
  {
    echo "suite=$SUITE"
    echo "mirror=$(debian_mirror)"
    echo "base=${BASE[*]}"
    echo "packages=${PACKAGES[*]}"
    declare -f install_packages
    declare -f customize
  } | sha256sum | cut -c1-16
}

current_hash() {
  podman image inspect --format '{{ index .Labels "bk.recipe" }}' "$IMAGE" 2>/dev/null || true
}

force=false
print_hash=false
releases=()
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    --print-hash) print_hash=true ;;
    13 | 12) releases+=("$arg") ;;
    *) echo "usage: $0 [--force] [--print-hash] [13|12...]" >&2; exit 2 ;;
  esac
done
[ ${#releases[@]} -gt 0 ] || releases=(13 12)

# build: debootstrap $SUITE, install $PACKAGES, customize, import as $IMAGE.
build() {
  local want=$1 have=$2
  say "building $IMAGE (Debian $SUITE, recipe $want${have:+, was $have}); about 2 minutes"
  work=$(mktemp -d /var/tmp/bk-lab-image.XXXXXX)
  trap cleanup EXIT
  local root=$work/rootfs include started old
  include=$(IFS=,; echo "${BASE[*]}")
  say "debootstrap $SUITE from $(debian_mirror)"
  started=$SECONDS
  if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    --include="$include" "$SUITE" "$root" "$(debian_mirror)" >"$work/debootstrap.out" 2>&1; then
    tail -20 "$work/debootstrap.out" >&2
    tail -40 "$root/debootstrap/debootstrap.log" >&2 || true
    echo "lab-image: debootstrap $SUITE failed" >&2
    exit 1
  fi
  say "debootstrap done in $((SECONDS - started)) s; installing ${PACKAGES[*]}"
  install_packages "$root"
  say "packages installed at $((SECONDS - started)) s; customizing"
  customize "$root"
  say "importing into podman"
  old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  tar -C "$root" --numeric-owner -c . |
    podman import -q --change 'CMD ["/sbin/init"]' --change "LABEL bk.recipe=$want" \
      --message "bk lab host, Debian $SUITE, recipe $want" - "$IMAGE" >/dev/null
  # The previous build, now untagged, is removed unless a container still uses it.
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
  cleanup
  trap - EXIT
  say "built $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'), recipe $want, $((SECONDS - started)) s)"
}

cleanup() {
  local m
  for m in "$work/rootfs/dev/pts" "$work/rootfs/dev" "$work/rootfs/proc"; do
    if mountpoint -q "$m"; then umount "$m"; fi
  done
  rm -rf "$work"
}

checked_tools=false
for release in "${releases[@]}"; do
  select_release "$release"
  want=$(recipe_hash)
  if [ "$print_hash" = true ]; then
    echo "$IMAGE $want"
    continue
  fi
  have=$(current_hash)
  if [ "$force" = false ] && [ "$have" = "$want" ]; then
    say "$IMAGE is up to date (recipe $want)"
    continue
  fi
  if [ "$checked_tools" = false ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "lab-image: building needs root (debootstrap, rootful podman)" >&2
      exit 1
    fi
    for tool in debootstrap podman runc; do
      command -v "$tool" >/dev/null || { echo "lab-image: $tool is missing (apt-get install -y podman runc debootstrap uidmap)" >&2; exit 1; }
    done
    checked_tools=true
  fi
  build "$want" "$have"
done
