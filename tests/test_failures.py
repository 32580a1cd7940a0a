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


@pytest.mark.parametrize("sig, code, name, resume", [(signal.SIGTERM, 143, "SIGTERM", True),
                                                     (signal.SIGINT, 130, "Ctrl-C", False)])
def test_stopped_mid_run_then_the_same_command_finishes(tmp_path, long_input, nli_model, sig, code, name, resume):
    """Stopped once some files are written: one line, no traceback, nothing looks complete, the partial
    run is kept hidden, and the same command again finishes it (the Ctrl-C case stops there: the same
    state as SIGTERM's, and resuming is also the SIGKILL test's)."""
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
    assert stderr.strip().splitlines()[-1] == f"zs-ray: stopped by {name}; run the same command again to resume"
    assert "Traceback" not in stderr + stdout
    assert not out.exists()  # nothing that looks like an output
    done = sum(pq.read_metadata(p).num_rows for p in committed_checkpoints(partial))
    assert 0 < done <= 8000  # on a loaded machine the last file may commit before the signal lands
    if not resume:
        return

    again = run_cli(args)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-3000:]
    assert f"8000 rows (0 skipped: empty text, {done} of them written before a resume)" in stdout
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == [f"long-{i:07d}" for i in range(8000)]  # every row exactly once
    assert list(tmp_path.iterdir()) == [out]  # the partial run is gone once published


class CountingModelStage:
    """The job's model stage, also appending the ids it classifies to $ZS_RAY_TEST_IDS (run in Ray's
    workers: see ``_counting_cli``)."""

    def __init__(self, *args, **kwargs):
        from zs_ray.stages.model import ModelStage

        self.stage = ModelStage(*args, **kwargs)

    def __call__(self, batch):
        out = self.stage(batch)
        with open(os.environ["ZS_RAY_TEST_IDS"], "a", encoding="utf-8") as fh:
            fh.write(" ".join(out.column("id").to_pylist()) + "\n")
        return out


def _counting_cli(args, ids_file):
    code = ("import sys, zs_ray.pipeline, zs_ray.cli, tests.test_failures as t\n"
            "zs_ray.pipeline.ModelStage = t.CountingModelStage\n"
            "sys.exit(zs_ray.cli.main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "ZS_RAY_TEST_IDS": str(ids_file)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_driver_killed_half_way_then_the_rows_done_are_not_computed_again(tmp_path, nli_model):
    """SIGKILL once half of 20,000 rows are committed; the same command again classifies exactly the rows
    that were not committed (counted in the model stage), and the output holds every id once."""
    rows = 20000
    data = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(rows, seed=8)), data, row_group_size=1000)
    out, partial = tmp_path / "out", tmp_path / ".out.zs-ray-partial"
    args = ["annotate", "--dataset", str(data), "--split", "train", "--model", nli_model, "--output", str(out),
            "--precision", "fp32"]

    def committed_ids() -> set:
        return {i for p in committed_checkpoints(partial) for i in pq.read_table(p).column("id").to_pylist()}

    proc = _counting_cli(args, tmp_path / "ids-1.txt")
    try:
        deadline = time.monotonic() + 240
        while len(committed_ids()) < rows // 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = committed_ids()
    assert rows // 2 <= len(done) < rows and not out.exists()

    again = _counting_cli(args, tmp_path / "ids-2.txt")
    stdout, stderr = again.communicate(timeout=400)
    assert again.returncode == 0, stderr[-3000:]
    classified_again = set((tmp_path / "ids-2.txt").read_text().split())
    every = {f"big-{i:07d}" for i in range(rows)}
    assert classified_again == every - done  # nothing committed before the kill is computed again
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert len(ids) == rows and set(ids) == every  # every row exactly once


def test_rerun_with_other_settings_is_refused_and_overwrite_starts_over(ray_local, tmp_path, capsys, nli_model):
    """An unfinished run is never mixed with other settings."""
    from zs_ray.stages.write import RUN_FILE

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
    assert main(args + ["--overwrite"]) == 0  # the unfinished run is dropped, the new one completes
    assert pq.read_table(tmp_path / "out").num_rows == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet", "out"]
