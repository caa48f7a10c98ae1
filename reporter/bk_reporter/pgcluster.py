"""A private PostgreSQL cluster run from the system's server binaries.

Used by `bk-reporter serve` when no database URL is configured (the embedded
default for a homelab) and by the test suite for throwaway clusters. The
cluster listens on a unix socket only. PostgreSQL refuses to run as root, so
when we are root the server runs as the `postgres` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SERVER_BIN_GLOB = "/usr/lib/postgresql/*/bin"
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

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(self._as_server_user(argv), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}")

    def _hand_to_server_user(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = _server_user()
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
        return (self.data_dir / "postmaster.pid").is_file() and (self.socket_dir / ".s.PGSQL.5432").exists()

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

    def stop(self) -> None:
        if not self.initialised or not (self.data_dir / "postmaster.pid").exists():
            return
        self._run([str(find_server_bin() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A libpq URL that reaches this cluster through its socket."""
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{quote(user or self.superuser)}@/{quote(dbname)}?host={host}"
