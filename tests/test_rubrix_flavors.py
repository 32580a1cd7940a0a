"""What the real servers do, flavor by flavor (issue 13): creation races, status on upsert, answers that
are not the server's own, versions without a search endpoint, workspaces, default keys, id look-ups."""

import pytest

from tests.rubrix_server import FLAVORS, RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import RubrixConfig, log_output, pull

DS = "zeroshot_noticias"
WRITABLE = [f for f in FLAVORS if f != "argilla-1.1"]


def cfg(srv, **kw):
    kw.setdefault("chunk_size", 40)
    kw.setdefault("rubrix_backoff", 0.01)
    kw.setdefault("rubrix_workspace", "rubrix")
    return RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, **kw)


def lookup_route(srv) -> str:
    return "/TextClassification/data" if srv.m["reads"] == "data" else "/records/:search"


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch):
    for name in ("RUBRIX_API_KEY", "ARGILLA_API_KEY", "RUBRIX_WORKSPACE", "ARGILLA_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.4"])
def test_parallel_first_chunks_lose_nothing(mode, tmp_path, ray_local):
    """Defect 4: concurrent first bulks into a missing dataset each re-create its index (records another
    one stored and acknowledged vanish): the dataset is created before any chunk is sent."""
    ids = make_output(tmp_path, 400)
    warm = ray_local.remote(lambda: 0).options(num_cpus=0.25)
    ray_local.get([warm.remote() for _ in range(4)])  # sender workers up: the first chunks go at once
    with RubrixTestServer(mode) as srv:
        srv.delay_s, srv.create_window_s = 0.05, 1.0  # adding the dataset document waits for a refresh (1 s)
        rep = log_output(tmp_path, cfg(srv, chunk_size=20, senders=4))
        assert rep.ok and rep.sent == len(ids)
        assert set(srv.records(DS)) == set(ids), f"{len(set(ids) - set(srv.records(DS)))} acknowledged records lost"
        assert srv.max_inflight > 1  # the chunks did go in parallel


@pytest.mark.parametrize("mode,status", [("argilla-1.7", 404), ("argilla-1.13", 404), ("argilla-1.29", 404),
                                         ("argilla-1.29", 405), ("rubrix-0.18", 405)])
def test_relog_leaves_what_a_person_did(mode, status, tmp_path, ray_local):
    """Defect 2: a re-log must leave annotated and validated records exactly as the person left them
    (1.7+ upserts, but a re-sent record's status falls back to Default), also when the id look-up is
    answered by something other than the server (a proxy's 404, an ingress's 405): nothing is sent."""
    ids = make_output(tmp_path, 200)
    with RubrixTestServer(mode) as srv:
        assert log_output(tmp_path, cfg(srv)).ok
        srv.annotate(DS, ids[0], ["cultura"])
        srv.annotate(DS, ids[1], ["deportes"], status="Discarded")
        before = {i: dict(srv.records(DS)[i]) for i in ids[:2]}
        for ledger in (tmp_path / "_rubrix").glob("*.jsonl"):
            ledger.unlink()  # the ledger is lost: every id must be looked up
        bulks = srv.bulk_requests
        srv.fail_next(10**6, status=status, path=lookup_route(srv))
        rep = log_output(tmp_path, cfg(srv))
        assert not rep.ok and f"HTTP {status}" in rep.errors[0] and srv.bulk_requests == bulks
        srv.fail_next(0)
        rep = log_output(tmp_path, cfg(srv))
        assert rep.ok and rep.sent == 0 and rep.already_on_server == len(ids)
        assert {i: srv.records(DS)[i] for i in ids[:2]} == before
        assert set(srv.writes[DS].values()) == {1}


def test_upsert_model_of_argilla_1_7():
    """The test server's 1.7+ upsert, as the real one: fields left out are kept, status falls back."""
    import json

    import requests

    with RubrixTestServer("argilla-1.7") as srv:
        hdr = {"X-Argilla-Api-Key": srv.api_key}
        url = f"{srv.url}/api/datasets/{DS}/TextClassification:bulk?workspace=rubrix"
        rec = {"id": "a", "inputs": {"text": "t"},
               "prediction": {"agent": "m", "labels": [{"class": "x", "score": 0.9}]}}
        assert requests.post(url, data=json.dumps({"records": [rec]}), headers=hdr).status_code == 200
        srv.annotate(DS, "a", ["x"])
        requests.post(url, data=json.dumps({"records": [{**rec, "metadata": {"k": 1}}]}), headers=hdr)
        stored = srv.records(DS)["a"]
        assert stored["annotation"]["labels"] == [{"class": "x", "score": 1.0}] and stored["status"] == "Default"
        got = requests.post(f"{srv.url}/api/datasets/{DS}/records/:search?workspace=rubrix", headers=hdr,
                            data=json.dumps({"query": {"ids": ["a"]}})).json()["records"][0]
        assert got["annotation"]["labels"] == [{"class_label": "x", "score": 1.0}] and got["annotated_by"] == []
        assert requests.post(f"{srv.url}/api/nothing", headers=hdr).json() == {"detail": "Not Found"}


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.4"])
def test_a_404_that_is_not_the_servers_own(mode, tmp_path, ray_local):
    """Defect 6: only the server's EntityNotFoundError means "not there"; a proxy's 404 on the look-up
    is an error (nothing is resent over an annotation), and on the dataset it is not "missing"."""
    ids = make_output(tmp_path, 200)
    with RubrixTestServer(mode) as srv:
        assert log_output(tmp_path, cfg(srv)).ok
        srv.annotate(DS, ids[5], ["cultura"])
        for ledger in (tmp_path / "_rubrix").glob("*.jsonl"):
            ledger.unlink()
        srv.fail_next(10**6, status=404, path=lookup_route(srv))
        rep = log_output(tmp_path, cfg(srv))
        assert not rep.ok and "HTTP 404" in rep.errors[0] and "Not Found" in rep.errors[0]
        assert srv.records(DS)[ids[5]]["status"] == "Validated" and set(srv.writes[DS].values()) == {1}
        srv.fail_next(1, status=404, path=f"/api/datasets/{DS}")
        with pytest.raises(ZsRayError, match="HTTP 404"):
            log_output(tmp_path, cfg(srv))
        assert not list((tmp_path / "_rubrix").glob("*.stale-*"))  # the ledger is not taken for stale


