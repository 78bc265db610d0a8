"""A throw-away PostgreSQL cluster in a temporary folder, for the store's tests and bench.

The Debian server binaries (``initdb``, ``pg_ctl``) run as the ``postgres`` user when we are
root (the server refuses to run as root); the cluster listens on 127.0.0.1 on a free
ephemeral port, its unix socket in its own folder, and is removed when stopped.  Logins use
SCRAM passwords over TCP, as a production setup would.  Each test takes a fresh database
copied from a template (``CREATE DATABASE … TEMPLATE``), which takes a fraction of a second.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

ROLE = "erab"  # the store's login role (owner of the test databases), not a superuser
ADMIN = "postgres"


def server_bin() -> Path | None:
    """The folder of the newest installed PostgreSQL server binaries, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PgCluster:
    """A running throw-away cluster; :meth:`start` makes one, :meth:`stop` removes it."""

    root: Path
    bin_dir: Path
    port: int
    password: str
    _names: count[int] = field(default_factory=lambda: count(1))
    _stopped: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @classmethod
    def start(cls, *, durable: bool = False, settings: dict[str, str] | None = None) -> PgCluster:
        """initdb + pg_ctl start.  ``durable=False`` (tests) turns fsync off; a bench that
        measures writes keeps the server's defaults."""
        bin_dir = server_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries (pg_ctl, initdb) not found")
        root = Path(tempfile.mkdtemp(prefix="erab-pg-"))
        password = secrets.token_hex(12)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        cluster = cls(root, bin_dir, 0, password)
        atexit.register(cluster.stop)  # a backstop: the fixture stops it first
        try:
            subprocess.run(
                _as_server_user(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(cluster.data),
                        "-U",
                        ADMIN,
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "-E",
                        "UTF8",
                        "--no-locale",
                    ]
                ),
                check=True,
                capture_output=True,
                text=True,
            )
            options = {
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(root),
                "max_connections": "50",
                **({} if durable else {"fsync": "off", "full_page_writes": "off"}),
                **(settings or {}),
            }
            conf = "".join(f"{k} = '{v}'\n" for k, v in options.items())
            with open(cluster.data / "postgresql.conf", "a") as f:
                f.write(conf)
            for attempt in range(3):  # a free port can be taken between probe and bind
                cluster.port = free_port()
                done = subprocess.run(
                    _as_server_user(
                        [
                            str(bin_dir / "pg_ctl"),
                            "-D",
                            str(cluster.data),
                            "-l",
                            str(root / "server.log"),
                            "-o",
                            f"-p {cluster.port}",
                            "-w",
                            "-t",
                            "60",
                            "start",
                        ]
                    ),
                    capture_output=True,
                    text=True,
                )
                if done.returncode == 0:
                    break
                if attempt == 2:
                    log = (root / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{log}")
            cluster.admin(
                f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'",
            )
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def url(self, database: str, *, user: str = ROLE, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        """Run statements as the superuser, each outside a transaction (CREATE DATABASE)."""
        import psycopg

        with psycopg.connect(self.url("postgres", user=ADMIN), autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]  # test SQL, not user input

    def fresh_database(self, template: str = "template0") -> str:
        """A new empty database (a copy of ``template``) owned by the store's role; its URL."""
        name = f"t{next(self._names)}_{secrets.token_hex(3)}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE {template}")
        return self.url(name)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user(
                    [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                     "-w", "stop"]
                ),
                capture_output=True,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
