"""A real Ray cluster: `ray start --head` + `ray job submit` end to end, and cluster.yaml validation."""

import copy
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head():
    """A token-protected Ray head (as Ray 2.5x clusters are), stopped with its whole process group."""
    port, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "HF_HUB_OFFLINE": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env.pop("RAY_ADDRESS", None)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["ZS_RAY_TEST_RAY_TEMP"] = tempfile.mkdtemp(prefix="zsray", dir="/tmp")  # short: unix socket paths
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2",
         # free ports for the agents: a local Ray of this test session may hold their defaults
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}", "--num-gpus=0", "--disable-usage-stats",
         f"--temp-dir={env['ZS_RAY_TEST_RAY_TEMP']}"],  # the session's logs: test_rubrix_secrets searches them
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            request = urllib.request.Request(f"{url}/api/version",
                                             headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
            urllib.request.urlopen(request, timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        pytest.fail("ray head did not come up")
    yield url, env, f":{port}"
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def test_ray_job_submit_end_to_end(ray_head, tmp_path, mlsum_dir, nli_model):
    url, env, _ = ray_head
    out = tmp_path / "predictions"
    submit = ["ray", "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
              "python", "jobs/annotate_mlsum.py", "--dataset", mlsum_dir, "--model", nli_model,
              "--split", "test[100:160]", "--output", str(out), "--precision", "fp32", "--num-workers", "1"]
    for _ in range(20):  # a loaded head serves its dashboard before its job agent is up
        proc = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=420)
        if "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(3)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert "zs-ray: 60 rows" in proc.stdout
    assert re.search(rf"Ray cluster at [0-9.]+{ray_head[2]}\b", proc.stdout)  # joined the head, not a Ray of its own
    rows = pq.read_table(str(out)).to_pylist()
    assert sorted(r["id"] for r in rows) == [f"es-test-{i:07d}" for i in range(100, 160)]
    assert json.loads((out / "_zs_ray_manifest.json").read_text())["rows"] == 60


def validate_cluster_config(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_is_valid_for_ray_launcher():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_cluster_config(config)
    import ray

    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    head = config["available_node_types"][config["head_node_type"]]
    gpu_types = [t for t in config["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert head["resources"].get("GPU", 0) == 0 and gpu_types
    assert all(t["max_workers"] >= t["min_workers"] >= 1 for t in gpu_types)
    assert any("pip install" in c and "zs-ray" in c for c in config["setup_commands"])


def test_cluster_yaml_validation_rejects_a_broken_config():
    from jsonschema.exceptions import ValidationError

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_a10g"]["min_workers"] = "one"
    with pytest.raises(ValidationError):
        validate_cluster_config(config)
