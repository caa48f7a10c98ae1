# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running external programs (restic, rclone, hooks, dumps) without ever raising for their failures."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from bk_evidence.restic_output import tool_version

Command = Union[str, List[str]]
HOOK_TIMEOUT_SECONDS = 3600
NOT_RUN = 127
TIMED_OUT = 124
STDERR_KEPT_BYTES = 65536


class Completed(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


def argv_of(command: Command) -> List[str]:
    """A configured command as argv: a string runs through ``/bin/sh -c``, a list as is."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def run(
    argv: List[str],
    env: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = None,
    stdin: Optional[int] = subprocess.DEVNULL,
) -> Completed:
    """Run a program to completion; a missing program or a timeout is an exit code, not an exception."""
    try:
        completed = subprocess.run(argv, env=env, stdin=stdin, capture_output=True, timeout=timeout, check=False)
    except OSError as exc:
        return Completed(NOT_RUN, "", "cannot run %s: %s\n" % (argv[0], exc.strerror or exc))
    except subprocess.TimeoutExpired as exc:
        return Completed(TIMED_OUT, _text(exc.stdout), _text(exc.stderr) + "\ntimed out after %s s\n" % timeout)
    return Completed(completed.returncode, _text(completed.stdout), _text(completed.stderr))


def run_filtered(
    argv: List[str],
    keep: Callable[[str], bool],
    env: Optional[Dict[str, str]] = None,
    stdin: Optional[int] = subprocess.DEVNULL,
) -> Completed:
    """Run a long program keeping only the stdout lines ``keep`` accepts and the end of stderr.

    For ``restic backup --json``, whose progress lines would otherwise pile up in memory."""
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(argv, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            return Completed(NOT_RUN, "", "cannot run %s: %s\n" % (argv[0], exc.strerror or exc))
        kept = []
        if process.stdout is not None:
            with process.stdout:
                for raw in process.stdout:
                    line = raw.decode("utf-8", "replace")
                    if keep(line):
                        kept.append(line)
        exit_code = process.wait()
        size = errors.seek(0, os.SEEK_END)
        errors.seek(max(0, size - STDERR_KEPT_BYTES))
        return Completed(exit_code, "".join(kept), _text(errors.read()))


def _text(data: Optional[bytes]) -> str:
    return data.decode("utf-8", "replace") if data else ""


def child_environment(extra: Dict[str, str], drop: Tuple[str, ...] = ()) -> Dict[str, str]:
    """The runner's environment without ``drop`` and with ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(extra)
    return env


# What hooks and dumps keep of the runner's environment: enough to find programs and speak the
# locale, nothing of the secrets a unit's EnvironmentFile= gives restic (S3 keys, RESTIC_PASSWORD*).
MINIMAL_VARIABLES = ("PATH", "HOME", "LANG", "TZ")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_environment(extra: Dict[str, str]) -> Dict[str, str]:
    """``PATH`` (a standard one if unset), ``HOME``, ``LANG`` and ``TZ`` of the runner, and ``extra``."""
    env = {key: os.environ[key] for key in MINIMAL_VARIABLES if key in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra)
    return env


def version_of(binary: str) -> Optional[str]:
    """The version a tool reports (``restic version``, ``rclone version``), None if it cannot run."""
    completed = run([binary, "version"], timeout=30)
    return tool_version(completed.stdout) if completed.exit_code == 0 else None
