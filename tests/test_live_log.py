"""Logging while predicting: records reach the server before the job ends, and a kill in the middle
followed by the same command leaves each record on the server exactly once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.builders import mlsum_rows

ROOT = Path(__file__).resolve().parent.parent
DS = "noticias_en_vivo"


@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "live.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(12000, seed=5, empty_every=97)), path, row_group_size=500)
    return path


def run_cli(args, url):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "RUBRIX_API_URL": url,
           "RUBRIX_WORKSPACE": "rubrix"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "zs_ray.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_records_arrive_while_predicting_and_a_killed_run_logs_each_once(tmp_path, long_input, nli_model):
    from tests.rubrix_server import RubrixTestServer

    out = tmp_path / "out"
    args = ["annotate", "--dataset", str(long_input), "--split", "train", "--model", nli_model, "--output",
            str(out), "--precision", "fp32", "--text-field", "text", "--rubrix-dataset", DS]
    with RubrixTestServer("argilla-1.29") as srv:
        proc = run_cli(args, srv.url)
        try:
            deadline = time.monotonic() + 240
            while not srv.writes.get(DS) and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()  # the job is still running...
                time.sleep(0.1)
            first = len(srv.writes.get(DS, {}))
            assert first > 0, "no record reached the server while the job ran"  # ...and records are there
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not out.exists()
        annotated = sorted(srv.writes[DS])[:3]
        for rid in annotated:  # a person starts working on what arrived
            srv.annotate(DS, rid, ["cultura"])

        again = run_cli(args, srv.url)
        stdout, stderr = again.communicate(timeout=400)
        assert again.returncode == 0, stderr[-3000:]
        rows = pq.read_table(out, columns=["id", "prediction"]).to_pylist()
        assert len(rows) == 12000
        predicted = {r["id"] for r in rows if r["prediction"] is not None}
        assert set(srv.writes[DS]) == predicted  # every predicted row on the server...
        assert set(srv.writes[DS].values()) == {1}  # ...each sent once, across the kill
        assert all(srv.records(DS)[rid]["status"] == "Validated" for rid in annotated)
        assert "already acknowledged" in stdout  # the final pass found the live log's work done
