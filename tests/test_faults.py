"""Lost workers, killed for real in the middle of a run: a model actor's process, and a whole second node of
a multi-node cluster. Either way the job finishes and writes every input row exactly once, with the
engine's scores.

What recovers (limits in ``zs_ray/stages/base.py``): Ray restarts a dead actor and runs its constructor again
(at most ``ACTOR_MAX_RESTARTS`` times per actor) and resubmits the batches that were in flight on it
(``ACTOR_TASK_MAX_RETRIES``: no count of its own); blocks lost with a node are rebuilt by re-running the
tasks that made them (lineage; even an actor Ray Data had already released is restarted for that); read
and write tasks are retried by Ray Data (``max_retries=-1``). With ``ACTOR_MAX_RESTARTS = 0`` both tests
fail (``ActorDiedError``), and so they do with a finite ``ACTOR_TASK_MAX_RETRIES`` (0 for the killed
process; 3 for the lost node, spent within a second while the node was not yet declared dead).

The job runs as the zs-ray CLI in its own process; the kill is aimed by process title: Ray names an actor's
worker process ``ray::MapWorker(MapBatches(ModelStage))`` and appends ``.submit`` while it runs a batch (and
``.__init__`` while the constructor runs), so "mid-run" means: a model actor is in the middle of a batch.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray  # noqa: F401  (puts the psutil that ray ships on sys.path)

from tests.builders import mlsum_rows
from tests.test_autoscale import ENV, _free_port, _kill_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ACTOR = "ray::MapWorker(MapBatches(ModelStage))"
ROWS = 8000
CHECK_EVERY = 6  # rows compared with the engine: every 6th (~40 in each 256-row batch; all 6000 take ~40 s here)


@pytest.fixture(scope="module")
def articles(tmp_path_factory):
    """MLSum-shaped rows, enough that the model stage runs for several seconds on 1-2 actors."""
    path = tmp_path_factory.mktemp("faults") / "articles.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(ROWS, seed=5)), path, row_group_size=500)
    return path


def _processes(root_pid: int) -> list:
    """``root_pid`` and every process under it."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _title(proc) -> str:
    import psutil

    try:
        return " ".join(proc.cmdline()).strip()
    except psutil.Error:
        return ""


def _model_actors(root_pid: int) -> dict:
    """pid -> title of the model actors' processes under ``root_pid``."""
    return {p.pid: t for p in _processes(root_pid) if (t := _title(p)).startswith(MODEL_ACTOR)}


def _busy_model_actor(root_pid: int, job: subprocess.Popen, busy_s: float = 2.0, timeout_s: float = 120) -> int:
    """The pid of a model actor under ``root_pid`` that is running a batch, ``busy_s`` or more after it was
    first seen running one (the job streams: blocks are done and more are in flight)."""
    first_busy: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended ({job.returncode}) before a model actor was busy"
        for pid, title in _model_actors(root_pid).items():
            if title.endswith(".submit"):
                since = first_busy.setdefault(pid, time.monotonic())
                if time.monotonic() - since >= busy_s:
                    return pid
        time.sleep(0.1)
    raise AssertionError("no model actor ran a batch in time")


def _until_done(job: subprocess.Popen, timeout_s: float = 120):
    """Yield every 0.2 s until ``job`` exits; fail (the job is killed by ``_reaped``) past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while job.poll() is None:
        assert time.monotonic() < deadline, f"the job did not end within {timeout_s:.0f}s of the kill"
        yield
        time.sleep(0.2)


def _sigkill(procs) -> None:
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)


def _annotate(data, out, *args, ray_address=None, log_dir) -> subprocess.Popen:
    env = dict(os.environ, **ENV, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    address = ["--ray-address", ray_address] if ray_address else []
    cmd = [sys.executable, "-m", "zs_ray.cli", "annotate", "--dataset", str(data), "--split", "train",
           "--text-field", "text", "--precision", "fp32", "--output", str(out), *address, *args]
    with open(os.path.join(log_dir, "stdout"), "w") as stdout, open(os.path.join(log_dir, "stderr"), "w") as stderr:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True)


def _tail(log_dir, n=4000) -> str:
    return "".join((Path(log_dir) / f).read_text()[-n:] for f in ("stdout", "stderr"))


@contextlib.contextmanager
def _reaped(job: subprocess.Popen):
    """On the way out, whatever happened: the job and everything it started (its local Ray) killed."""
    try:
        yield job
    finally:
        if job.poll() is None:
            _sigkill(_processes(job.pid)[::-1])
            with contextlib.suppress(OSError):
                os.killpg(job.pid, signal.SIGKILL)  # its own session (start_new_session)
            job.wait(timeout=30)


def _assert_every_row_once_as_the_engine(out, data, nli_model):
    from zs_ray import ZeroShotClassifier
    from zs_ray.presets import TUTORIAL  # the settings of a run without --labels/--hypothesis-template

    rows = pq.read_table(out, columns=["id", "labels", "scores"]).to_pylist()
    stem = os.path.splitext(os.path.basename(data))[0]
    assert sorted(r["id"] for r in rows) == [f"{stem}-{i:07d}" for i in range(ROWS)]  # every row exactly once
    by_id = {r["id"]: r for r in rows}
    texts = pq.read_table(data, columns=["text"]).column("text").to_pylist()
    checked = range(0, ROWS, CHECK_EVERY)
    expected = ZeroShotClassifier(nli_model, TUTORIAL.labels, TUTORIAL.hypothesis_template, precision="fp32")(
        [texts[i] for i in checked])
    for i, exp in zip(checked, expected):
        got = by_id[f"{stem}-{i:07d}"]
        # Per label, the engine's score to 1e-5; the ranking equal up to labels whose scores tie within that
        # (a near-tie may rank either way between the job's batches and the engine's).
        got_by, exp_by = dict(zip(got["labels"], got["scores"])), dict(zip(exp["labels"], exp["scores"]))
        assert got_by.keys() == exp_by.keys() and got_by == pytest.approx(exp_by, abs=1e-5), (i, got, exp)
        assert got["scores"] == sorted(got["scores"], reverse=True), i


# ---- a model actor's process killed -----------------------------------------------------------------


@pytest.mark.slow
def test_model_actor_killed_mid_run_every_row_once(tmp_path, articles, nli_model):
    """SIGKILL the model actor while it runs a batch, on the CLI's own local Ray: Ray rebuilds the actor
    and resubmits the lost batches to it; the run exits 0 with every row once and the engine's scores."""
    out = tmp_path / "out"
    start = time.monotonic()
    with _reaped(_annotate(articles, out, "--model", nli_model, log_dir=str(tmp_path))) as job:
        victim = _busy_model_actor(job.pid, job)
        killed_at = time.monotonic() - start
        os.kill(victim, signal.SIGKILL)
        rebuilt = set()
        for _ in _until_done(job):
            rebuilt |= set(_model_actors(job.pid)) - {victim}
    took = time.monotonic() - start
    assert job.returncode == 0, _tail(tmp_path)
    assert rebuilt, "no model actor process after the kill: the job was not recovered by a restart"
    _assert_every_row_once_as_the_engine(out, articles, nli_model)
    print(f"model actor killed at {killed_at:.1f}s; the run ended after {took:.1f}s")


