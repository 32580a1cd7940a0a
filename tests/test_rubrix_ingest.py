"""Logging an output dir into the protocol-faithful test server: exactly once, through faults."""


import pytest

from tests.rubrix_server import FLAVORS, RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import RubrixConfig, log_output

DS = "zeroshot_noticias"
MODES = [f for f in FLAVORS if f != "argilla-1.1"]  # 1.0-1.1 are refused (test_rubrix_flavors)


@pytest.fixture
def server(request):
    srv = RubrixTestServer(getattr(request, "param", "rubrix-0.18")).start()
    yield srv
    srv.stop()


def cfg(srv, **kw):
    kw.setdefault("chunk_size", 40)
    kw.setdefault("rubrix_backoff", 0.01)
    return RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", **kw)


def exactly_once(srv, ids):
    writes = srv.writes[DS]
    assert set(writes) == set(ids), "every predicted row on the server, no empty one"
    assert set(writes.values()) == {1}, "no id written twice"


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_log_and_rerun_on_each_generation(server, tmp_path, ray_local):
    ids = make_output(tmp_path, 500)
    rep = log_output(tmp_path, cfg(server))
    assert rep.ok and rep.sent == len(ids) and rep.skipped_empty == 500 - len(ids)
    exactly_once(server, ids)
    stored = server.records(DS)[ids[0]]
    assert stored["inputs"]["text"].startswith("Resumen") and stored["metadata"]["topic"]
    assert server.datasets[("rubrix", DS)]["tags"] == {"tags": "data-annotation"}
    again = log_output(tmp_path, cfg(server))
    assert again.ok and again.sent == 0 and again.already_acked == len(ids)
    exactly_once(server, ids)


@pytest.mark.parametrize("lost_as", [None, 502])
def test_faults_503_and_lost_responses(server, tmp_path, ray_local, lost_as):
    ids = make_output(tmp_path, 600)
    server.fail_next(3)  # 503 before storing
    server.lose_next(3, status=lost_as)  # stored, then no answer (or a 502)
    rep = log_output(tmp_path, cfg(server, senders=3))
    assert rep.ok, rep.errors
    exactly_once(server, ids)  # a blind resend after a lost answer would have written twice
    assert rep.sent + rep.already_on_server == len(ids) and rep.already_on_server >= 3 * 40


def test_senders_bound_concurrency(server, tmp_path, ray_local):
    ids = make_output(tmp_path, 400)
    server.delay_s = 0.15
    log_output(tmp_path, cfg(server, senders=4))
    assert 2 <= server.max_inflight <= 4  # parallel, and never more than configured (4 at once is load-dependent)
    exactly_once(server, ids)
    server2 = RubrixTestServer("rubrix-0.18").start()
    try:
        server2.delay_s = 0.05
        log_output(tmp_path, cfg(server2, senders=1, chunk_size=100))
        assert server2.max_inflight == 1
    finally:
        server2.stop()


def test_chunks_bounded_by_bytes(server, tmp_path, ray_local):
    ids = make_output(tmp_path, 300)
    sizes = []
    orig = server.handle

    def spy(method, path, query, headers, body):
        if path.endswith(":bulk"):
            sizes.append(len(body))
        return orig(method, path, query, headers, body)

    server.handle = spy
    rep = log_output(tmp_path, cfg(server, chunk_size=500, chunk_bytes=4000))
    assert rep.ok and max(sizes) <= 4000 and len(sizes) >= 10
    exactly_once(server, ids)


def test_failure_is_reported_and_rerun_delivers_the_rest(server, tmp_path, ray_local):
    ids = make_output(tmp_path, 400)
    server.fail_next(10**6)
    first = log_output(tmp_path, cfg(server, rubrix_retries=2, senders=2))
    assert not first.ok and first.failed > 0 and "503" in first.errors[0]
    assert first.failed + first.not_attempted == len(ids)
    server.fail_next(0)
    second = log_output(tmp_path, cfg(server, rubrix_retries=2))
    assert second.ok and second.sent == len(ids)
    exactly_once(server, ids)


