"""The programs tests run: each restic bk supports, restic's rest-server, bk-reporter, HAProxy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

RESTIC = "/usr/bin/restic"
_DEBIAN_TOOLS = Path(__file__).resolve().parents[2] / ".cache" / "debian-tools"
# Every restic bk supports, by the release that ships it: the machine's own (Debian 12) and the
# ones scripts/debian-tools.sh unpacks from Debian 13 and unstable.
RESTIC_BUILDS = {
    "0.14": Path(RESTIC),
    "0.18": _DEBIAN_TOOLS / "trixie" / "usr" / "bin" / "restic",
    "0.19": _DEBIAN_TOOLS / "sid" / "usr" / "bin" / "restic",
}
REST_SERVER = _DEBIAN_TOOLS / "trixie" / "usr" / "bin" / "restic-rest-server"
BK_REPORTER = Path(sys.executable).parent / "bk-reporter"
# A standard load balancer in front of reporter replicas (installed by scripts/bootstrap.sh).
HAPROXY = Path("/usr/sbin/haproxy")


def tool(path: Path) -> str:
    """A test tool's path; a missing one is a broken set-up, never a reason to skip."""
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run scripts/bootstrap.sh (it runs scripts/debian-tools.sh)")
    return str(path)


# ansible-playbook against this machine itself, with the interpreter the tasks' modules run on.
LOCAL_PLAYBOOK = [
    "ansible-playbook",
    "-i",
    "localhost,",
    "-c",
    "local",
    "-e",
    "ansible_python_interpreter=/usr/bin/python3",
]
