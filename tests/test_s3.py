"""Object-store outputs against an S3-compatible server on 127.0.0.1 (moto in server mode): written, read
back by `log`, never seen as complete while half-written, resumed after a kill."""

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
BUCKET = "zs-ray-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server and the environment a user would set: AWS_ENDPOINT_URL and the usual AWS variables."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    yield fs, env
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.stop()


def run_cli(args, env):
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    full.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "zs_ray.cli", *args], cwd=ROOT, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3data") / "notes.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(8000, seed=9, empty_every=41)), path, row_group_size=500)
    return path


@pytest.mark.slow
def test_s3_output_written_resumed_after_a_kill_and_logged(s3, rows_file, nli_model, tmp_path):
    from tests.rubrix_server import RubrixTestServer
    from zs_ray.output import MANIFEST, open_output

    fs, env = s3
    uri = f"s3://{BUCKET}/run1/predictions"
    args = ["annotate", "--dataset", str(rows_file), "--split", "train", "--model", nli_model, "--output", uri,
            "--precision", "fp32", "--text-field", "text"]

    def committed():
        return [f for f in fs.find(f"{BUCKET}/run1/.predictions.zs-ray-partial/checkpoint", refresh=True)
                if f.endswith(".parquet") and not f.endswith(".pending.parquet")]

    proc = run_cli(args, env)
    try:
        deadline = time.monotonic() + 180
        while not committed() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert committed(), "the job never committed a file"
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-write
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Half-written: nothing at the output's URI looks like an output, and readers refuse it.
    assert not fs.exists(f"{BUCKET}/run1/predictions/{MANIFEST}")
    with pytest.raises(Exception):
        open_output(uri)

    again = run_cli(args, env)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-3000:]
    assert "of them written before a resume" in stdout
    out = open_output(uri)
    ids = out.dataset.to_table(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == [f"notes-{i:07d}" for i in range(8000)] and out.manifest["rows"] == 8000
    assert not fs.exists(f"{BUCKET}/run1/.predictions.zs-ray-partial")

    # `zs-ray log` reads the object-store output as any other (its ledger goes to the user's cache).
    with RubrixTestServer("rubrix-0.18") as srv:
        log = run_cli(["log", "--input", uri, "--rubrix-dataset", "notas", "--rubrix-api-url", srv.url], env)
        stdout, stderr = log.communicate(timeout=300)
        assert log.returncode == 0, stderr[-3000:]
        predicted = {r["id"] for r in out.dataset.to_table(columns=["id", "score"]).to_pylist()
                     if r["score"] is not None}
        assert set(srv.writes["notas"]) == predicted and set(srv.writes["notas"].values()) == {1}
