#!/usr/bin/env bash
# Runs bk's quality gates in order and stops at the first that fails.
# Usage: scripts/test.sh all|lint|sanity|pytest|molecule
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
source scripts/env.sh

gate() { printf '\n\033[1m==> gate: %s\033[0m\n' "$*"; }

run_lint() {
  gate "ruff"
  ruff check .
  ruff format --check .
  gate "yamllint"
  yamllint --strict .
  gate "ansible-lint (production profile)"
  ansible-lint --profile production --offline --strict
}

run_sanity() {
  gate "ansible-test sanity"
  scripts/sanity.sh
}

run_pytest() {
  gate "pytest (unit and integration)"
  pytest -p no:cacheprovider
}

run_build() {
  gate "collection build and install"
  local out=.cache/dist
  rm -rf "$out" && mkdir -p "$out"
  ansible-galaxy collection build --force --output-path "$out" . >/dev/null
  ansible-galaxy collection install --force -p "$out/installed" "$out"/bkfleet-backup-*.tar.gz >/dev/null
  ANSIBLE_COLLECTIONS_PATH="$out/installed" ansible-doc -l bkfleet.backup >/dev/null
  echo "built and installed $(basename "$out"/bkfleet-backup-*.tar.gz)"
}

run_molecule() {
  gate "molecule scenarios"
  # Every scenario runs: the end-to-end one is also what proves the reporter's
  # overview (tests/lab/test_demo_overview.py, run by its verify step).
  local scenarios
  scenarios=$(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' 2>/dev/null | sort)
  if [ -z "$scenarios" ]; then
    echo "no molecule scenario found under molecule/" >&2
    return 1
  fi
  scripts/lab-image.sh
  local dir
  for dir in $scenarios; do
    molecule test -s "$(basename "$dir")"
  done
}

case "${1:-all}" in
  lint) run_lint ;;
  sanity) run_sanity ;;
  pytest) run_pytest ;;
  build) run_build ;;
  molecule) run_molecule ;;
  all) run_lint; run_build; run_sanity; run_pytest; run_molecule ;;
  *) echo "usage: $0 all|lint|sanity|pytest|build|molecule" >&2; exit 2 ;;
esac
