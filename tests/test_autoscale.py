"""Autoscaling: zs_ray.capacity, and the job's model pool growing onto nodes the autoscaler adds mid-run.

The cluster is Ray's fake multi-node provider (what ``ray.cluster_utils.AutoscalingCluster`` starts)
on this one machine: a head plus up to three "model" worker nodes, each a real raylet launched by the
autoscaler monitor on demand (about 3 s here) and removed after 6 s idle. ``autoscaling_cluster``
starts it itself because AutoscalingCluster runs ``ray stop --force`` (killing every Ray on the
machine) and needs an example.yaml that the ray wheel lacks.

Drivers run in their own Python process (``run_driver``), like a ``ray job submit`` entrypoint, so
that the pytest process's own Ray (the ``ray_local`` fixture) is left alone. Both sides run with
``RAY_AUTH_MODE=disabled``: Ray 2.60's ``ray start`` turns token auth on whenever
~/.ray/auth_token exists, while ``ray.init(address=...)`` does not.
The job itself runs as the zs-ray CLI with ``--ray-address``, as a ``ray job submit`` entrypoint would.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import mlsum_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

MiB = 2**20
HEAD = {"CPU": 2, "object_store_memory": 500 * MiB}
MODEL_NODE = {"CPU": 1, "model_slot": 1, "object_store_memory": 200 * MiB}
MAX_MODEL_NODES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def autoscaling_cluster(head: dict, worker_node_types: dict, *, idle_timeout_minutes: float = 0.1,
                        start_timeout_s: float = 60):
    """A fake multi-node autoscaling cluster on this machine; yields its GCS address ("ip:port").

    ``worker_node_types``: autoscaler ``available_node_types`` entries, e.g.
    ``{"model": {"resources": {...}, "min_workers": 0, "max_workers": 3, "node_config": {}}}``.
    Everything it started is killed on exit, and nothing else."""
    import ray._private.services

    ip, port = ray._private.services.get_node_ip_address(), _free_port()
    tmp = tempfile.mkdtemp(prefix="zsas-", dir="/tmp")  # short: Ray's socket paths live under it
    config = {
        "cluster_name": "zs-ray-fake", "max_workers": sum(t["max_workers"] for t in worker_node_types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"{ip}:{port}"},
        # The fake provider tags its head "ray.head.default"; any other name makes the autoscaler
        # see an unknown head and launch workers of the head type over and over.
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": dict(head), "node_config": {}, "max_workers": 0},
            **worker_node_types,
        },
        "upscaling_speed": 100.0, "idle_timeout_minutes": idle_timeout_minutes,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
    config_path = os.path.join(tmp, "cluster.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    custom = {k: v for k, v in head.items() if k not in ("CPU", "GPU", "object_store_memory")}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
           f"--autoscaling-config={config_path}", f"--temp-dir={tmp}", "--include-dashboard=false",
           "--disable-usage-stats",
           f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
           f"--num-cpus={head.get('CPU', 0)}", f"--num-gpus={head.get('GPU', 0)}",
           f"--object-store-memory={head.get('object_store_memory', 500 * MiB)}",
           f"--resources={json.dumps(custom)}"]
    env = dict(os.environ, **ENV, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    log_path = os.path.join(tmp, "ray_start.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while "Ray runtime started" not in open(log_path).read():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{open(log_path).read()[-3000:]}")
            time.sleep(0.5)
        yield f"{ip}:{port}"
    finally:
        _kill_tree(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill `ray start --block` and all it spawned: GCS, raylets (the fake worker nodes are children
    of the autoscaler monitor), workers. Graceful `ray stop` drains for up to 30 s; not needed here."""
    import psutil  # ray ships it; `import ray` (done by the caller) puts it on sys.path

    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=15)
    proc.wait(timeout=15)


