"""A PostgreSQL started by a test process that is killed with SIGKILL (no fixture teardown runs) does not keep
running: its watcher shuts it down and removes its directory."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for this purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_postgres_stops_when_its_test_process_is_killed(tmp_path):
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from tests.argilla2_server.postgres import Postgres\n"
              "pg = Postgres().start(); print(pg.proc.pid, pg.base, flush=True); time.sleep(600)\n" % str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, base = proc.stdout.readline().split()
        pid = int(pid)
        assert alive(pid) and Path(base).exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 40
    while (alive(pid) or Path(base).exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the postmaster outlived the killed test process"
    assert not Path(base).exists()
