"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, ``initdb`` and
``pg_ctl`` in a temporary folder, on a free loopback port, with a password (scram-sha-256)
that only a ``PGPASSFILE`` holds; stopped afterwards. As root, the server runs as the
``postgres`` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl (Debian's /usr/lib/postgresql/<version>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` a server in ``folder``; ``url(db)`` is its address without the password,
    which libpq reads from ``passfile``; ``create_database(name)``; ``stop()``."""

    user = "grader"

    def __init__(self, folder: Path | None = None):
        # under /tmp itself, not pytest's folders: those are root's alone, and the server runs as postgres
        self.folder = folder or Path(tempfile.mkdtemp(prefix="autograder-postgres-"))
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL's server is not installed (Debian's 'postgresql' package; make test installs it)")
        self.port = _free_port()
        self.password = secrets.token_hex(12)
        self.data = self.folder / "data"
        self.passfile = self.folder / "pgpass"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120, cwd="/")
        if done.returncode:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}")

    def start(self) -> PostgresServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        pwfile = self.folder / "initdb-password"
        pwfile.write_text(self.password + "\n")
        if self._as:
            postgres = pwd.getpwnam("postgres")
            for path in (self.folder, pwfile):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
        os.chmod(self.folder, 0o700)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "scram-sha-256",
                  f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8")
        pwfile.unlink()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:{self.user}:{self.password}\n")
        os.chmod(self.passfile, 0o600)
        return self

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True)

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(self.folder, ignore_errors=True)
