#!/usr/bin/env bash
# Installs, idempotently, everything `make test` and `make demo` need:
# Debian packages, the .venv with pinned Python dependencies, and the Ansible
# collections the tests use. A second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  restic rclone postgresql openssh-client openssh-server podman runc debootstrap uidmap
  chromium python3-venv make git curl ca-certificates shellcheck haproxy
)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

missing_apt_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

install_apt_packages() {
  local missing
  missing=$(missing_apt_packages | tr '\n' ' ')
  [ -z "${missing// }" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "Missing Debian packages: $missing" >&2
    echo "Install them as root:  apt-get install -y $missing" >&2
    exit 1
  fi
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # The distribution starts a cluster on install; bk runs its own throwaway clusters.
  systemctl disable --now postgresql >/dev/null 2>&1 || true
  # Likewise HAProxy: the replica test runs its own balancer on loopback.
  systemctl disable --now haproxy >/dev/null 2>&1 || true
}

install_venv() {
  local stamp=.venv/.requirements.sha256 want
  want=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "creating .venv with pinned Python dependencies"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt -c requirements/constraints.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" >"$stamp"
}

# containers.podman (for molecule's podman driver) from the PyPI `ansible` wheel:
# the only registry reachable here. Only that collection is extracted.
install_collections() {
  local dest=.cache/collections/ansible_collections
  [ -f "$dest/containers/podman/MANIFEST.json" ] && return 0
  say "extracting containers.podman from the ansible wheel"
  local tmp version
  tmp=$(mktemp -d)
  version=$(grep -E '^ansible==' requirements/collections.txt | cut -d= -f3)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$tmp" "ansible==$version"
  mkdir -p "$dest"
  .venv/bin/python - "$tmp"/ansible-*.whl "$dest" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "ansible_collections/containers/podman/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix):
            zf.extract(name, dest.rsplit("ansible_collections", 1)[0])
PY
  rm -rf "$tmp"
}

# The collection itself, importable as ansible_collections.bkfleet.backup.
link_collection() {
  local ns=.cache/collections/ansible_collections/bkfleet
  [ -L "$ns/backup" ] && return 0
  mkdir -p "$ns"
  ln -sfn ../../../.. "$ns/backup"
}

install_apt_packages
scripts/debian-tools.sh
install_venv
install_collections
link_collection
