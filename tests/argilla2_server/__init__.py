"""The real argilla-server 2.x for the tests, in its own virtual environment, on 127.0.0.1.

``Argilla2Server(workdir).start()`` makes sure ``<repo>/.venv-argilla`` holds ``argilla-server==2.8.*`` (and the
``argilla`` 2.8 SDK, for tests that query as a user's script does: ``sdk_python``)
(created once with ``python3 -m venv`` + pip, under a file lock so parallel sessions do not race; reused
while its marker names the same requirements), then runs ``launch.py`` there: SQLite in ``workdir`` (or
the ``database_url`` given: PostgreSQL, ``postgres.py``),
fakeredis, the in-memory search engine of ``memory_engine.py`` (registered by name), migrations, the
default owner ``argilla`` (workspace ``argilla``) with ``api_key``. The server's output goes to
``workdir/server.log``; if the server does not answer, ``ServerFailed`` carries the end of that log.
Python 3 standard library only: usable from the tests and the benchmark.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = REPO / ".venv-argilla"
# argilla: the official SDK (its dependencies are the server's already: ~5 s more), to query as users do.
# asyncpg and psycopg2 (the migrations'): the server on PostgreSQL (postgres.py).
REQUIREMENTS = ["argilla-server==2.8.*", "fakeredis>=2.20", "uvicorn>=0.30", "argilla==2.8.*", "asyncpg>=0.29",
                "psycopg2-binary>=2.9"]
MARKER = VENV / "zs-ray-requirements.json"
OWNER_KEY = "zs-ray.test.owner-key-2x"


class ServerFailed(RuntimeError):
    pass


def ensure_venv(timeout_s: float = 600) -> Path:
    """The server's interpreter, installing the venv first if it is missing or other requirements."""
    python = VENV / "bin" / "python"
    lock_path = REPO / ".venv-argilla.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            installed = list(VENV.glob("lib/python*/site-packages/argilla_server-2.8.*.dist-info"))
            if python.exists() and installed and MARKER.exists() and json.loads(MARKER.read_text()) == REQUIREMENTS:
                return python
            if not python.exists():
                _run([sys.executable, "-m", "venv", str(VENV)], timeout_s)
            _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
                  *REQUIREMENTS], timeout_s)
            MARKER.write_text(json.dumps(REQUIREMENTS))
            return python
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], timeout_s: float) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ServerFailed(f"setting up {VENV} timed out after {timeout_s:.0f}s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise ServerFailed(f"setting up {VENV} failed ({' '.join(cmd[:4])} ...):\n" + "\n".join(tail))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Argilla2Server:
    def __init__(self, workdir, api_key: str = OWNER_KEY, port: int | None = None, database_url: str | None = None):
        self.workdir = Path(workdir)
        # SQLite in ``workdir`` unless another database is named (``postgres.Postgres.url()``)
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.workdir / 'argilla.db'}"
        self.api_key = api_key
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> "Argilla2Server":
        return self.launch().wait(timeout_s)

    def launch(self) -> "Argilla2Server":
        """Start the server process (after making sure of its venv); ``wait`` until it answers."""
        python = ensure_venv()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ARGILLA_", "RUBRIX_", "VIRTUAL_ENV", "PYTHON"))}
        env.update({
            "ARGILLA_HOME_PATH": str(self.workdir / "home"),
            "ARGILLA_DATABASE_URL": self.database_url,
            "ARGILLA_SEARCH_ENGINE": "memory",
            "ARGILLA_REDIS_URL": "redis://fakeredis:6379/0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TMPDIR": str(self.workdir / "tmp"),  # the UI's static files are copied there
        })
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(python), str(HERE / "launch.py"), str(self.port), self.api_key],
                                         cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait(self, timeout_s: float = 90) -> "Argilla2Server":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"argilla-server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v1/version", timeout=2) as resp:
                    if json.loads(resp.read()).get("version", "").startswith("2."):
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerFailed(f"argilla-server did not answer on {self.url} within {timeout_s:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    @property
    def sdk_python(self) -> str:
        """The interpreter of the server's venv, where the official ``argilla`` SDK is installed."""
        return str(VENV / "bin" / "python")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what a person (or an admin) does, through the API -------------------------------------------
    def api(self, method: str, path: str, body=None, key: str | None = None, params: str = ""):
        req = urllib.request.Request(self.url + path + params, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-Argilla-Api-Key": key or self.api_key,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path} -> {exc.code}: {exc.read()[:500]!r}") from None

    def workspace(self, name: str = "argilla") -> dict:
        return next(w for w in self.api("GET", "/api/v1/me/workspaces")["items"] if w["name"] == name)

    def create_user(self, username: str, role: str = "annotator", workspace: str = "argilla") -> dict:
        user = self.api("POST", "/api/v1/users", {"first_name": username, "username": username,
                                                  "password": "annotator-pass-123", "role": role})
        self.api("POST", f"/api/v1/workspaces/{self.workspace(workspace)['id']}/users", {"user_id": user["id"]})
        return user

    def dataset(self, name: str, workspace: str = "argilla") -> dict | None:
        ws = self.workspace(workspace)["id"]
        items = self.api("GET", "/api/v1/me/datasets", params=f"?workspace_id={ws}&name={name}")["items"]
        return items[0] if items else None

    def records(self, dataset_id: str) -> list[dict]:
        out, offset = [], 0
        while True:
            page = self.api("GET", f"/api/v1/datasets/{dataset_id}/records",
                            params=f"?include=suggestions&include=responses&offset={offset}&limit=1000")
            out += page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return out

    def respond(self, record_id: str, values: dict | None, status: str, key: str) -> dict:
        body = {"status": status, **({"values": values} if values is not None else {})}
        return self.api("POST", f"/api/v1/records/{record_id}/responses", body, key=key)

