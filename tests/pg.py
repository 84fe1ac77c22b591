"""A throwaway PostgreSQL cluster for the tests.

``initdb`` in a temporary directory, the server listening on a Unix socket in that directory
only (no TCP port to collide with other test runs), durability off. One cluster per test session;
each test gets its own database, empty or copied from one migrated once, dropped after it. The
cluster is stopped and deleted at the end.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "The store's tests run on SQLite and on PostgreSQL, and no PostgreSQL server was found "
    "(neither pg_ctl on PATH nor /usr/lib/postgresql/*/bin). Install it: "
    "`apt-get install postgresql` (Debian/Ubuntu), or put the directory holding pg_ctl, initdb "
    "and postgres on PATH."
)
# initdb refuses to run as root; the Debian package creates this system user.
SERVER_USER = "postgres"
# The server's own superuser in the cluster initdb makes (any name; trust authentication).
SUPERUSER = "postgres"
# The cluster is deleted at the end, so durability buys nothing: PostgreSQL's "Non-Durable
# Settings" (https://www.postgresql.org/docs/15/non-durability.html).
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c shared_buffers=16MB"
)


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path:
    """Where pg_ctl, initdb and postgres live: PATH first, then the Debian package's layout."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    # Debian installs each major version side by side (/usr/lib/postgresql/15/bin); the newest.
    versions = [Path(p).parent.parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    versions = [v for v in versions if v.name.isdigit()]
    if versions:
        return max(versions, key=lambda v: int(v.name)) / "bin"
    raise PostgresUnavailable(INSTALL_HINT)


class PostgresCluster:
    """A running server; :meth:`stop` ends it and deletes its files."""

    def __init__(self, root: Path, bindir: Path, run_as: pwd.struct_passwd | None) -> None:
        self.root = root
        self.bindir = bindir
        self.run_as = run_as
        self.data = root / "data"
        self._names = itertools.count(1)
        self._migrated: str | None = None

    @classmethod
    def start(cls) -> PostgresCluster:
        bindir = find_bindir()
        run_as = None
        if os.geteuid() == 0:
            try:
                run_as = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"Running as root, and initdb refuses root: the tests run the server as the "
                    f"'{SERVER_USER}' system user, which does not exist. "
                    f"`apt-get install postgresql` creates it."
                ) from None
        # A short path: the socket's full path must fit in sun_path (108 bytes, unix(7)).
        root = Path(tempfile.mkdtemp(prefix="easel-pg-", dir="/tmp"))
        if run_as is not None:
            os.chown(root, run_as.pw_uid, run_as.pw_gid)
        cluster = cls(root, bindir, run_as)
        try:
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
            cluster._run(
                "pg_ctl",
                "start",
                "-w",
                "-D",
                str(cluster.data),
                "-l",
                str(root / "server.log"),
                "-o",
                f"-k {root} {SERVER_OPTIONS}",
            )
        except BaseException:
            cluster._delete()
            raise
        return cluster

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / program), *args],
            user=self.run_as.pw_uid if self.run_as else None,
            group=self.run_as.pw_gid if self.run_as else None,
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{program} failed ({done.returncode}): {done.stderr.strip()}\n{server_log}"
            )

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for this database over the cluster's Unix socket."""
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.root}"

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=str(self.root), user=SUPERUSER, database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self, *, migrated: bool = False) -> str:
        """A new database, empty or with Easel's migrations applied; its URL."""
        template = await self._migrated_template() if migrated else "template1"
        name = f"easel_test_{next(self._names)}"
        # FILE_COPY: with fsync off, copying the template's files beats WAL-logging each block
        # (the default since PostgreSQL 15); about 60 ms instead of 85 ms here.
        await self._admin(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        return self.url(name)

    async def _migrated_template(self) -> str:
        """A database migrated to head once per session: copying it is cheaper than migrating
        each test's database (the migrations themselves are tested from empty)."""
        if self._migrated is None:
            from bot.store.db import make_db_engine, upgrade

            name = "easel_migrated"
            await self._admin(f"CREATE DATABASE {name}")
            engine = make_db_engine(self.url(name))
            await upgrade(engine)
            await engine.dispose()  # a template must have no connections when copied
            self._migrated = name
        return self._migrated

    async def drop_database(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        # FORCE (PostgreSQL 13+) ends connections a failed test may have left open.
        await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        with contextlib.suppress(PostgresUnavailable):
            # immediate: the files are deleted next, so nothing needs flushing.
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
        self._delete()

    def _delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