def test_argilla_1_0_and_1_1_are_refused(tmp_path, ray_local):
    """Defect 6: Argilla 1.0-1.1 have no records search endpoint: refused, naming the version."""
    make_output(tmp_path, 50)
    with RubrixTestServer("argilla-1.1") as srv:
        with pytest.raises(ZsRayError, match=r"Argilla 1\.1\.0 .*search.*1\.2"):
            log_output(tmp_path, cfg(srv))
        with pytest.raises(ZsRayError, match=r"Argilla 1\.1\.0"):
            pull(cfg(srv), tmp_path / "a.parquet")
        assert srv.bulk_requests == 0 and not srv.datasets


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.4", "argilla-1.29"])
def test_default_key_by_generation(mode, tmp_path, ray_local):
    """Defect 7: with no key given, a fresh server's own default (rubrix.apikey / argilla.apikey)."""
    ids = make_output(tmp_path, 60)
    with RubrixTestServer(mode) as srv:
        config = cfg(srv)
        assert config.rubrix_api_key is None  # "not given" stays distinguishable
        assert log_output(tmp_path, config).ok and set(srv.records(DS)) == set(ids)
        key = {r["headers"].get("X-Argilla-Api-Key") for r in srv.requests if r["path"] != "/api/_info"}
        assert key == {"argilla.apikey" if mode.startswith("argilla") else "rubrix.apikey"}
    with pytest.raises(ZsRayError, match="empty Rubrix API key"):
        RubrixConfig(rubrix_dataset=DS, rubrix_api_key="").validate()


@pytest.mark.parametrize("mode", ["argilla-1.4", "argilla-1.29"])
def test_id_lookups_ask_for_the_id_field_only(mode, tmp_path, ray_local):
    """Defect 7: the look-ups by id before each chunk ask for ``fields: ["id"]``, not whole records."""
    ids = make_output(tmp_path, 120)
    with RubrixTestServer(mode) as srv:
        assert log_output(tmp_path, cfg(srv)).ok
        for ledger in (tmp_path / "_rubrix").glob("*.jsonl"):
            ledger.unlink()
        assert log_output(tmp_path, cfg(srv)).already_on_server == len(ids)
        lookups = [r["body"] for r in srv.requests if r["path"].endswith("/records/:search")]
        assert lookups and all(b.get("fields") == ["id"] and b["query"].get("ids") for b in lookups)


@pytest.mark.parametrize("mode", ["argilla-1.13", "argilla-1.29"])
def test_username_as_workspace(mode, tmp_path, ray_local):
    """Defect 7: on Argilla 1.13+ a username works as the workspace."""
    ids = make_output(tmp_path, 60)
    with RubrixTestServer(mode, username="ana", workspaces=["team"]) as srv:
        assert log_output(tmp_path, cfg(srv, rubrix_workspace="ana")).ok
        assert set(srv.records(DS, workspace="ana")) == set(ids)
        assert pull(cfg(srv, rubrix_workspace="ana"), tmp_path / "a.parquet").rows == len(ids)


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.29"])
def test_metadata_the_server_cannot_take(mode, tmp_path, ray_local):
    """Defect 5, end to end: NaN (the server answers 500), dates (no JSON), long strings (cut) and
    binary values never reach the server as they are; nothing is cut or lost without a warning."""
    from tests.test_rubrix_records import odd_metadata

    ids = make_output(tmp_path, 40, columns=odd_metadata(40))
    with RubrixTestServer(mode) as srv:
        rep = log_output(tmp_path, cfg(srv))
        assert rep.ok and set(srv.records(DS)) == set(ids), rep.errors
        meta = srv.records(DS)["es-test-000001"]["metadata"]
        assert meta["published"] == "2019-01-02T12:00:00+00:00" and meta["day"] == "2019-01-02"
        assert meta["ratio"] == 0.1 and meta["price"] == 1.5 and "section" not in meta and "blob" not in meta
        assert "ratio" not in srv.records(DS)["es-test-000000"]["metadata"]
        assert any("'ratio'" in w and "NaN" in w for w in rep.warnings)
        assert any("'section'" in w for w in rep.warnings)
        with pytest.raises(ZsRayError, match="'section'.*128"):
            log_output(tmp_path, cfg(srv, rubrix_metadata_fields=["section"]))
