"""Reading records, annotations and status back: the same schema from every server flavor."""

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.rubrix_server import FLAVORS, MODEL, RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import RubrixConfig, log_output, pull
from zs_ray.rubrix.pull import SCHEMA

DS = "zeroshot_noticias"


def config(srv, **kw):
    return RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix",
                        rubrix_backoff=0.01, **kw)


@pytest.mark.parametrize("mode,route", [("rubrix-0.18", "/TextClassification/data"),
                                        ("argilla-1.29", "/records/:search")])
def test_pull_pages_through_everything(mode, route, tmp_path, ray_local):
    with RubrixTestServer(mode) as srv:
        cfg = config(srv, chunk_size=200)
        ids = make_output(tmp_path / "out", 1200, multi_label=True)
        assert log_output(tmp_path / "out", cfg).ok
        srv.annotate(DS, ids[3], ["cultura", "sociedad"], agent="ana")
        srv.annotate(DS, ids[9], [], agent="luis", status="Discarded")
        n_before = len(srv.requests)
        rep = pull(cfg, tmp_path / "a.parquet", page_size=250)
        pages = [r for r in srv.requests[n_before:] if r["path"].endswith(route)]
        assert len(pages) >= 5  # paged, with the generation's own mechanism
        t = pq.read_table(tmp_path / "a.parquet")
        assert rep.rows == t.num_rows == len(ids) and sorted(t["id"].to_pylist()) == sorted(ids)
        assert rep.status == {"Default": len(ids) - 2, "Validated": 1, "Discarded": 1}
        rows = {r["id"]: r for r in t.to_pylist()}
        a = rows[ids[3]]
        assert a["annotation_labels"] == ["cultura", "sociedad"] and a["annotation_agent"] == "ana"
        assert a["status"] == "Validated" and a["multi_label"] is True
        assert a["prediction_agent"] == MODEL and len(a["prediction_scores"]) == 6
        assert dict(a["metadata"])["topic"] and a["text"].startswith("Resumen")
        assert rows[ids[9]]["status"] == "Discarded" and rows[ids[0]]["annotation_labels"] is None
        validated = pull(cfg, tmp_path / "v.parquet", query={"status": ["Validated"]})
        assert validated.rows == 1
        topics = pc.map_lookup(t["metadata"], "topic", "first")
        assert topics.null_count == 0


@pytest.mark.parametrize("mode", [f for f in FLAVORS if f != "argilla-1.1"])
def test_pull_same_schema_on_every_flavor(mode, tmp_path, ray_local):
    """Defect 1: Argilla 1.2+ returns stored labels as {"class_label", "score"}; a record whose status
    is missing or null must not crash. Every flavor gives the same rows, annotator and status included."""
    with RubrixTestServer(mode) as srv:
        cfg = config(srv)
        ids = make_output(tmp_path / "out", 60)
        assert log_output(tmp_path / "out", cfg).ok
        srv.annotate(DS, ids[1], ["cultura"], agent="ana")  # validated in the web app
        srv.annotate(DS, ids[2], ["deportes"], agent="luis", status="Discarded")
        srv.records(DS)[ids[3]].pop("status")
        srv.records(DS)[ids[4]]["status"] = None
        rep = pull(cfg, tmp_path / "a.parquet")
        t = pq.read_table(tmp_path / "a.parquet")
        assert t.schema == SCHEMA and rep.rows == len(ids)
        rows = {r["id"]: r for r in t.to_pylist()}
        sent = srv.records(DS)[ids[1]]["prediction"]["labels"]
        assert rows[ids[1]]["prediction_labels"] == [x["class"] for x in sent]
        assert rows[ids[1]]["prediction_scores"] == [x["score"] for x in sent]
        assert (rows[ids[1]]["annotation_labels"], rows[ids[1]]["annotation_agent"], rows[ids[1]]["status"]) == (
            ["cultura"], "ana", "Validated")
        assert (rows[ids[2]]["annotation_labels"], rows[ids[2]]["annotation_agent"], rows[ids[2]]["status"]) == (
            ["deportes"], "luis", "Discarded")
        assert rows[ids[3]]["status"] is None and rows[ids[4]]["status"] is None
        assert rows[ids[0]]["prediction_agent"] == MODEL and rows[ids[0]]["annotation_agent"] is None
        assert rep.status == {"Default": len(ids) - 4, "Validated": 1, "Discarded": 1, None: 2}
        assert "Validated 1" in rep.summary() and "no status 2" in rep.summary()


def test_pull_never_ends_short_on_a_stream_error(tmp_path, ray_local):
    """Defect 3: Rubrix 0.x reports an error in the middle of /data as HTTP 200 and a last line
    {"detail": ...}: the page is retried, and if the error persists the pull fails (no file)."""
    with RubrixTestServer("rubrix-0.18") as srv:
        ids = make_output(tmp_path / "out", 300)
        assert log_output(tmp_path / "out", config(srv, chunk_size=100)).ok
        srv.stream_error_next(1, after=100)
        rep = pull(config(srv), tmp_path / "a.parquet", page_size=250)
        assert rep.rows == len(ids) and sorted(pq.read_table(tmp_path / "a.parquet")["id"].to_pylist()) == ids
        srv.stream_error_next(10**6, after=100)
        with pytest.raises(ZsRayError, match="GenericServerError"):
            pull(config(srv, rubrix_retries=1), tmp_path / "b.parquet", page_size=250)
        assert not (tmp_path / "b.parquet").exists()


def test_pull_errors(tmp_path):
    with RubrixTestServer("rubrix-0.18") as srv:
        with pytest.raises(ZsRayError, match="does not exist"):
            pull(RubrixConfig(rubrix_dataset="nothing_here", rubrix_api_url=srv.url), tmp_path / "x.parquet")
        with pytest.raises(ZsRayError, match=".parquet"):
            pull(RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url), tmp_path / "x.csv")
        assert not list(tmp_path.iterdir())