def test_4xx_is_not_retried_and_shows_the_server_message(server, tmp_path, ray_local):
    make_output(tmp_path, 200)
    server.fail_next(1, status=422)
    rep = log_output(tmp_path, cfg(server, senders=1))
    assert not rep.ok and "HTTP 422" in rep.errors[0]
    assert server.bulk_requests == 1  # no retry, and no further chunk after a refusal


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_rerun_never_wipes_an_annotation(server, tmp_path, ray_local):
    """A resend would wipe the annotation (Rubrix 0.x, Argilla < 1.7) or un-validate the record (1.7+):
    a re-run sends no stored id, even without the ledger."""
    ids = make_output(tmp_path, 300)
    first = log_output(tmp_path, cfg(server))
    for rid in ids[:5]:
        server.annotate(DS, rid, ["cultura"])
    for ledger in (tmp_path / "_rubrix").glob("*.jsonl"):
        ledger.unlink()  # worst case: the ledger is lost
    rep = log_output(tmp_path, cfg(server))
    assert rep.ok and rep.sent == 0 and rep.already_on_server == len(ids) == first.sent
    exactly_once(server, ids)
    assert all(server.records(DS)[r]["status"] == "Validated" for r in ids[:5])
    assert server.records(DS)[ids[0]]["annotation"]["labels"] == [{"class": "cultura", "score": 1.0}]


def test_resume_after_an_interrupted_run(server, tmp_path, ray_local):
    """Half the chunks got through, some of them with lost answers: the rerun sends the rest."""
    ids = make_output(tmp_path, 400)
    server.lose_next(10**6)  # everything stored, no answer ever comes back
    first = log_output(tmp_path, cfg(server, rubrix_retries=0, senders=2))
    assert not first.ok
    stored = set(server.writes[DS])
    assert stored and len(stored) < len(ids)
    server.lose_next(0)
    second = log_output(tmp_path, cfg(server))
    assert second.ok and second.already_on_server == len(stored)
    exactly_once(server, ids)


def test_bad_settings_fail_before_sending(server, tmp_path, ray_local, caplog):
    make_output(tmp_path, 50)
    with pytest.raises(ZsRayError, match="dataset name"):
        log_output(tmp_path, RubrixConfig(rubrix_dataset="Bad Name", rubrix_api_url=server.url))
    assert server.requests == []
    with pytest.raises(ZsRayError, match="401.*UnauthorizedError"):
        log_output(tmp_path, cfg(server, rubrix_api_key="wrong"))
    with pytest.raises(ZsRayError, match="cannot reach"):
        log_output(tmp_path, RubrixConfig(rubrix_dataset=DS, rubrix_api_url="http://127.0.0.1:9", rubrix_retries=0))
    with pytest.raises(ZsRayError, match="not one of yours"):
        log_output(tmp_path, RubrixConfig(rubrix_dataset=DS, rubrix_api_url=server.url, rubrix_workspace="elsewhere"))
    assert server.bulk_requests == 0


@pytest.mark.parametrize("server", ["argilla-1.7", "argilla-1.29"], indirect=True)
def test_argilla_needs_a_workspace(server, tmp_path, ray_local):
    """Required from Argilla 1.6 (not 1.13): refused with the reason, before any dataset request."""
    make_output(tmp_path, 50)
    with pytest.raises(ZsRayError, match=r"Argilla 1\.\d+\.0 needs a workspace"):
        log_output(tmp_path, RubrixConfig(rubrix_dataset=DS, rubrix_api_url=server.url))
    assert server.bulk_requests == 0 and not server.datasets
    assert [r["path"] for r in server.requests] == ["/api/_info", "/api/me"]


def test_key_headers_never_bearer(server, tmp_path, ray_local):
    make_output(tmp_path, 50)
    log_output(tmp_path, cfg(server))
    for r in server.requests:
        names = {k.lower() for k in r["headers"]}
        assert "authorization" not in names
        if r["path"] != "/api/_info":
            assert {"x-rubrix-api-key", "x-argilla-api-key"} <= names
        else:
            assert not names & {"x-rubrix-api-key", "x-argilla-api-key"}
