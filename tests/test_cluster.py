"""A real Ray cluster: `ray start --head` + `ray job submit` end to end (also with server secrets in files, kept
out of `ray job list` and the session's logs), and cluster.yaml validation."""

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
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A token-protected Ray head (as Ray 2.5x clusters are), shared by this module's jobs, stopped with its whole
    process group."""
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


def submit_job(submit: list, env: dict, timeout: int) -> subprocess.CompletedProcess:
    """``ray job submit``, again while the head has no job agent yet (a loaded head serves its dashboard first)."""
    for _ in range(20):
        proc = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=timeout)
        if "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(3)
    return proc


def test_ray_job_submit_end_to_end(ray_head, tmp_path, mlsum_dir, nli_model):
    url, env, _ = ray_head
    out = tmp_path / "predictions"
    submit = ["ray", "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
              "python", "jobs/annotate_mlsum.py", "--dataset", mlsum_dir, "--model", nli_model,
              "--split", "test[100:160]", "--output", str(out), "--precision", "fp32", "--num-workers", "1"]
    proc = submit_job(submit, env, timeout=420)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert "zs-ray: 60 rows" in proc.stdout
    assert re.search(rf"Ray cluster at [0-9.]+{ray_head[2]}\b", proc.stdout)  # joined the head, not a Ray of its own
    rows = pq.read_table(str(out)).to_pylist()
    assert sorted(r["id"] for r in rows) == [f"es-test-{i:07d}" for i in range(100, 160)]
    assert json.loads((out / "_zs_ray_manifest.json").read_text())["rows"] == 60


@pytest.mark.slow
def test_ray_job_submit_with_secrets_in_files_never_shows_them(ray_head, tmp_path):
    """`ray job submit` of `zs-ray log` whose key and extra headers come from files on the node (docs/clusters.md's
    way): the job logs every record through a TLS proxy that wants the bearer, and neither the key nor the
    bearer is in `ray job list`, the job's logs or any log of the Ray session."""
    import trustme  # the `test` extra
    from tests.front_proxy import FrontProxy
    from tests.rubrix_server import RubrixTestServer, make_output
    from tests.test_rubrix_secrets import everything_written

    url, env, _ = ray_head
    tag = uuid.uuid4().hex[:12]
    key, bearer = f"key-{tag}-secret", f"hf_{tag}-secret"
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "key").write_text(key + "\n")
    (tmp_path / "headers.json").write_text(json.dumps({"Authorization": f"Bearer {bearer}"}))
    ids = make_output(tmp_path / "out", 40)
    with RubrixTestServer("argilla-1.29", api_key=key) as srv, \
            FrontProxy(srv.url, require=("Authorization", f"Bearer {bearer}"), ca=ca) as front:
        submit = ["ray", "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
                  "python", "-m", "zs_ray.cli", "log", "--input", str(tmp_path / "out"), "--rubrix-dataset", "from-job",
                  "--rubrix-api-url", front.url, "--rubrix-workspace", "rubrix", "--rubrix-ca-bundle",
                  str(tmp_path / "ca.pem"), "--rubrix-api-key-file", str(tmp_path / "key"),
                  "--rubrix-extra-headers-file", str(tmp_path / "headers.json")]
        proc = submit_job(submit, env, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert set(srv.records("from-job")) == set(ids)
        assert front.seen and all(ok for *_, ok in front.seen)
    listed = subprocess.run(["ray", "job", "list", "--address", url], capture_output=True, text=True, env=env,
                            timeout=60)
    assert listed.returncode == 0 and "--rubrix-api-key-file" in listed.stdout  # the job is there, by its path
    time.sleep(1)  # the workers' last lines reach their files
    shown = proc.stdout + proc.stderr + listed.stdout + listed.stderr + everything_written(env["ZS_RAY_TEST_RAY_TEMP"])
    assert key not in shown and bearer not in shown


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
