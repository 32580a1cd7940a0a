"""Failures that keep what was done, and stopping cleanly: logging that fails after the predictions are
written, Ctrl-C and SIGTERM in the middle of a run."""

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
from zs_ray.cli import main
from zs_ray.output import MANIFEST

ROOT = Path(__file__).resolve().parent.parent
DS = "zeroshot_noticias"


def test_logging_failure_keeps_the_predictions_and_log_finishes_later(ray_local, tmp_path, monkeypatch, capsys,
                                                                       mlsum_dir, nli_model):
    """The server answers the checks before the job, then fails every request: the summary is printed,
    the exit code is 1, the predictions stay complete, and `zs-ray log` delivers every record later."""
    from tests.rubrix_server import RubrixTestServer
    from zs_ray import pipeline

    out = tmp_path / "predictions"
    with RubrixTestServer("argilla-1.29") as srv:
        real_preflight = pipeline.preflight

        def preflight_then_outage(config):  # the fault: the server goes down once the job has started
            info = real_preflight(config)
            srv.fail_next(10**6, path="/api/")
            return info

        monkeypatch.setattr(pipeline, "preflight", preflight_then_outage)
        for name, value in {"RUBRIX_API_URL": srv.url, "RUBRIX_WORKSPACE": "rubrix"}.items():
            monkeypatch.setenv(name, value)
        code = main(["annotate", "--dataset", mlsum_dir, "--split", "test[:60]", "--model", nli_model,
                     "--output", str(out), "--rubrix-dataset", DS, "--rubrix-retries", "1",
                     "--rubrix-backoff", "0.01"])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        assert "zs-ray: 60 rows" in captured.out  # the run's summary is still printed
        error = [line for line in captured.err.splitlines() if line.startswith("zs-ray: error:")]
        assert len(error) == 1 and f"logging to {DS} failed" in error[0] and "zs-ray log --input" in error[0]
        assert (out / MANIFEST).is_file() and pq.read_table(out).num_rows == 60  # the predictions stay
        assert srv.bulk_requests == 0

        srv.fail_next(0)
        assert main(["log", "--input", str(out), "--rubrix-dataset", DS]) == 0
        predicted = {r["id"] for r in pq.read_table(out).to_pylist() if r["prediction"] is not None}
        assert set(srv.writes[DS]) == predicted and set(srv.writes[DS].values()) == {1}


@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    """Enough rows that the job is still streaming several seconds after it starts writing."""
    path = tmp_path_factory.mktemp("long") / "long.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(6000, seed=3)), path, row_group_size=500)
    return path


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_stop_mid_run_one_line_no_staging(tmp_path, long_input, nli_model, sig, code, name):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "zs_ray.cli", "annotate", "--dataset", str(long_input),
                             "--split", "train", "--model", nli_model, "--output", str(out), "--precision", "fp32",
                             "--text-field", "text"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.zs-ray-staging-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert list(tmp_path.glob(".out.zs-ray-staging-*")), "the job never started writing"
        time.sleep(1.0)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"zs-ray: stopped by {name}", stderr[-3000:]
    assert "Traceback" not in stderr + stdout
    assert list(tmp_path.iterdir()) == []  # neither output nor staging directory
