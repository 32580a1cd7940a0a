"""Servers as people deploy them: behind a private Hugging Face Space or a proxy that wants a bearer header, over
TLS with a company CA; and settings that are wrong before any work. The servers are the real argilla-server 2.8
(conftest's session server) and the Rubrix/Argilla 1.x test server, each behind ``tests/front_proxy.py``: a real
HTTPS reverse proxy on 127.0.0.1 whose certificate a test CA (trustme) signed, refusing any request without the
right ``Authorization: Bearer`` header. The sweep over every failure path: ``test_rubrix_secrets.py``."""

import logging
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.front_proxy import FrontProxy
from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import RubrixConfig, ServerConfig, log_output, preflight, pull

KEY1 = "zs-ray.v1-key-9d2e"
BEARER = "hf_private-space-token-5b7c1e"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    import trustme  # the `test` extra
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "company-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


@pytest.fixture(scope="module")
def v1(ca):
    """The 1.x test server (Argilla 1.29) behind the TLS proxy that wants the bearer (and strips it, as an
    authenticating proxy consumes its credential)."""
    with RubrixTestServer("argilla-1.29", api_key=KEY1) as srv, \
            FrontProxy(srv.url, require=("Authorization", f"Bearer {BEARER}"), ca=ca[0]) as front:
        yield {"server": srv, "front": front, "key": KEY1, "workspace": "rubrix"}


@pytest.fixture(scope="module")
def v2(ca, argilla2):
    """The real argilla-server 2.8 behind the TLS proxy that wants the bearer, forwarded to the server as it
    came: the real server must take a request that carries both its key and a Space's bearer."""
    with FrontProxy(argilla2.url, require=("Authorization", f"Bearer {BEARER}"), strip=False, ca=ca[0]) as front:
        yield {"server": argilla2, "front": front, "key": argilla2.api_key, "workspace": "argilla"}


@pytest.fixture(params=["v1", "v2"])
def behind(request):
    return request.getfixturevalue(request.param)


def cfg(env, ca, dataset, **kw):
    kw.setdefault("rubrix_api_key", env["key"])
    kw.setdefault("rubrix_ca_bundle", ca[1])
    kw.setdefault("rubrix_backoff", 0.01)
    kw.setdefault("rubrix_extra_headers", {"Authorization": f"Bearer {BEARER}"})
    return RubrixConfig(rubrix_dataset=dataset, rubrix_api_url=env["front"].url, rubrix_workspace=env["workspace"],
                        **kw)


