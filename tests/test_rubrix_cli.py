"""The CLI end to end in subprocesses: crash mid-ingestion and resume; bad settings; the key."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import RubrixConfig, log_output, pull

DS = "zeroshot_noticias"
KEY = "zsray-SECRET-7f3a9c"


def run_cli(args, srv_url, key=KEY, **kw):
    env = {**os.environ, "RUBRIX_API_URL": srv_url, "RUBRIX_API_KEY": key,
           "RUBRIX_WORKSPACE": "rubrix", "RAY_ADDRESS": "local"}
    return subprocess.Popen([sys.executable, "-m", "zs_ray.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def all_text_under(path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in path.rglob("*") if p.is_file())


def test_crash_mid_ingestion_then_resume(tmp_path, ray_local):
    with RubrixTestServer("rubrix-0.18", api_key=KEY) as srv:
        ids = make_output(tmp_path / "out", 600)
        srv.respond_delay_s = 0.15  # stored, answer pending: the window a crash can hit
        proc = run_cli(["log", "--input", str(tmp_path / "out"), "--rubrix-dataset", DS,
                        "--chunk-size", "20", "--senders", "2"], srv.url)
        deadline = time.monotonic() + 60
        while len(srv.writes[DS]) < 100 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies at once, mid-request
        out, err = proc.communicate()
        stored = set(srv.writes[DS])
        assert 100 <= len(stored) < len(ids), err
        for rid in sorted(stored)[:3]:
            srv.annotate(DS, rid, ["cultura"])
        srv.respond_delay_s = 0
        cfg = RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_api_key=KEY, rubrix_workspace="rubrix", chunk_size=20)
        rep = log_output(tmp_path / "out", cfg)
        assert rep.ok and rep.already_on_server > 0  # stored before the crash, answer never seen
        assert rep.sent + rep.already_on_server + rep.already_acked == len(ids)
        assert set(srv.writes[DS]) == set(ids) and set(srv.writes[DS].values()) == {1}
        assert all(srv.records(DS)[r]["status"] == "Validated" for r in sorted(stored)[:3])
        assert KEY not in out + err + all_text_under(tmp_path)


@pytest.mark.parametrize("args,expect", [
    (["log", "--input", "{out}", "--rubrix-dataset", "Bad Name"], "invalid Rubrix dataset name"),
    (["log", "--input", "{tmp}/missing", "--rubrix-dataset", DS], "does not exist"),
    (["log", "--input", "{out}", "--rubrix-dataset", DS, "--rubrix-tags", "oops"], "key=value"),
    (["pull", "--output", "{tmp}/a.parquet", "--rubrix-dataset", DS], "401"),
])
def test_bad_settings_one_line_exit_2(args, expect, tmp_path):
    make_output(tmp_path / "out", 20)
    with RubrixTestServer("rubrix-0.18", api_key="the-real-key") as srv:
        args = [a.format(out=tmp_path / "out", tmp=tmp_path) for a in args]
        proc = run_cli(args, srv.url)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("zs-ray: error:") and expect in lines[0]
        assert "Traceback" not in err and KEY not in out + err
        assert srv.bulk_requests == 0


def test_key_never_leaks_in_failures(tmp_path, ray_local, caplog):
    make_output(tmp_path / "out", 100)
    with RubrixTestServer("argilla-1.29", api_key="other") as srv:
        texts = []
        for cfg in (RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_api_key=KEY, rubrix_workspace="rubrix"),
                    RubrixConfig(rubrix_dataset=DS, rubrix_api_url="http://127.0.0.1:9", rubrix_api_key=KEY, rubrix_retries=0)):
            with pytest.raises(ZsRayError) as e:
                log_output(tmp_path / "out", cfg)
            texts += [str(e.value), repr(e.value), repr(cfg)]
            with pytest.raises(ZsRayError) as e:
                pull(cfg, tmp_path / "p.parquet")
            texts.append(str(e.value))
        srv.api_key = KEY
        srv.fail_next(10**6)
        rep = log_output(tmp_path / "out", RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_api_key=KEY,
                                                        rubrix_workspace="rubrix", rubrix_retries=1, rubrix_backoff=0.01))
        assert not rep.ok
        texts += rep.errors + [rep.summary(), repr(rep)]
    assert "401" in texts[0] and "cannot reach" in texts[4]
    assert KEY not in "\n".join(texts) + caplog.text + all_text_under(tmp_path)


def test_cli_flags_and_config_file_map_to_the_settings(monkeypatch, tmp_path):
    from zs_ray.cli import parse

    monkeypatch.setenv("RUBRIX_API_KEY", "from-env")
    monkeypatch.setenv("RUBRIX_API_URL", "http://env:6900")
    settings, c = parse("log", [
        "--input", "x", "--rubrix-dataset", DS, "--rubrix-api-url", "https://flag:1",
        "--rubrix-tags", "tags=a", "team=b", "--chunk-size", "7", "--senders", "3",
        "--rubrix-no-verify-tls", "--rubrix-metadata-fields", "topic,title"])
    assert settings.input == "x"
    assert (c.rubrix_api_url, c.rubrix_api_key, c.chunk_size, c.senders, c.rubrix_no_verify_tls) == (
        "https://flag:1", "from-env", 7, 3, True)
    assert c.rubrix_tags == {"tags": "a", "team": "b"} and c.rubrix_metadata_fields == ["topic", "title"]
    _, server = parse("pull", ["--output", "a.parquet", "--rubrix-dataset", DS])
    assert not hasattr(server, "chunk_size") and server.rubrix_api_url == "http://env:6900"

    # A config file gives the same settings under the flags' names (either spelling); flags override it.
    path = tmp_path / "log.yaml"
    path.write_text("input: from-file\nrubrix-dataset: " + DS + "\nchunk_size: 9\nsenders: 2\n"
                    "rubrix_tags: {tags: file}\nrubrix_metadata_fields: [topic]\n")
    settings, c = parse("log", ["--config-file", str(path), "--senders", "5"])
    assert (settings.input, c.rubrix_dataset, c.chunk_size, c.senders) == ("from-file", DS, 9, 5)
    assert c.rubrix_tags == {"tags": "file"} and c.rubrix_metadata_fields == ["topic"]
    path.write_text("input: x\nchunk_sise: 9\n")
    with pytest.raises(ZsRayError, match="unknown setting.*chunk_sise"):
        parse("log", ["--config-file", str(path)])