# ---- a second node's raylet killed ------------------------------------------------------------------

MiB = 2**20
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
          "RAY_health_check_timeout_ms": "1000"}  # a dead node is declared dead in ~3 s rather than ~15 s


def _ray_start(log_path, *args, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={_free_port()}", *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=dict(os.environ, **ENV, **(env or {})), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while "Ray runtime started" not in (text := Path(log_path).read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_tree(proc)
            raise RuntimeError(f"ray start failed:\n{text[-3000:]}")
        time.sleep(0.3)
    return proc


class TwoNodeCluster:
    """A head (2 CPUs, one model slot) and a second node (1 CPU, one model slot) on this machine, each a
    real raylet started by ``ray start --block``. Everything it started is killed on exit, and nothing else."""

    def __init__(self, tmp: str):
        import ray._private.services

        self.nodes: list[subprocess.Popen] = []
        ip, port = ray._private.services.get_node_ip_address(), _free_port()
        self.address = f"{ip}:{port}"
        try:
            self.head = self._start(os.path.join(tmp, "head.log"), "--head", f"--port={port}", f"--temp-dir={tmp}",
                                    "--include-dashboard=false", f"--ray-client-server-port={_free_port()}",
                                    "--num-cpus=2", f"--object-store-memory={400 * MiB}",
                                    '--resources={"model_slot": 1}', env=HEALTH)
            self.second = self._start(os.path.join(tmp, "second.log"), f"--address={self.address}",
                                      f"--temp-dir={tmp}", "--num-cpus=1", f"--object-store-memory={200 * MiB}",
                                      '--resources={"model_slot": 1}', "--min-worker-port=0", "--max-worker-port=0")
        except BaseException:
            self.close()
            raise

    def _start(self, log_path, *args, env=None) -> subprocess.Popen:
        node = _ray_start(log_path, *args, env=env)
        self.nodes.append(node)
        return node

    def close(self):
        for node in self.nodes[::-1]:
            with contextlib.suppress(Exception):
                _kill_tree(node)


@pytest.mark.slow
def test_second_node_killed_mid_run_every_row_once(tmp_path, articles, nli_model):
    """Two model actors, one per node (each holds its node's one model slot). SIGKILL the second node's
    raylet and every process of that node while its model actor runs a batch. Ray declares the node dead
    once its health checks fail and rebuilds the blocks still needed that were stored there by re-running
    their tasks (lineage). The lost actor is restarted where a model slot is free: none is until Ray Data
    releases the head's actor at the end of the input (or an autoscaler adds a node), so the batches that
    were in flight on it wait, bound to it, while every other batch goes to the live actor; then it is
    rebuilt on the head and finishes them. Every row once, with the engine's scores."""
    tmp = tempfile.mkdtemp(prefix="zsft-", dir="/tmp")  # short: Ray's socket paths live under it
    cluster = TwoNodeCluster(tmp)
    try:
        out = tmp_path / "out"
        start = time.monotonic()
        with _reaped(_annotate(articles, out, "--model", nli_model, "--num-workers", "2", "--cpus-per-worker", "0",
                               "--resources-per-worker", '{"model_slot": 1}', ray_address=cluster.address,
                               log_dir=str(tmp_path))) as job:
            _busy_model_actor(cluster.second.pid, job, busy_s=0.5)
            killed_at = time.monotonic() - start
            on_head = set(_model_actors(cluster.head.pid))  # the live actor (unless already released)
            node = _processes(cluster.second.pid)
            raylet = [p for p in node if os.path.basename(_title(p).split(" ")[0]) == "raylet"]
            assert raylet, [_title(p) for p in node]
            _sigkill(raylet + node)  # the raylet first, then its workers and the rest of the node
            rebuilt = set()
            for _ in _until_done(job):
                rebuilt |= set(_model_actors(cluster.head.pid)) - on_head
        took = time.monotonic() - start
        assert job.returncode == 0, _tail(tmp_path)
        assert rebuilt, "the lost model actor was never rebuilt on the head"
        _assert_every_row_once_as_the_engine(out, articles, nli_model)
        print(f"second node killed at {killed_at:.1f}s; the run ended after {took:.1f}s")
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