def run_cli(args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUBRIX_", "ARGILLA_"))}
    env.update({"RAY_ADDRESS": "local", **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", "zs_ray.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_log_and_pull_through_a_private_space_over_tls(behind, ca, tmp_path, ray_local):
    ds = "behind-space"
    ids = make_output(tmp_path / "out", 60)
    front = behind["front"]
    before = len(front.seen)
    rep = log_output(tmp_path / "out", cfg(behind, ca, ds, chunk_size=20))
    assert rep.ok, rep.errors
    assert rep.sent == len(ids)
    prep = pull(cfg(behind, ca, ds), tmp_path / "back.parquet")
    assert prep.rows == len(ids)
    assert sorted(pq.read_table(tmp_path / "back.parquet").column("id").to_pylist()) == sorted(ids)
    seen = front.seen[before:]
    # Every request (the unauthenticated /api/_info and /api/v1/version too, and the Ray senders') carried it.
    assert seen and all(ok for _, _, ok in seen)
    assert any("bulk" in path for _, path, _ in seen)


def test_without_the_header_one_line_exit_2_nothing_sent(behind, ca, tmp_path):
    make_output(tmp_path / "out", 20)
    front = behind["front"]
    before, forwarded = len(front.seen), front.forwarded
    proc = run_cli(["log", "--input", str(tmp_path / "out"), "--rubrix-dataset", "never-sent",
                    "--rubrix-api-url", front.url, "--rubrix-workspace", behind["workspace"],
                    "--rubrix-ca-bundle", ca[1]], {"ARGILLA_API_KEY": behind["key"]})
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.strip().splitlines() if not x.startswith("zs-ray: WARNING:")]  # (metadata)
    assert len(lines) == 1 and lines[0].startswith("zs-ray: error:"), proc.stderr
    assert "HTTP 401 from the Hugging Face Space or proxy" in lines[0] and "refused the API key" not in lines[0]
    assert front.forwarded == forwarded  # nothing reached the server
    assert len(front.seen) - before == 1 and not front.seen[-1][2]  # one request, refused, never retried
    assert behind["key"] not in proc.stdout + proc.stderr


def test_the_server_refusing_the_key_is_told_apart_from_the_proxy(behind, ca):
    with pytest.raises(ZsRayError) as err:
        preflight(cfg(behind, ca, "any-dataset", rubrix_api_key="not-the-key-4f1a"))
    text = str(err.value)
    assert "refused the API key" in text and "Space or proxy" not in text
    assert "not-the-key-4f1a" not in text and "\n" not in text
    with pytest.raises(ZsRayError, match="HTTP 401 from the Hugging Face Space or proxy"):
        preflight(cfg(behind, ca, "any-dataset", rubrix_extra_headers={"Authorization": "Bearer wrong"}))


def test_tls_that_does_not_verify_is_one_line_and_never_falls_back(v1, ca, tmp_path, monkeypatch):
    import trustme
    front = v1["front"]
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    before = len(front.seen)
    t0 = time.monotonic()
    with pytest.raises(ZsRayError) as err:  # the system's CAs do not know the company CA
        preflight(cfg(v1, ca, "tls", rubrix_ca_bundle=None, rubrix_retries=5, rubrix_backoff=0.5))
    text = str(err.value)
    assert "does not verify" in text and "--rubrix-ca-bundle" in text and "\n" not in text
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert time.monotonic() - t0 < 2 and len(front.seen) == before  # not retried; no request got through

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca[1])  # as requests reads it
    assert preflight(cfg(v1, ca, "tls", rubrix_ca_bundle=None)).generation == "argilla"
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(ZsRayError, match="does not verify"):  # the flag wins over the variable
        preflight(cfg(v1, ca, "tls", rubrix_ca_bundle=str(other)))
    assert preflight(cfg(v1, ca, "tls", rubrix_ca_bundle=None, rubrix_no_verify_tls=True)).generation == "argilla"


@pytest.mark.parametrize("args,expect", [
    (["--rubrix-extra-headers", "{'Authorization': 'Bearer s3cr3t-value'}"], "--rubrix-extra-headers is not JSON"),
    (["--rubrix-extra-headers", '["Bearer s3cr3t-value"]'], "must be a JSON object"),
    (["--rubrix-extra-headers", '{"Bad Header": "s3cr3t-value"}'], "not a valid HTTP header name"),
    (["--rubrix-extra-headers-file", "{tmp}/missing.json"], "cannot read --rubrix-extra-headers-file"),
    (["--rubrix-extra-headers-file", "{tmp}/bad.json"], "is not JSON"),
    (["--rubrix-api-key-file", "{tmp}/missing.key"], "cannot read --rubrix-api-key-file"),
    (["--rubrix-api-key-file", "{tmp}/empty.key"], "is empty"),
    (["--rubrix-ca-bundle", "{tmp}/missing.pem"], "--rubrix-ca-bundle {tmp}/missing.pem: no such file"),
    (["--rubrix-ca-bundle", "{tmp}/empty.key", "--rubrix-no-verify-tls"], "contradict"),
])
@pytest.mark.parametrize("command", ["log", "pull", "bulk-label"])
def test_bad_transport_settings_one_line_exit_2(command, args, expect, tmp_path, capsys):
    from zs_ray.cli import main

    (tmp_path / "bad.json").write_text("{s3cr3t-value")
    (tmp_path / "empty.key").write_text("\n")
    base = {"log": ["--input", str(tmp_path)], "pull": ["--output", str(tmp_path / "a.parquet")],
            "bulk-label": ["--threshold", "a=0.5"]}[command]
    argv = [command, *base, "--rubrix-dataset", "ds", "--rubrix-api-url", "http://127.0.0.1:9",
            *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zs-ray: error:"), err
    assert expect.replace("{tmp}", str(tmp_path)) in lines[0] and "s3cr3t-value" not in out + err


def test_settings_from_files_and_environment(tmp_path, monkeypatch):
    from zs_ray.cli import parse

    (tmp_path / "key").write_text("key-from-file\n")
    (tmp_path / "headers.json").write_text('{"Authorization": "Bearer from-file", "X-Team": "a"}')
    monkeypatch.setenv("ARGILLA_API_KEY", "key-from-env")
    monkeypatch.setenv("ARGILLA_EXTRA_HEADERS", '{"X-From-Env": "1"}')
    _, c = parse("pull", ["--output", "a.parquet", "--rubrix-api-key-file", str(tmp_path / "key"),
                          "--rubrix-extra-headers-file", str(tmp_path / "headers.json"),
                          "--rubrix-extra-headers", '{"X-Team": "b"}'])
    assert c.rubrix_api_key == "key-from-file"  # the file given beats the environment's key
    assert c.rubrix_extra_headers == {"Authorization": "Bearer from-file", "X-Team": "b"}  # the flag over the file
    _, c = parse("pull", ["--output", "a.parquet"])
    assert c.rubrix_api_key == "key-from-env" and c.rubrix_extra_headers == {"X-From-Env": "1"}
    path = tmp_path / "pull.yaml"  # a config file takes a mapping
    path.write_text("output: a.parquet\nrubrix_extra_headers: {X-Proxy: yes-please}\nrubrix_ca_bundle: "
                    f"{tmp_path / 'key'}\n")
    _, c = parse("pull", ["--config-file", str(path)])
    assert c.rubrix_extra_headers == {"X-Proxy": "yes-please"} and c.rubrix_ca_bundle == str(tmp_path / "key")


def test_a_hugging_face_space_gets_the_token_by_itself_said_once(tmp_path, monkeypatch, caplog):
    import huggingface_hub.constants

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("HF_TOKEN", "hf_env-token-77c1")
    url = "https://someone-argilla-private.hf.space"
    a, b = ServerConfig(rubrix_api_url=url), ServerConfig(rubrix_api_url=url + "/")
    assert a.rubrix_extra_headers == b.rubrix_extra_headers == {"Authorization": "Bearer hf_env-token-77c1"}
    said = [r for r in caplog.records if "Hugging Face Space" in r.getMessage()]
    assert len(said) == 1 and "hf_env-token-77c1" not in caplog.text
    assert "hf_env-token-77c1" not in repr(a) + str(a)
    given = ServerConfig(rubrix_api_url=url, rubrix_extra_headers={"authorization": "Bearer mine"})
    assert given.rubrix_extra_headers == {"authorization": "Bearer mine"}  # what the user gave stays
    assert ServerConfig(rubrix_api_url="https://argilla.example.com").rubrix_extra_headers == {}
    # No HF_TOKEN: the token `huggingface-cli login` stored.
    monkeypatch.delenv("HF_TOKEN")
    stored = tmp_path / "token"
    stored.write_text("hf_stored-token-31aa")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(stored))
    assert ServerConfig(rubrix_api_url=url).rubrix_extra_headers == {"Authorization": "Bearer hf_stored-token-31aa"}


def test_url_credentials_are_never_shown():
    from zs_ray.rubrix import transport

    c = RubrixConfig(rubrix_dataset="ds", rubrix_api_url="http://user:pa%24ss-SECRET@127.0.0.1:9/",
                     rubrix_api_key="key-SECRET", rubrix_retries=0,
                     rubrix_extra_headers={"Authorization": "Bearer tok-SECRET"})
    assert c.public_url == "http://127.0.0.1:9"
    for text in (repr(c), str(c)):
        assert "SECRET" not in text and "127.0.0.1:9" in text
    with pytest.raises(ZsRayError) as err:
        preflight(c)
    assert "SECRET" not in str(err.value) and "cannot reach" in str(err.value) and "127.0.0.1:9" in str(err.value)
    assert transport.redact("a pa$ss-SECRET b tok-SECRET", transport.secrets_of(c)) == "a *** b ***"


def test_a_missing_requests_ca_bundle_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    from zs_ray.cli import main

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    argv = ["pull", "--output", str(tmp_path / "a.parquet"), "--rubrix-dataset", "ds"]
    assert main([*argv, "--rubrix-api-url", "https://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("zs-ray: error: REQUESTS_CA_BUNDLE=") and "no such file" in err
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))  # a directory of CAs is fine; http needs none
    assert main([*argv, "--rubrix-api-url", "http://127.0.0.1:9", "--rubrix-retries", "0"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_error_lines_never_echo_secret_flags(capsys):
    from zs_ray.cli import main

    # A mistyped flag, and an error whose text would hold the value: neither shows it.
    assert main(["pull", "--output", "a.parquet", "--rubrix-apikey", "typo-s3cr3t"]) == 2
    assert main(["pull", "--output", "a.parquet", "--rubrix_extra_headers", '{"X": "v-s3cr3t\\u000a"}']) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --rubrix-apikey" in err and "s3cr3t" not in err


def test_a_forward_proxys_credentials_are_redacted_too(monkeypatch):
    from zs_ray.rubrix import transport

    monkeypatch.setenv("HTTPS_PROXY", "http://corp:proxy-s3cr3t@proxy.example:3128")
    c = ServerConfig(rubrix_api_url="https://argilla.example")
    assert transport.redact("via http://corp:proxy-s3cr3t@proxy.example:3128", transport.secrets_of(c)) == \
        "via http://***@proxy.example:3128"
