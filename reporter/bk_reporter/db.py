"""Where the reporter's database is, and how its schema and roles come to be.

Two connections matter. The application's (settings.database_url) may add and read events,
nothing else. The schema owner's (settings.owner_database_url, by default the same URL) runs
the numbered SQL migrations in `migrations/` and enrolls host keys. Without a database URL the
reporter uses its embedded cluster under `<data-dir>/postgres`, with an owner role and an
application role of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from .pgcluster import ClusterLease, LocalCluster
from .settings import Settings

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_lock keys: one migration run and one embedded bootstrap at a time per cluster.
MIGRATE_LOCK = 0x626B6D6967
BOOTSTRAP_LOCK = 0x626B626F6F
EMBEDDED_DATABASE = "bk"
EMBEDDED_OWNER = "bk_reporter"


class DatabaseError(RuntimeError):
    """The database cannot be used as configured; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class Targets:
    """The two connections: the application's and the schema owner's."""

    app_url: str
    owner_url: str


def _migration_files() -> dict[str, str]:
    folder = resources.files("bk_reporter") / "migrations"
    return {entry.name: entry.read_text(encoding="utf-8") for entry in folder.iterdir() if entry.name.endswith(".sql")}


def available_migrations() -> list[Migration]:
    migrations = []
    for name, text in _migration_files().items():
        match = MIGRATION_FILE.match(name)
        if match:
            migrations.append(Migration(int(match.group(1)), match.group(2), text))
    return sorted(migrations, key=lambda migration: migration.version)


def applied_versions(conn: psycopg.Connection) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def pending_migrations(url: str) -> list[Migration]:
    with psycopg.connect(url, autocommit=True) as conn:
        done = applied_versions(conn)
    return [migration for migration in available_migrations() if migration.version not in done]


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _ensure_app_role(conn: psycopg.Connection, role: str) -> None:
    if _role_exists(conn, role):
        return
    try:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"the application role {role!r} does not exist and the owner may not create roles; "
            f"create it as an administrator (CREATE ROLE {role} LOGIN PASSWORD '...') and run migrate again"
        ) from exc


def _apply_grants(conn: psycopg.Connection, template: str, **names: sql.Composable) -> None:
    conn.execute(sql.SQL(template).format(**names))


def _views(conn: psycopg.Connection) -> sql.Composable:
    names = conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public' ORDER BY viewname").fetchall()
    return sql.SQL(", ").join(sql.Identifier(name) for (name,) in names)


def migrate(owner_url: str, app_role: str, reader_role: str | None = None) -> list[Migration]:
    """Apply the pending migrations in order and (re-)grant the roles; return what was applied."""
    files = _migration_files()
    applied: list[Migration] = []
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = applied_versions(conn)
        for migration in available_migrations():
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
                )
            applied.append(migration)
        _ensure_app_role(conn, app_role)
        with conn.transaction():
            database = sql.Identifier(conn.info.dbname)
            _apply_grants(conn, files["grants.sql"], app=sql.Identifier(app_role), database=database)
            if reader_role is not None:
                if not _role_exists(conn, reader_role):
                    raise DatabaseError(f"the reader role {reader_role!r} does not exist; create it first")
                _apply_grants(conn, files["grants_reader.sql"], reader=sql.Identifier(reader_role), views=_views(conn))
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    return applied


def ensure_current_schema(targets: Targets, settings: Settings) -> list[Migration]:
    """Migrate when something is pending (as the owner); a no-op on a current schema."""
    if not pending_migrations(targets.owner_url):
        return []
    try:
        return migrate(targets.owner_url, settings.app_role, settings.reader_role)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"the database schema needs migrating and this connection may not do it ({exc.diag.message_primary}); "
            "run `bk-reporter migrate` with the schema owner's URL in BK_REPORTER_OWNER_DATABASE_URL"
        ) from exc


def bootstrap_embedded(cluster: LocalCluster, app_role: str) -> None:
    """Create the embedded cluster's owner role, application role and database, once."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (BOOTSTRAP_LOCK,))
        for role in (EMBEDDED_OWNER, app_role):
            if not _role_exists(conn, role):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                    sql.Identifier(EMBEDDED_DATABASE), sql.Identifier(EMBEDDED_OWNER)
                )
            )
        conn.execute("SELECT pg_advisory_unlock(%s)", (BOOTSTRAP_LOCK,))


def embedded_cluster(settings: Settings) -> LocalCluster:
    return LocalCluster.under(settings.data_dir / "postgres")


@contextmanager
def database(settings: Settings) -> Iterator[Targets]:
    """The configured database, or the embedded cluster (started if needed) for as long as it is used."""
    if settings.database_url is not None:
        yield Targets(settings.database_url, settings.owner_database_url or settings.database_url)
        return
    cluster = embedded_cluster(settings)
    with ClusterLease(cluster):
        bootstrap_embedded(cluster, settings.app_role)
        yield Targets(
            app_url=cluster.url(EMBEDDED_DATABASE, user=settings.app_role),
            owner_url=cluster.url(EMBEDDED_DATABASE, user=EMBEDDED_OWNER),
        )
