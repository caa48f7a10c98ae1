# Environment shared by the test gates and the demo (sourced, not executed).
# shellcheck shell=bash
export ANSIBLE_INJECT_FACT_VARS=False
export ANSIBLE_ALLOW_EMBEDDED_TEMPLATES=False
export ANSIBLE_COLLECTIONS_PATH="$PWD/.cache/collections"
export ANSIBLE_NOCOLOR="${ANSIBLE_NOCOLOR:-}"
export ANSIBLE_HOME="$PWD/.cache/ansible-home"
export PYTHONDONTWRITEBYTECODE=1
# A play runs each task on at most `forks` hosts at a time; Ansible's 5 makes a 12-host
# lab wait for itself. Each fork mostly waits on SSH, so more than the CPUs is fine.
export ANSIBLE_FORKS="${ANSIBLE_FORKS:-25}"
# This machine may set a CA bundle that breaks rclone's S3 backend.
unset AWS_CA_BUNDLE
