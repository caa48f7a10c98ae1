#!/usr/bin/env bash
# Runs `ansible-test sanity` without Docker and without the pip bootstrap host
# (unreachable here): ansible-test's cached get-pip script is replaced by one
# that installs the same pip release from a wheel downloaded from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=$repo/.venv

pip_version=$("$venv/bin/python" - <<'PY'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)

# A scratch HOME, rebuilt when ansible-core changes.
core=$("$venv/bin/python" -c 'import ansible; print(ansible.__version__)')
scratch=$repo/.cache/sanity/home-$core
wheels=$repo/.cache/sanity/wheels
cache=$scratch/.ansible/test/cache
mkdir -p "$cache" "$wheels"
if ! compgen -G "$wheels/pip-$pip_version-*.whl" >/dev/null; then
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$wheels" "pip==$pip_version"
fi
cat >"$cache/get_pip_${pip_version//./_}.py" <<PY
"""Stand-in for get-pip.py: installs pip $pip_version from a local wheel."""
import glob, runpy, sys
wheel = glob.glob("$wheels/pip-$pip_version-*.whl")[0]
sys.path.insert(0, wheel)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.argv = ["pip", "install", "--no-index", "--find-links", "$wheels", *args]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
PY

# ansible-test must run from .../ansible_collections/<namespace>/<name>, on the
# files git knows about (tracked, or new and not ignored).
work=$repo/.cache/sanity/ansible_collections/bkfleet/backup
rm -rf "$work" && mkdir -p "$work"
git ls-files -z --cached --others --exclude-standard |
  "$venv/bin/python" -c '
import os, sys
names = [n for n in sys.stdin.buffer.read().split(b"\0") if n and os.path.lexists(n)]
sys.stdout.buffer.write(b"\0".join(names))' |
  tar --null -T - -cf - | tar -C "$work" -xf -
cd "$work"
git init -q . && git add -A && git -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity

HOME=$scratch "$venv/bin/ansible-test" sanity --requirements --python 3.11 --color no "$@"
