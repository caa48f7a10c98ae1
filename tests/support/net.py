"""Loopback ports and misbehaving listeners (refusing, silent, dropping, hanging up). Every
socket here is bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bound_socket() -> socket.socket:
    """A socket bound to a free loopback port, for a server to listen on (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def refusing_port() -> Iterator[str]:
    """A loopback URL where nothing listens: connections are refused."""
    yield f"http://127.0.0.1:{free_port()}"


@contextlib.contextmanager
def _accepting_listener(on_accept: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback URL whose server hands each accepted connection to `on_accept`, on a thread."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def accept_forever() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                on_accept(server.accept()[0])

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A loopback URL whose server accepts connections and never answers."""
    accepted: list[socket.socket] = []
    try:
        with _accepting_listener(accepted.append) as url:
            yield url
    finally:
        for conn in accepted:
            conn.close()


@contextlib.contextmanager
def dropping_listener() -> Iterator[str]:
    """A loopback URL where SYN packets are dropped: the listen backlog is full, never accepted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _filler_index in range(4):  # after the backlog fills, the kernel drops further connection attempts
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


@contextlib.contextmanager
def hanging_up_listener() -> Iterator[str]:
    """A loopback URL whose server accepts each connection and closes it at once."""
    with _accepting_listener(lambda conn: conn.close()) as url:
        yield url
