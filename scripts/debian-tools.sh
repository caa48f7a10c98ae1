#!/usr/bin/env bash
# Fetches the newer restic and restic's own REST server from Debian's archive
# and unpacks them under .cache/debian-tools/<suite>/, so the tests run
# against every restic bk supports, not only the machine's own:
#   trixie (Debian 13, stable): restic 0.18, restic-rest-server 0.13
#   sid    (unstable):          restic 0.19
# The machine's restic (Debian 12: 0.14) and rclone stay what they are.
#
# The machine's apt sources and state stay untouched: apt runs with a private
# sources list, lists directory and cache under .cache/debian-tools/apt-<suite>.
# Both are static Go binaries (libc6 only), so they run on a Debian 12 machine.
#
# Idempotent: a suite whose binaries are unpacked is not fetched again.
# Usage: scripts/debian-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mirror.sh

DIR=.cache/debian-tools

say() { printf '\033[1m==> debian-tools: %s\033[0m\n' "$*" >&2; }

# fetch SUITE PACKAGE...: unpack the packages' files into $DIR/SUITE.
fetch() {
  local suite=$1
  shift
  local root=$DIR/$suite apt_dir=$DIR/apt-$suite pkg
  [ -s "$root/versions.txt" ] && return 0
  say "fetching $* from Debian $suite"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $suite main" >"$apt_dir/sources.list"
  local apt_options=(
    -o "Dir::Etc::sourcelist=$PWD/$apt_dir/sources.list"
    -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$PWD/$apt_dir/lists"
    -o "Dir::Cache=$PWD/$apt_dir/cache"
    -o APT::Sandbox::User=root
  )
  apt-get "${apt_options[@]}" -qq update
  local tmp
  tmp=$(mktemp -d "$DIR/.unpack.XXXXXX")
  (cd "$tmp" && apt-get "${apt_options[@]}" -qq download "$@")
  for pkg in "$@"; do
    dpkg-deb -x "$tmp/${pkg}"_*.deb "$tmp/root"
    echo "$pkg $(dpkg-deb -f "$tmp/${pkg}"_*.deb Version)" >>"$tmp/root/versions.txt"
  done
  "$tmp/root/usr/bin/restic" version >/dev/null
  rm -rf "$root" "$apt_dir/cache"
  mv "$tmp/root" "$root"
  rm -rf "$tmp"
  say "$suite: $(tr '\n' ' ' <"$root/versions.txt")"
}

mkdir -p "$DIR"
fetch trixie restic restic-rest-server
fetch sid restic