def run_driver(address: str, function: str, timeout_s: float = 120, **kwargs):
    """Call ``tests.test_autoscale.<function>(**kwargs)`` in a fresh Python process connected to
    ``address``; returns what it returns (JSON-able)."""
    code = ("import json, sys, ray, tests.test_autoscale as t\n"
            "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='WARNING',\n"
            "         runtime_env={'env_vars': {'PYTHONPATH': sys.argv[3]}})\n"
            "print('RESULT=' + json.dumps(getattr(t, sys.argv[2])(**json.loads(sys.argv[4]))))\n")
    out = subprocess.run([sys.executable, "-c", code, address, function, ROOT, json.dumps(kwargs)], cwd=ROOT,
                         env=dict(os.environ, **ENV), capture_output=True, text=True, timeout=timeout_s)
    results = [line for line in out.stdout.splitlines() if line.startswith("RESULT=")]
    assert out.returncode == 0 and results, (
        f"driver failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return json.loads(results[-1][len("RESULT="):])


# ---- driver-side functions (run inside run_driver's process) -----------------------------------


def _capacity() -> dict:
    import dataclasses

    import ray

    from zs_ray.capacity import cluster_capacity

    head = next(n["Resources"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    return {**dataclasses.asdict(cluster_capacity()), "head": head}


def _model_actors() -> list:
    """(node, start, end, on the head) of every model-stage actor in the GCS's actor table."""
    import ray
    import ray._private.state

    head = ray.get_runtime_context().get_node_id()
    table = ray._private.state.state.actor_table(None)
    return [[a["Address"]["NodeID"], a["StartTime"] / 1000, a["EndTime"] / 1000, a["Address"]["NodeID"] == head]
            for a in table.values() if a["ActorClassName"] == "MapWorker(MapBatches(ModelStage))"]


def _idle_nodes_gone() -> int:
    import ray

    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in ray.nodes()) > 1 and time.monotonic() < deadline:
        time.sleep(1)
    return sum(n["Alive"] for n in ray.nodes())


# ---- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_cluster():
    """Head {CPU: 2} + 0..3 model nodes {CPU: 1, model_slot: 1}; yields the address."""
    worker = {"resources": MODEL_NODE, "node_config": {}, "min_workers": 0, "max_workers": MAX_MODEL_NODES}
    with autoscaling_cluster(HEAD, {"model": worker}) as address:
        yield address


def test_max_workers_from_cluster_yaml():
    """The project's `ray up` config: a CPU head that never gets workers of its type + 8 GPU nodes."""
    from zs_ray.capacity import _from_autoscaling_config

    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        config = yaml.safe_load(f)
    assert _from_autoscaling_config(config) == {"CPU": 64.0, "GPU": 8.0}
    config["max_workers"] = 3  # the global cap wins over the node type's own
    assert _from_autoscaling_config(config) == {"CPU": 24.0, "GPU": 3.0}


def test_capacity_without_autoscaler(ray_local):
    from zs_ray.capacity import cluster_capacity

    now = {k: v for k, v in ray_local.cluster_resources().items() if not k.startswith("node:")}
    capacity = cluster_capacity()
    assert capacity.most == capacity.now == now and now["CPU"] == 2
    assert [node["CPU"] for node in capacity.nodes] == [2.0]


@pytest.mark.slow
def test_capacity_of_autoscaling_cluster(fake_cluster):
    got = run_driver(fake_cluster, "_capacity")
    assert got["most"]["CPU"] == HEAD["CPU"] + MAX_MODEL_NODES * MODEL_NODE["CPU"]
    assert got["most"]["model_slot"] == MAX_MODEL_NODES
    # the head counts with its live resources, the workers with their configured ones
    assert got["most"]["object_store_memory"] == (got["head"]["object_store_memory"]
                                                  + MAX_MODEL_NODES * MODEL_NODE["object_store_memory"])
    assert got["now"]["CPU"] == HEAD["CPU"] and "model_slot" not in got["now"]  # only the head is up
    assert {"CPU": 1, "model_slot": 1} in [{k: n[k] for k in ("CPU", "model_slot") if k in n} for n in got["nodes"]]


def zs_ray(address, *args, timeout=300):
    env = dict(os.environ, **ENV, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "zs_ray.cli", "annotate", "--ray-address", address, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_model_pool_grows_with_the_autoscaler_every_row_once(fake_cluster, tmp_path, nli_model):
    """--num-workers 1-3 on a cluster with no model node up: the pool starts with one actor on the first
    node the autoscaler adds and grows onto the next ones while the job streams; every row is written once.
    Model actors hold a model slot (a custom resource only the worker nodes have) and no CPU of their own:
    Ray Data budgets CPUs against the cluster size it has seen (refreshed every ~20 s), custom resources not."""
    rows = 16000
    data = tmp_path / "articles.parquet"
    pq.write_table(pa.Table.from_pylist(mlsum_rows(rows, seed=4)), data, row_group_size=1000)
    pool = ["--model", nli_model, "--text-field", "text", "--precision", "fp32", "--split", "train",
            "--cpus-per-worker", "0", "--resources-per-worker", '{"model_slot": 1}']

    # More model actors than the cluster can ever hold: refused at once, before any node is added.
    refused = zs_ray(fake_cluster, "--dataset", str(data), "--output", str(tmp_path / "no"), "--num-workers", "1-4",
                     *pool)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1].startswith("zs-ray: error: --num-workers 1-4: 4 model worker(s)")
    assert "4 model_slot" in refused.stderr and "at most" in refused.stderr and "3 model_slot" in refused.stderr
    assert not (tmp_path / "no").exists()

    assert run_driver(fake_cluster, "_idle_nodes_gone") == 1  # only the head: no model node is up
    started = time.time()
    proc = zs_ray(fake_cluster, "--dataset", str(data), "--output", str(tmp_path / "out"), "--num-workers", "1-3",
                  *pool)
    ended = time.time()
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "1-3 x (1 model_slot) model worker(s)" in proc.stdout

    ids = pq.read_table(tmp_path / "out", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == [f"articles-{i:07d}" for i in range(rows)]  # every row exactly once

    # The actors that started (one the pool asked for last may still wait for a node when the input ends:
    # the GCS lists it with StartTime 0 and no node).
    actors = [a for a in run_driver(fake_cluster, "_model_actors") if a[1] > 0]
    assert not any(on_head for *_, on_head in actors)  # a model slot only on the nodes added for them
    first_node, first_start = min(((node, start) for node, start, *_ in actors), key=lambda a: a[1])
    joined = [start for node, start, *_ in actors if node != first_node]
    assert joined, f"the pool never grew onto a second node: {actors}"
    # The pool started with one actor; another, on a node added meanwhile, joined while the job ran.
    assert started < first_start < min(joined) < ended
