"""Test helpers for bk_evidence: real OpenSSH keys and loopback stand-ins for the reporter.

Every socket here is bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bk_evidence import manifest, sshsig

RESTIC = "/usr/bin/restic"
_DEBIAN_TOOLS = Path(__file__).resolve().parent.parent / ".cache" / "debian-tools"
# Every restic bk supports, by the release that ships it: the machine's own (Debian 12) and the
# ones scripts/debian-tools.sh unpacks from Debian 13 and unstable.
RESTIC_BUILDS = {
    "0.14": Path(RESTIC),
    "0.18": _DEBIAN_TOOLS / "trixie" / "usr" / "bin" / "restic",
    "0.19": _DEBIAN_TOOLS / "sid" / "usr" / "bin" / "restic",
}
REST_SERVER = _DEBIAN_TOOLS / "trixie" / "usr" / "bin" / "restic-rest-server"


def tool(path: Path) -> str:
    """A test tool's path; a missing one is a broken set-up, never a reason to skip."""
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run scripts/bootstrap.sh (it runs scripts/debian-tools.sh)")
    return str(path)


PASSWORD = "correct horse battery staple 42"
KEY_SPECS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa": ["-t", "rsa", "-b", "3072"],
}


def make_key(directory: Path, kind: str = "ed25519", name: str | None = None) -> Path:
    """A fresh unencrypted OpenSSH private key made by ssh-keygen; its .pub is beside it."""
    path = directory / (name or f"key_{kind}")
    subprocess.run(["ssh-keygen", "-q", *KEY_SPECS[kind], "-N", "", "-C", kind, "-f", str(path)], check=True)
    return path


def public_line(private_key: Path) -> str:
    return Path(str(private_key) + ".pub").read_text().strip()


class FakeReporter:
    """The reporter's batch endpoint, strictly: verify, validate, store append-only, per-item answers.

    ``keys`` maps host names to allowed public key lines. ``force_status`` answers every batch with
    that HTTP status instead (to simulate outages)."""

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self.keys = keys
        self.stored: dict[str, str] = {}
        self.by_position: dict[tuple[str, int], str] = {}
        self.requests = 0
        self.force_status: int | None = None
        self.max_items: int | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeReporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def manifests(self) -> list[dict]:
        with self.lock:
            return [json.loads(text) for text in self.stored.values()]

    def answer(self, item: object) -> dict:
        if not isinstance(item, dict) or not isinstance(item.get("manifest"), str) or "signature" not in item:
            return {"status": 400, "code": "bad_envelope", "message": "not an envelope"}
        text = item["manifest"]
        try:
            doc = manifest.loads_strict(text)
        except manifest.ManifestError as exc:
            return {"status": 400, "code": exc.code, "message": exc.message}
        try:
            sshsig.verify(text.encode(), item["signature"], self.keys.get(str(doc.get("host")), []))
        except sshsig.SignatureError as exc:
            return {"status": 401, "code": "bad_signature", "message": str(exc), "id": doc.get("id")}
        problems = manifest.validate(doc)
        if problems:
            return {"status": 422, "code": "schema", "message": "; ".join(problems), "id": doc.get("id")}
        return self._store(doc, text)

    def _store(self, doc: dict, text: str) -> dict:
        with self.lock:
            known = self.stored.get(doc["id"])
            if known is not None:
                status = 200 if known == text else 409
                return {"status": status, "code": "duplicate", "message": "known id", "id": doc["id"]}
            position = (doc["host"], doc["seq"])
            if position in self.by_position:
                return {"status": 409, "code": "fork", "message": "seq taken", "id": doc["id"]}
            self.stored[doc["id"]] = text
            self.by_position[position] = doc["id"]
        return {"status": 201, "code": "stored", "message": "stored", "id": doc["id"]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                with reporter.lock:
                    reporter.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if reporter.force_status is not None:
                    self._send(reporter.force_status, {"code": "forced", "message": "simulated"})
                elif self.path != "/api/v1/manifests/batch":
                    self._send(404, {"code": "not_found", "message": self.path})
                else:
                    try:
                        items = json.loads(body)
                    except ValueError:
                        self._send(400, {"code": "bad_json", "message": "not JSON"})
                        return
                    if reporter.max_items is not None and len(items) > reporter.max_items:
                        self._send(413, {"code": "too_large", "message": "too many items"})
                        return
                    self._send(200, [reporter.answer(item) for item in items])

            def _send(self, status: int, value: object) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextlib.contextmanager
def refusing_port() -> Iterator[str]:
    """A loopback URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A loopback URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


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
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def hang_up() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                server.accept()[0].close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


# The REST servers a hub can run (roles/hub: hub_server): restic's rest-server and rclone's.
HUB_SERVERS = ("rest-server", "rclone")


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with a bcrypt hash per user, as the hub role writes it."""
    import bcrypt  # noqa: PLC0415  # only the tests that start a hub need it

    lines = (
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(6)).decode()}\n" for user, password in users.items()
    )
    path.write_text("".join(lines))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    port = _free_port()
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


