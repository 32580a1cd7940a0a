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
    journal = tmp_path / "audit.undo.jsonl"  # an apply's undo file with one audit mark: audit then reads the server
    journal.write_text(json.dumps({"run": "r", "id": "es-test-000000", "before": {}, "label": "política",
                                   "audit": "audit", "target": 0.9, "confidence": 0.95}) + "\n")
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
            "audit": ["audit", "--undo-file", str(journal), "--rubrix-dataset", "no-such-dataset" if bad else ds],
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
