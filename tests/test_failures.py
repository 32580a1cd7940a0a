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
    pq.write_table(pa.Table.from_pylist(mlsum_rows(8000, seed=3)), path, row_group_size=500)
    return path


def run_cli(args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "zs_ray.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def committed_checkpoints(partial: Path) -> list:
    return [p for p in (partial / "checkpoint").glob("*.parquet") if not p.name.endswith(".pending.parquet")]


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C"),
                                             (signal.SIGKILL, -9, None)])
def test_stopped_or_killed_mid_run_then_the_same_command_finishes(tmp_path, long_input, nli_model, sig, code, name):
    """Stopped (one line, no traceback) or killed once some files are written: nothing looks complete, the
    partial run is kept hidden, and the same command again finishes it without computing those rows again."""
    out = tmp_path / "out"
    partial = tmp_path / ".out.zs-ray-partial"
    args = ["annotate", "--dataset", str(long_input), "--split", "train", "--model", nli_model, "--output",
            str(out), "--precision", "fp32", "--text-field", "text"]
    proc = run_cli(args)
    try:
        deadline = time.monotonic() + 180
        while not committed_checkpoints(partial) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        assert committed_checkpoints(partial), "the job never committed a file"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    if name:
        assert stderr.strip().splitlines()[-1] == (f"zs-ray: stopped by {name}; run the same command again "
                                                   "to resume"), stderr[-3000:]
        assert "Traceback" not in stderr + stdout
    assert not out.exists()  # nothing that looks like an output
    done = sum(pq.read_metadata(p).num_rows for p in committed_checkpoints(partial))
    assert 0 < done <= 8000  # on a loaded machine the last file may commit before the signal lands

    again = run_cli(args)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-3000:]
    assert f"8000 rows (0 skipped: empty text, {done} of them written before a resume)" in stdout
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == [f"long-{i:07d}" for i in range(8000)]  # every row exactly once
    assert list(tmp_path.iterdir()) == [out]  # the partial run is gone once published


def test_rerun_with_other_settings_is_refused_and_overwrite_starts_over(tmp_path, capsys, nli_model):
    """An unfinished run is never mixed with other settings."""
    from zs_ray.write import RUN_FILE

    data = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(20, seed=1)), data)
    partial = tmp_path / ".out.zs-ray-partial"
    partial.mkdir()
    (partial / RUN_FILE).write_text('{"model": "another/model"}')
    args = ["annotate", "--dataset", str(data), "--split", "train", "--model", nli_model, "--output",
            str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("zs-ray: error: an unfinished run with other settings (") and err.count("\n") == 1
    assert "model: 'another/model' -> " in err and "--overwrite to start over" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.zs-ray-partial", "d.parquet"]