def initialized_repository(root: Path, restic: str = RESTIC) -> Path:
    """An empty repository made by ``restic init`` of that restic under ``root`` (it costs seconds:
    copy it per test)."""
    (root / "password").write_text(PASSWORD + "\n")
    env = dict(os.environ, RESTIC_PASSWORD_FILE=str(root / "password"))
    subprocess.run([restic, "init", "-q", "-r", str(root / "repo")], env=env, check=True)
    return root / "repo"


class Host:
    """A client host in a temporary directory: key, restic repository, bk configuration; ``restic``
    is the binary bk-run is configured with (and the tests' own restic calls use)."""

    def __init__(self, root: Path, template: Path, restic: str = RESTIC) -> None:
        self.root = root
        self.restic_binary = restic
        self.key = make_key(root, "ed25519")
        self.data = root / "data"
        self.data.mkdir()
        for index in range(20):
            (self.data / f"file{index}").write_bytes(os.urandom(2000 + index))
        self.config = root / "etc"
        (self.config / "jobs").mkdir(parents=True)
        self.password_file = root / "repo.password"
        self.password_file.write_text(PASSWORD + "\n")
        self.repository = root / "repo"
        shutil.copytree(template, self.repository)
        self.restic_log = root / "restic-stdout.log"
        self.wrapper = root / "restic-tee"
        self.wrapper.write_text(
            "#!/bin/bash\n"
            f'if [ "$1" = backup ]; then {restic} "$@" | tee -a {self.restic_log}; exit "${{PIPESTATUS[0]}}"; fi\n'
            f'exec {restic} "$@"\n'
        )
        self.wrapper.chmod(0o755)
        self.settings(reporter_url=None)
        self.job()

    def restic(self, *args: str, repository: Path | None = None) -> str:
        env = dict(os.environ, RESTIC_PASSWORD_FILE=str(self.password_file), RESTIC_CACHE_DIR=str(self.root / "cache"))
        command = [self.restic_binary, "-r", str(repository or self.repository), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout

    def repository_entry(self, name: str = "local", repository: Path | None = None) -> dict:
        location = self.root / f"{name}.repository"
        location.write_text(f"{repository or self.repository}\n")
        location.chmod(0o600)
        return {"name": name, "repository_file": str(location), "password_file": str(self.password_file)}

    def settings(self, **changes: object) -> None:
        config = {
            "host": "web1",
            "host_key": str(self.key),
            "state_dir": str(self.root / "state"),
            "spool_dir": str(self.root / "spool"),
            "reporter_url": None,
            "restic": str(self.wrapper),
            "cache_dir": str(self.root / "cache"),
        }
        config.update(changes)
        (self.config / "bk.json").write_text(json.dumps(config))

    def job(self, name: str = "home", **changes: object) -> None:
        job = {
            "name": name,
            "paths": [str(self.data)],
            "tags": ["daily"],
            "cadence_seconds": 3600,
            "repositories": [self.repository_entry()],
        }
        job.update(changes)
        (self.config / "jobs" / f"{name}.json").write_text(json.dumps(job))

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bk_evidence.runner", "--config", str(self.config), *args]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """bk-run with these arguments, in this process's environment plus ``env``."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
        return subprocess.run(self.command(*args), env=env, capture_output=True, text=True, timeout=300, check=False)

    def outbox(self) -> list[dict]:
        outbox = self.root / "spool" / "outbox"
        return [json.loads(json.loads(path.read_text())["manifest"]) for path in sorted(outbox.glob("*.json"))]

    def restic_summaries(self) -> list[dict]:
        lines = self.restic_log.read_text().splitlines()
        return [json.loads(line) for line in lines if '"message_type":"summary"' in line]
