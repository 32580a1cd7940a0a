"""PostgreSQL 15 for the argilla-server 2.x test server, as Argilla's own server deployments run it.

``Postgres(durable=False).start()`` makes a fresh cluster in a temp dir (``initdb``, trust auth, one superuser
``zsray``, locale C), runs ``postgres`` on a free 127.0.0.1 port with its unix socket in that dir, creates the
database ``argilla`` and answers ``url("postgresql+asyncpg")``; ``stop()`` shuts it down (fast) and removes the
dir, and a watcher (``reaper``) does the same if the test process dies without calling it (SIGKILL). PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` system user (Debian's
package creates it) and the binaries run as that user. ``durable=False`` (the tests) turns fsync off;
``durable=True`` (the benchmark) keeps PostgreSQL's defaults. Python 3 standard library only.

The binaries: ``$ZS_RAY_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin`` (Debian), else ``initdb`` on
PATH. ``PostgresMissing`` says what is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DB, USER, SYSTEM_USER = "argilla", "zsray", "postgres"


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    """Where ``initdb``, ``postgres`` and ``createdb`` are."""
    given = os.environ.get("ZS_RAY_PG_BIN")
    found = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    found = [Path(d) for d in found if (Path(d) / "initdb").exists()]
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresMissing("PostgreSQL is not installed: no initdb in $ZS_RAY_PG_BIN, /usr/lib/postgresql/*/bin or "
                          "on PATH (Debian/Ubuntu: apt-get install postgresql)")


def reaper(owner: int, postmaster: int, base: Path) -> subprocess.Popen:
    """A watcher in its own session: once ``owner`` (the test process) is gone, even killed with SIGKILL and so
    unable to run ``stop()``, it shuts the postmaster down (fast) and removes ``base``. ``stop()`` kills it first."""
    script = (f"while kill -0 {owner} 2>/dev/null; do sleep 0.5; done; kill -INT {postmaster} 2>/dev/null; "
              f"for i in $(seq 60); do kill -0 {postmaster} 2>/dev/null || break; sleep 0.5; done; "
              f"kill -KILL {postmaster} 2>/dev/null; rm -rf '{base}'")
    return subprocess.Popen(["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Postgres:
    def __init__(self, durable: bool = False, port: int | None = None):
        from tests.argilla2_server import free_port

        self.bin = bin_dir()
        self.durable = durable
        self.port = port or free_port()
        self.base: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.reaper: subprocess.Popen | None = None
        self._as = {}
        if os.geteuid() == 0:  # initdb and postgres refuse root
            try:
                pw = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresMissing(f"running as root, PostgreSQL needs a non-root user to run as; there is no "
                                      f"{SYSTEM_USER!r} user (useradd --system {SYSTEM_USER})") from None
            self._as = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{USER}@127.0.0.1:{self.port}/{DB}"

    @property
    def version(self) -> str:
        return subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True,
                              **self._as).stdout.strip()

    def _run(self, *cmd: str, timeout_s: float = 120) -> None:
        try:
            proc = subprocess.run([str(self.bin / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                                  cwd=self.base, timeout=timeout_s, **self._as)
        except subprocess.TimeoutExpired:
            raise PostgresMissing(f"{cmd[0]} timed out after {timeout_s:.0f}s") from None
        if proc.returncode != 0:
            raise PostgresMissing(f"{' '.join(cmd[:2])} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")

    def start(self, timeout_s: float = 60) -> "Postgres":
        self.base = Path(tempfile.mkdtemp(prefix="zs-ray-pg-"))  # in /tmp: the postgres user can reach it
        if self._as:
            os.chown(self.base, self._as["user"], self._as["group"])
        try:
            self._run("initdb", "-D", str(self.base / "data"), "-U", USER, "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
            opts = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
            if not self.durable:
                opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            with open(self.base / "postgres.log", "wb") as log:
                if self._as:
                    os.chown(self.base / "postgres.log", self._as["user"], self._as["group"])
                self.proc = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.base / "data"), "-p", str(self.port),
                     "-k", str(self.base), *opts], cwd=self.base, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, **self._as)
            self.reaper = reaper(os.getpid(), self.proc.pid, self.base)
            deadline = time.monotonic() + timeout_s
            while True:
                if self.proc.poll() is not None:
                    raise PostgresMissing(f"postgres exited with status {self.proc.returncode}: {self.log_tail()}")
                ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                                        "-U", USER, "-q"], **self._as).returncode == 0
                if ready:
                    break
                if time.monotonic() > deadline:
                    raise PostgresMissing(f"postgres did not answer within {timeout_s:.0f}s: {self.log_tail()}")
                time.sleep(0.2)
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DB)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.base / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return "(no postgres log)"

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then the directory removed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # the postmaster: fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self.reaper is not None:
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> "Postgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
