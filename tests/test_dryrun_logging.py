"""``annotate --dry-run`` with a dataset to log to: the logging time beside the compute ETA, from the rate of the
actual server (the real argilla-server 2.8; the Rubrix 0.x / Argilla 1.x test server): first measured by a
probe into a scratch dataset that is deleted, then the rate stored by the last ``zs-ray log``. Nothing is
written to the dataset to be logged, and the dry run exits 0."""

import json
import re

import pytest

from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray import RubrixConfig
from zs_ray.cli import main
from zs_ray.servers import log_output
from zs_ray.servers.rate import PROBE_PREFIX

DS = "noticias-dry"


def dry_run(capsys, mlsum_dir, nli_model, *server):
    code = main(["annotate", "--dry-run", "--dataset", mlsum_dir, "--model", nli_model, "--split", "test[0:40]",
                 "--precision", "fp32", *server])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    return out.out


def logging_line(text: str) -> re.Match:
    m = re.search(rf"^logging {DS}: 40 records at ([\d,]+) records/s \((.*)\): (\d+:\d\d:\d\d)$", text, re.M)
    assert m, text
    assert re.search(r"^logging total: \d+:\d\d:\d\d beside the compute ETA \d+:\d\d:\d\d; .* in all$", text, re.M)
    return m


def check_store(tmp_path, key: str, dataset: str) -> dict:
    raw = (tmp_path / "cache" / "log-rates.json").read_text()
    assert key not in raw  # never a secret
    [(server, entries)] = json.loads(raw).items()
    assert "@" not in server and dataset in entries and entries[dataset]["records_per_s"] > 0
    return entries


def test_dry_run_logging_time_on_argilla_2(argilla2, tmp_path, monkeypatch, capsys, mlsum_dir, nli_model, ray_local):
    srv = argilla2
    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path / "cache"))
    flags = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-api-key", srv.api_key,
             "--rubrix-workspace", "argilla"]
    before = {d["name"] for d in srv.api("GET", "/api/v1/me/datasets")["items"]}
    assert "logging" not in dry_run(capsys, mlsum_dir, nli_model)  # no server: the dry run as before

    text = dry_run(capsys, mlsum_dir, nli_model, *flags)
    m = logging_line(text)
    assert "argilla2 2.8" in m.group(2) and "measured now by a probe of" in m.group(2), text
    after = {d["name"] for d in srv.api("GET", "/api/v1/me/datasets")["items"]}
    assert after == before and DS not in after  # the probe's scratch dataset is gone, the dataset never made
    check_store(tmp_path, srv.api_key, "")

    make_output(tmp_path / "out", 250)
    rep = log_output(tmp_path / "out", RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url,
                                                    rubrix_api_key=srv.api_key, rubrix_workspace="argilla"))
    assert rep.ok and rep.sent >= 200 and rep.send_s > 0
    entries = check_store(tmp_path, srv.api_key, DS)
    assert entries[DS]["records"] == rep.sent and entries[DS]["senders"] == 4
    n = len(srv.records(srv.dataset(DS)["id"]))

    text = dry_run(capsys, mlsum_dir, nli_model, *flags)
    m = logging_line(text)
    assert f"stored from the last log to {DS} ({rep.sent} records)" in m.group(2), text
    assert round(entries[DS]["records_per_s"]) == int(m.group(1).replace(",", ""))
    assert {d["name"] for d in srv.api("GET", "/api/v1/me/datasets")["items"]} == before | {DS}
    assert len(srv.records(srv.dataset(DS)["id"])) == n  # nothing written by the dry run


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.29"])
def test_dry_run_logging_time_on_1x(mode, tmp_path, monkeypatch, capsys, mlsum_dir, nli_model, ray_local):
    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path / "cache"))
    with RubrixTestServer(mode) as srv:
        ws = srv.workspaces[0]
        flags = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-api-key", srv.api_key,
                 "--rubrix-workspace", ws]
        text = dry_run(capsys, mlsum_dir, nli_model, *flags)
        assert "measured now by a probe of" in logging_line(text).group(2), text
        probed = [name for name in srv.writes if name.startswith(PROBE_PREFIX)]
        assert probed and sum(srv.writes[probed[0]].values()) > 0  # the probe sent to this server ...
        assert not srv.datasets and DS not in srv.writes  # ... and its dataset is gone; DS never touched
        assert any(r["method"] == "DELETE" for r in srv.requests)
        check_store(tmp_path, srv.api_key, "")

        make_output(tmp_path / "out", 250)
        rep = log_output(tmp_path / "out", RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url,
                                                        rubrix_api_key=srv.api_key, rubrix_workspace=ws))
        assert rep.ok and rep.sent >= 200
        check_store(tmp_path, srv.api_key, DS)
        writes = sum(srv.writes[DS].values())
        text = dry_run(capsys, mlsum_dir, nli_model, *flags)
        assert f"stored from the last log to {DS}" in logging_line(text).group(2), text
        assert sum(srv.writes[DS].values()) == writes and list(srv.datasets) == [(ws, DS)]
        # --log-only: the subset's size (known before predicting) is what the logging time is of
        text = dry_run(capsys, mlsum_dir, nli_model, *flags, "--sample", "10", "--uncertain", "5",
                       "--log-only", "sample,uncertain")
        assert re.search(rf"^logging {DS}: 15 records \(--log-only sample,uncertain of 40 rows\) at ", text, re.M), text
        assert sum(srv.writes[DS].values()) == writes
