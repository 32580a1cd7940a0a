"""No secret in any output: every command that talks to the server, through every failure path, with secrets
unique to each run (API key, the URL's user:password, an extra header's value, HF_TOKEN), against the real
argilla-server 2.8 and the 1.x test server, each behind ``tests/front_proxy.py`` (a real reverse proxy on
127.0.0.1 that wants the URL's credentials as Basic auth). Then stdout, stderr, the log, every file written
(outputs, ledgers, undo files, pulled files) and the Ray session's logs (the senders' workers) are searched."""

import base64
import json
import logging
import uuid
from pathlib import Path

import pytest

from tests.argilla2_server import free_port
from tests.front_proxy import FrontProxy
from tests.rubrix_server import RubrixTestServer, make_output
from tests.test_cluster import ray_head  # noqa: F401  (the fixture)
from zs_ray.cli import main

PATHS = ["unreachable", "proxy-401", "server-401", "5xx", "bad-dataset"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def v1():
    with RubrixTestServer("argilla-1.29") as srv, FrontProxy(srv.url, require=("Authorization", "none")) as front:
        yield {"server": srv, "front": front, "workspace": "rubrix"}


@pytest.fixture(scope="module")
def v2(argilla2):
    with FrontProxy(argilla2.url, require=("Authorization", "none")) as front:
        yield {"server": argilla2, "front": front, "workspace": "argilla"}


def new_key(env, tag: str) -> str:
    """A key of the server's own, unique to this run: the 1.x test server takes one; 2.x makes a new owner."""
    if isinstance(env["server"], RubrixTestServer):
        env["server"].api_key = f"key-{tag}-secret"
        return env["server"].api_key
    return env["server"].create_user(f"sweep-{tag}", role="owner")["api_key"]


def everything_written(*roots) -> str:
    texts = []
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file():
                try:
                    texts.append(p.read_bytes().decode("utf-8", "replace"))
                except OSError:
                    pass
    return "\n".join(texts)


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_no_secret_in_any_output(which, request, tmp_path, monkeypatch, capfd, caplog, mlsum_dir, nli_model,
                                 ray_local):
    import ray

    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)  # bulk-label's undo file, anything written by default, lands here
    env = request.getfixturevalue(which)
    front = env["front"]
    out = tmp_path / "out"
    make_output(out, 40)
    secrets, said = [], []
    for i, path in enumerate(PATHS):
        tag = uuid.uuid4().hex[:12]
        key = new_key(env, tag) if path != "server-401" else f"key-{tag}-wrong-secret"
        pw, header, hf = f"pw-{tag}-secret", f"hdr-{tag}-secret", f"hf_{tag}-secret"
        secrets += [key, pw, header, hf, basic("zsuser", pw).split()[1]]
        monkeypatch.setenv("HF_TOKEN", hf)
        front.require = ("Authorization", basic("zsuser", "the-proxy-wants-this" if path == "proxy-401" else pw))
        front.fail = r"records|:bulk" if path == "5xx" else None
        host = f"127.0.0.1:{free_port()}" if path == "unreachable" else front.url.split("//")[1]
        ds = f"sweep-{which}-{i}"
        common = ["--rubrix-api-url", f"http://zsuser:{pw}@{host}/", "--rubrix-api-key", key,
                  "--rubrix-workspace", env["workspace"], "--rubrix-extra-headers", json.dumps({"X-Team-Token": header}),
                  "--rubrix-retries", "1", "--rubrix-backoff", "0.01"]
        bad = path == "bad-dataset"
        runs = {
            "annotate": ["annotate", "--dry-run", "--dataset", mlsum_dir, "--model", nli_model, "--split", "test[0:20]",
                         "--rubrix-dataset", "Bad Name" if bad else ds],
            "log": ["log", "--input", str(out), "--rubrix-dataset", "Bad Name" if bad else ds],
            "pull": ["pull", "--output", str(tmp_path / f"{ds}.parquet"), "--rubrix-dataset",
                     "no-such-dataset" if bad else ds],
            "bulk-label": ["bulk-label", "--threshold", "política=0.5", "--apply", "--rubrix-dataset",
                           "no-such-dataset" if bad else ds],
        }
        if path == "5xx":  # annotate would pass its checks and run the whole job: its failures are the same
            runs.pop("annotate")
        for command, argv in runs.items():
            code = main(argv + common)
            o, e = capfd.readouterr()
            said.append((path, command, code, o, e))
            assert code == (1 if (path, command) == ("5xx", "log") else 2), (path, command, o, e)
    text = "\n".join(o + e for *_, o, e in said) + caplog.text
    node = ray._private.worker.global_worker.node
    written = everything_written(tmp_path, node.get_logs_dir_path())
    leaked = [s for s in secrets if s in text or s in written]
    assert not leaked, leaked
    assert len(written) > 10_000  # the Ray session's logs were there to search

    errors = {(p, c): e for p, c, _, _, e in said}
    assert all("Space or proxy" in errors[("proxy-401", c)] for c in ("log", "pull", "bulk-label", "annotate"))
    assert all("refused the API key" in errors[("server-401", c)] for c in ("log", "pull", "bulk-label", "annotate"))
    assert all("cannot reach" in errors[("unreachable", c)] and "http://127.0.0.1:" in errors[("unreachable", c)]
               for c in ("log", "pull", "bulk-label"))
    assert "does not exist on http://" + front.url.split("//")[1] in errors[("bad-dataset", "pull")]
    assert "502" in errors[("5xx", "log")] and "502" in errors[("5xx", "pull")]
    assert "zsuser" not in text  # every printed URL lost its credentials, the user name too


