"""A hub's REST server on loopback (restic's rest-server or rclone's), as roles/hub runs it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt

from support.net import free_port
from support.tools import REST_SERVER, tool

# The REST servers a hub can run (roles/hub: hub_server): restic's rest-server and rclone's.
HUB_SERVERS = ("rest-server", "rclone")


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with a bcrypt hash per user, as the hub role writes it."""
    lines = (
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(6)).decode()}\n" for user, password in users.items()
    )
    path.write_text("".join(lines))
    return path


def rest_server_argv(
    server: str, port: int, data_dir: Path, htpasswd: Path, *, append_only: bool, extra: tuple[str, ...] = ()
) -> list[str]:
    """The command line roles/hub/templates/bk-hub.service.j2 runs, on loopback and without TLS."""
    modes = ["--append-only", "--private-repos"] if append_only else []
    if server == "rest-server":
        command = [tool(REST_SERVER), "--listen", f"127.0.0.1:{port}", "--htpasswd-file", str(htpasswd)]
        return [*command, *modes, *extra, "--path", str(data_dir)]
    if server == "rclone":
        command = ["rclone", "serve", "restic", "--config", "/dev/null", "--addr", f"127.0.0.1:{port}"]
        return [*command, "--htpasswd", str(htpasswd), *modes, *extra, str(data_dir)]
    raise ValueError(f"unknown hub server {server!r} (known: {', '.join(HUB_SERVERS)})")


@contextlib.contextmanager
def rest_hub(
    server: str, data_dir: Path, htpasswd: Path, *, append_only: bool = True, extra: tuple[str, ...] = ()
) -> Iterator[str]:
    """A hub's REST server on loopback serving ``data_dir``; its base URL (no credentials)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = rest_server_argv(server, port, data_dir, htpasswd, append_only=append_only, extra=extra)
    process = subprocess.Popen(argv)
    try:
        for _attempt in range(200):
            if process.poll() is not None:
                raise RuntimeError(f"{server} exited with {process.returncode}: {argv}")
            with socket.socket() as client, contextlib.suppress(OSError):
                client.connect(("127.0.0.1", port))
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{server} did not listen on 127.0.0.1:{port} within 10 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def append_only_hub(
    directory: Path, user: str = "web1", password: str = "hub-secret-for-web1", server: str = "rest-server"
) -> Iterator[str]:
    """A hub's append-only, private-repository REST server (``server``: restic's rest-server or
    ``rclone serve restic``) on loopback, serving ``directory/hub-data``; the user's repository URL
    (with its credential, as a host's repository file holds it)."""
    htpasswd = write_htpasswd(directory / "htpasswd", {user: password})
    with rest_hub(server, directory / "hub-data", htpasswd) as base:
        yield base.replace("http://", f"rest:http://{user}:{password}@", 1) + f"/{user}/"
