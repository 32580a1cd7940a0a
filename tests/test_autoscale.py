"""Autoscaling: zs_ray.capacity and a model actor pool growing onto nodes the autoscaler adds mid-run.

The cluster is Ray's fake multi-node provider (what ``ray.cluster_utils.AutoscalingCluster`` starts)
on this one machine: a head plus up to three "model" worker nodes, each a real raylet launched by the
autoscaler monitor on demand (about 3 s here) and removed after 6 s idle. ``autoscaling_cluster``
starts it itself because AutoscalingCluster runs ``ray stop --force`` (killing every Ray on the
machine) and needs an example.yaml that the ray wheel lacks.

Drivers run in their own Python process (``run_driver``), like a ``ray job submit`` entrypoint, so
that the pytest process's own Ray (the ``ray_local`` fixture) is left alone. Both sides run with
``RAY_AUTH_MODE=disabled``: Ray 2.60's ``ray start`` turns token auth on whenever
~/.ray/auth_token exists, while ``ray.init(address=...)`` does not.
To run the real job instead of the prototype, call the zs-ray CLI with ``--address`` in place of
``run_driver(address, "_pool_prototype", ...)``.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

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
        "available_node_types": {"ray.head.default": {"resources": dict(head), "node_config": {}, "max_workers": 0},
                                 **worker_node_types},
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
    cmd = ["ray", "start", "--head", "--block", f"--port={port}", f"--autoscaling-config={config_path}",
           f"--temp-dir={tmp}", "--include-dashboard=false", "--disable-usage-stats",
           f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
           f"--num-cpus={head.get('CPU', 0)}", f"--num-gpus={head.get('GPU', 0)}",
           f"--object-store-memory={head.get('object_store_memory', 500 * MiB)}", f"--resources={json.dumps(custom)}"]
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
        import shutil

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
    assert out.returncode == 0 and results, f"driver failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return json.loads(results[-1][len("RESULT="):])


# ---- driver-side functions (run inside run_driver's process) -----------------------------------


def _capacity() -> dict:
    import ray

    from zs_ray.capacity import autoscaling, max_cluster_resources

    head = next(n["Resources"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    return {"max": max_cluster_resources(), "autoscaling": autoscaling(), "now": ray.cluster_resources(), "head": head}


class NodeRecorder:
    """Stands in for the model: tags each row with the node and actor that saw it, sleeps per batch."""

    def __init__(self, sleep_s: float):
        import ray

        context = ray.get_runtime_context()
        self.node, self.actor, self.sleep_s = context.get_node_id(), context.get_actor_id(), sleep_s

    def __call__(self, batch):
        started = time.time()
        time.sleep(self.sleep_s)
        n = len(batch["id"])
        return {"id": batch["id"], "node": [self.node] * n, "actor": [self.actor] * n, "t": [started] * n}


def _pool_prototype(rows: int, blocks: int, sleep_s: float, max_size: int) -> dict:
    import ray

    def alive():
        return [n["NodeID"] for n in ray.nodes() if n["Alive"]]

    deadline = time.monotonic() + 60
    while len(alive()) > 1 and time.monotonic() < deadline:  # let idle model nodes of earlier tests go
        time.sleep(1)
    nodes_before = alive()
    ds = ray.data.range(rows, override_num_blocks=blocks).map_batches(
        NodeRecorder, fn_constructor_kwargs={"sleep_s": sleep_s}, batch_size=rows // blocks,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max_size),
        # The model slot is what places the actor on a model node. num_cpus=0: Ray Data budgets an
        # actor's CPUs/GPUs against the cluster size it has *seen* (refreshed every ~20 s), and
        # would hold the pool back until then; custom resources are outside that budget, so the
        # pool asks for max_size at once and the pending actors make the autoscaler add nodes.
        num_cpus=0, resources={"model_slot": 1})
    started = time.time()
    out = ds.take_all()
    return {"nodes_before": nodes_before, "head": ray.get_runtime_context().get_node_id(), "started": started,
            "ended": time.time(), "rows": [[int(r["id"]), r["node"], r["actor"], float(r["t"])] for r in out]}


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


def test_max_cluster_resources_without_autoscaler(ray_local):
    from zs_ray.capacity import autoscaling, max_cluster_resources

    now = {k: v for k, v in ray_local.cluster_resources().items() if not k.startswith("node:")}
    assert max_cluster_resources() == now
    assert now["CPU"] == 2
    assert not autoscaling()


@pytest.mark.slow
def test_max_cluster_resources_of_autoscaling_cluster(fake_cluster):
    got = run_driver(fake_cluster, "_capacity")
    assert got["autoscaling"]
    assert got["max"]["CPU"] == HEAD["CPU"] + MAX_MODEL_NODES * MODEL_NODE["CPU"]
    assert got["max"]["model_slot"] == MAX_MODEL_NODES
    # the head counts with its live resources, the workers with their configured ones
    assert got["max"]["object_store_memory"] == (got["head"]["object_store_memory"]
                                                 + MAX_MODEL_NODES * MODEL_NODE["object_store_memory"])
    assert got["max"]["memory"] >= got["head"]["memory"]
    assert got["now"]["CPU"] == HEAD["CPU"] and "model_slot" not in got["now"]  # only the head is up


@pytest.mark.slow
def test_actor_pool_grows_onto_new_nodes(fake_cluster):
    rows, blocks, sleep_s = 3000, 60, 0.3
    got = run_driver(fake_cluster, "_pool_prototype", timeout_s=150,
                     rows=rows, blocks=blocks, sleep_s=sleep_s, max_size=MAX_MODEL_NODES)

    assert got["nodes_before"] == [got["head"]]  # no model node before the run
    assert sorted(r[0] for r in got["rows"]) == list(range(rows))  # every id exactly once

    first_batch = {}  # actor -> (its first batch's start, node)
    for _, node, actor, t in got["rows"]:
        if actor not in first_batch or t < first_batch[actor][0]:
            first_batch[actor] = (t, node)
    order = sorted(first_batch.values())
    nodes = {node for _, node in order}
    assert len(order) >= 2, f"the pool never grew: {order}"
    assert got["head"] not in nodes and len(nodes) == len(order)  # one actor per new model node
    # The pool started with one actor: it ran alone for a while before the next one joined...
    first_actor = min(first_batch, key=lambda a: first_batch[a][0])
    alone = sum(1 for _, _, actor, t in got["rows"] if actor == first_actor and t < order[1][0]) // (rows // blocks)
    assert alone >= 3, f"the first actor ran only {alone} batches alone"
    # ...and the others joined mid-run and took a share of the work.
    for t, _ in order[1:]:
        assert got["started"] < t < got["ended"]
    later = sum(1 for _, _, actor, _ in got["rows"] if actor != first_actor)
    assert later >= rows // blocks * 3