@pytest.mark.slow
@pytest.mark.parametrize("which", ["v1", "v2"])
def test_annotate_dry_run_and_logging_into_5xx_show_no_secret(which, request, tmp_path, monkeypatch, capfd, caplog,
                                                             mlsum_dir, nli_model, ray_local):
    """What the sweep leaves out (it would run whole jobs): annotate's dry run against a working server (its plan
    printed), then a real run whose logging (live, from the driver, then the Ray senders) meets 502s."""
    import ray

    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)
    env = request.getfixturevalue(which)
    front = env["front"]
    tag = uuid.uuid4().hex[:12]
    key, pw, header = new_key(env, tag), f"pw-{tag}-secret", f"hdr-{tag}-secret"
    monkeypatch.setenv("HF_TOKEN", f"hf_{tag}-secret")
    secrets = [key, pw, header, f"hf_{tag}-secret", basic("zsuser", pw).split()[1]]
    front.require, front.fail = ("Authorization", basic("zsuser", pw)), None
    common = ["--dataset", mlsum_dir, "--model", nli_model, "--split", "test[0:40]", "--precision", "fp32",
              "--rubrix-dataset", f"annotate-{which}-{tag}", "--rubrix-api-url",
              f"http://zsuser:{pw}@{front.url.split('//')[1]}", "--rubrix-api-key", key, "--rubrix-workspace",
              env["workspace"], "--rubrix-extra-headers", json.dumps({"X-Team-Token": header}),
              "--rubrix-retries", "1", "--rubrix-backoff", "0.01"]
    assert main(["annotate", "--dry-run", *common]) == 0
    dry = capfd.readouterr()
    assert dry.out.strip()  # the plan was printed
    front.fail = r"records|:bulk"
    assert main(["annotate", "--output", str(tmp_path / "pred"), *common]) == 1
    run = capfd.readouterr()
    assert "502" in run.err
    text = dry.out + dry.err + run.out + run.err + caplog.text
    written = everything_written(tmp_path, ray._private.worker.global_worker.node.get_logs_dir_path())
    assert not [s for s in secrets if s in text or s in written]
    assert "zsuser" not in text


@pytest.mark.slow
def test_ray_job_submit_with_secrets_in_files_never_shows_them(ray_head, tmp_path):
    """`ray job submit` of `zs-ray log` whose key and extra headers come from files on the node (the README's
    way): the job logs every record through a TLS proxy that wants the bearer, and neither the key nor the
    bearer is in `ray job list`, the job's logs or any log of the Ray session."""
    import subprocess
    import time

    trustme = pytest.importorskip("trustme", reason="the `test` extra: pip install -e .[test]")
    from tests.test_cluster import ROOT

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
        for _ in range(20):  # a loaded head serves its dashboard before its job agent is up
            proc = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=300)
            if "No available agent to submit job" not in proc.stderr:
                break
            time.sleep(3)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert set(srv.records("from-job")) == set(ids)
        assert front.seen and all(ok for *_, ok in front.seen)
    listed = subprocess.run(["ray", "job", "list", "--address", url], capture_output=True, text=True, env=env,
                            timeout=60)
    assert listed.returncode == 0 and "--rubrix-api-key-file" in listed.stdout  # the job is there, by its path
    time.sleep(1)  # the workers' last lines reach their files
    shown = proc.stdout + proc.stderr + listed.stdout + listed.stderr + everything_written(env["ZS_RAY_TEST_RAY_TEMP"])
    assert key not in shown and bearer not in shown
