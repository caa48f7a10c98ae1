"""A private PostgreSQL cluster run from the system's server binaries.

Used by `bk-reporter serve` when no database URL is configured (the embedded
default for a homelab) and by the test suite for throwaway clusters. The
cluster listens on a unix socket only. PostgreSQL refuses to run as root, so
when we are root the server runs as the `postgres` system user.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

# A unix socket path must fit in sun_path (108 bytes) with ".s.PGSQL.5432".
MAX_SOCKET_DIR_LEN = 90


class ClusterError(RuntimeError):
    """The private cluster could not be initialised, started or stopped."""


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ClusterError("running as root needs the 'postgres' system user (installed with postgresql)") from exc


def find_server_bin() -> Path:
    """Return the newest installed PostgreSQL server binary directory."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise ClusterError(
            "no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin; "
            "install them (Debian/Ubuntu: apt-get install postgresql) or set "
            "BK_REPORTER_DATABASE_URL to an existing server"
        )
    return candidates[-1].parent


@dataclass
class LocalCluster:
    """A PostgreSQL cluster owning the directory `base`: data in base/pgdata, socket in base/run."""

    base: Path
    superuser: str = "postgres"
    fsync: bool = True

    @classmethod
    def under(cls, base: Path, *, fsync: bool = True) -> LocalCluster:
        base = base.resolve()
        if len(str(base / "run")) > MAX_SOCKET_DIR_LEN:
            raise ClusterError(f"{base} is too long a path for a unix socket; choose a shorter data directory")
        return cls(base=base, fsync=fsync)

    @property
    def data_dir(self) -> Path:
        return self.base / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    # -- running the server binaries -------------------------------------------------

    def _server_user_name(self) -> str:
        """As root: the owner of an existing cluster (whoever initialised it), else `postgres`."""
        try:
            owner = self.data_dir.stat().st_uid
        except FileNotFoundError:
            return _server_user().pw_name
        return pwd.getpwuid(owner).pw_name if owner != 0 else _server_user().pw_name

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", self._server_user_name(), "--", *argv]

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(self._as_server_user(argv), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}")

    def _hand_to_server_user(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(self._server_user_name())
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_reachable_by_server_user(self) -> None:
        """As root the server runs as `postgres`, which must be able to enter every parent of base."""
        if os.geteuid() != 0:
            return
        uid = _server_user().pw_uid
        for parent in self.base.parents:
            st = parent.stat()
            if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
                raise ClusterError(
                    f"the postgres user cannot enter {parent} (mode {stat.filemode(st.st_mode)}), so it cannot "
                    f"run a cluster under {self.base}; choose a data directory whose parents are searchable "
                    "by others (for example under /var/lib or /srv)"
                )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def running(self) -> bool:
        """True when a postmaster is alive for this data directory (a stale pid file is not enough)."""
        if not self.initialised or not (self.data_dir / "postmaster.pid").exists():
            return False
        status = subprocess.run(
            self._as_server_user([str(find_server_bin() / "pg_ctl"), "-D", str(self.data_dir), "status"]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def init(self) -> None:
        if self.initialised:
            return
        bin_dir = find_server_bin()
        self._check_reachable_by_server_user()
        for path in (self.base, self.data_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._hand_to_server_user(path)
        argv = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", self.superuser, "-E", "UTF8"]
        if not self.fsync:
            argv.append("--no-sync")
        self._run(argv)

    def start(self) -> None:
        self.init()
        if self.running:
            return
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._hand_to_server_user(self.socket_dir)
        options = f"-c listen_addresses='' -k {self.socket_dir} -c fsync={'on' if self.fsync else 'off'}"
        log = self.data_dir / "server.log"
        pg_ctl = str(find_server_bin() / "pg_ctl")
        self._run([pg_ctl, "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server with pg_ctl's shutdown mode (smart, fast or immediate)."""
        if not self.running:
            return
        self._run([str(find_server_bin() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A libpq URL that reaches this cluster through its socket."""
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{quote(user or self.superuser)}@/{quote(dbname)}?host={host}"


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_only_holder(fd: int) -> bool:
    """Whether our shared lock on `fd` can become exclusive, i.e. nobody else holds one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class ClusterLease:
    """Shared use of one LocalCluster by several processes: the first starts it, the last stops it.

    `<base>.lock` serialises starting and stopping. Every user holds a shared lock on
    `<base>.users` while it uses the cluster, so a user leaving can tell whether it is the
    last one (an exclusive lock is then free) and only then stops the server. A user that
    dies releases its lock with it; the cluster then stays up until the next last user leaves.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self._start_lock = cluster.base.with_name(cluster.base.name + ".lock")
        self._users_lock = cluster.base.with_name(cluster.base.name + ".users")
        self._users_fd: int | None = None

    def __enter__(self) -> LocalCluster:
        self.cluster.base.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self._start_lock):
            self._users_fd = os.open(self._users_lock, os.O_RDONLY | os.O_CREAT, 0o644)
            fcntl.flock(self._users_fd, fcntl.LOCK_SH)
            try:
                self.cluster.start()
            except BaseException:
                self._leave()
                raise
        return self.cluster

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _exclusive_lock(self._start_lock):
            if self._users_fd is not None and _is_only_holder(self._users_fd):
                self.cluster.stop()
            self._leave()

    def _leave(self) -> None:
        if self._users_fd is not None:
            os.close(self._users_fd)
            self._users_fd = None
