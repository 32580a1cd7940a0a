"""Reading records, annotations and status back from both server generations."""

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.rubrix_server import MODEL, RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import RubrixConfig, log_output, pull

DS = "zeroshot_noticias"


@pytest.mark.parametrize("mode,route", [("rubrix-0.18", "/TextClassification/data"),
                                        ("argilla-1.29", "/records/:search")])
def test_pull_pages_through_everything(mode, route, tmp_path, ray_local):
    with RubrixTestServer(mode) as srv:
        cfg = RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", chunk_size=200)
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


def test_pull_errors(tmp_path):
    with RubrixTestServer("rubrix-0.18") as srv:
        with pytest.raises(ZsRayError, match="does not exist"):
            pull(RubrixConfig(rubrix_dataset="nothing_here", rubrix_api_url=srv.url), tmp_path / "x.parquet")
        with pytest.raises(ZsRayError, match=".parquet"):
            pull(RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url), tmp_path / "x.csv")
        assert not list(tmp_path.iterdir())
