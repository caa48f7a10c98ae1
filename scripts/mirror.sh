# The Debian archive this machine installs from (sourced, not executed): the
# first URI of the main archive in the deb822 sources file.
# shellcheck shell=bash
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
