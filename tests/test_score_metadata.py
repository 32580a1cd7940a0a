"""The whole distribution where people work: every label's score, the margin and the entropy as metadata of each
record, on Rubrix 0.x / Argilla 1.x (the test server: metadata, 50 keys, a query_text range) and on the real
argilla-server 2.8 (float metadata properties; a range filter through the official ``argilla`` 2.8 SDK, and the
search request it sends)."""

import glob
import json
import os
import re
import subprocess

import pyarrow.parquet as pq
import pytest

from tests.rubrix_server import LABELS, RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.output import open_output, uncertainty
from zs_ray.servers import log_output
from zs_ray.servers import records as rec
from zs_ray.servers import v1
from zs_ray.servers.client import RubrixClient
from zs_ray.workflow.config import RubrixConfig

DS = "zeroshot_scores"
NAME_RE = re.compile(r"^[a-z0-9_-]{1,200}$")  # what every generation and Elasticsearch take


def rows_of(path):
    rows = [r for f in sorted(glob.glob(f"{path}/part-*.parquet"))
            for r in pq.read_table(f, columns=["id", "labels", "scores"]).to_pylist()]
    return {r["id"]: r for r in rows if r["labels"] is not None}


def expected_meta(row, multi_label=False):
    keys = rec.score_keys(LABELS)
    out = {keys[label]: s for label, s in zip(row["labels"], row["scores"])}
    [m], [h] = uncertainty([row["scores"]], multi_label)
    return {**out, "margin": m, "entropy": h}


def test_score_keys_are_names_every_server_takes():
    keys = rec.score_keys(["política", "ciencia y tecnología", "Política", "政治", "x" * 300, "a.b c"])
    assert keys["ciencia y tecnología"] == "score_ciencia_y_tecnologia" and keys["a.b c"] == "score_a_b_c"
    assert len(set(keys.values())) == 6 and all(NAME_RE.match(k) for k in keys.values())
    assert keys["política"] != keys["Política"] and keys["política"].startswith("score_politica_")  # a clash: hashed
    assert keys == rec.score_keys(["política", "ciencia y tecnología", "Política", "政治", "x" * 300, "a.b c"])
    assert rec.score_keys(LABELS)["economía"] == "score_economia"


def test_1x_limit_drops_per_label_scores_with_one_warning(tmp_path):
    make_output(tmp_path / "a", 10, extra_cols=40)  # 44 source fields: 6 scores + 2 do not fit in 50
    out = open_output(str(tmp_path / "a"))
    spec, _ = rec.make_spec(out.dataset, out.manifest, None, None)
    spec2, warnings = rec.with_scores(spec, LABELS)
    assert spec2.score_keys == () and spec2.uncertainty and len(warnings) == 1 and "margin and entropy are" in warnings[0]
    spec3, warnings = rec.with_scores(spec, LABELS, None)  # Argilla 2.x: no limit
    assert len(spec3.score_keys) == 6 and not warnings
    make_output(tmp_path / "b", 10, extra_cols=45)  # 49 fields: not even margin and entropy
    out = open_output(str(tmp_path / "b"))
    spec, _ = rec.make_spec(out.dataset, out.manifest, None, None)
    spec4, warnings = rec.with_scores(spec, LABELS)
    assert spec4.score_keys == () and not spec4.uncertainty and "nor margin" in warnings[0]
    spec5, warnings = rec.with_scores(spec3, LABELS, None, "uncertainty")  # --rubrix-score-metadata
    assert spec5.score_keys == () and spec5.uncertainty and not warnings
    spec6, warnings = rec.with_scores(spec3, LABELS, None, "none")
    assert spec6.score_keys == () and not spec6.uncertainty and not warnings
    make_output(tmp_path / "c", 10, columns={"margin": [0.1] * 10})
    out = open_output(str(tmp_path / "c"))
    spec, _ = rec.make_spec(out.dataset, out.manifest, None, None)
    with pytest.raises(ZsRayError, match="'margin'"):
        rec.with_scores(spec, LABELS)


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.29"])
def test_1x_scores_as_metadata_and_a_range_filter(mode, tmp_path, ray_local):
    ids = make_output(tmp_path / "out", 120)
    rows = rows_of(tmp_path / "out")
    with RubrixTestServer(mode) as srv:
        cfg = RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace=srv.workspaces[0],
                           rubrix_backoff=0.01)
        rep = log_output(tmp_path / "out", cfg)
        assert rep.ok and rep.sent == len(ids) and not [w for w in rep.warnings if "scores" in w]
        for rid, r in srv.records(DS).items():
            meta = r["metadata"]
            assert {k: meta[k] for k in expected_meta(rows[rid])} == pytest.approx(expected_meta(rows[rid]))
            assert meta["topic"]  # the source fields still there
        key = rec.score_keys(LABELS)["política"]
        want = {i for i, r in rows.items() if 0.3 <= dict(zip(r["labels"], r["scores"]))["política"]}
        client = RubrixClient(cfg)
        got = {r["id"] for r in v1.iter_records(client, {"query_text": f"metadata.{key}:[0.3 TO *]"})}
        client.close()
        assert got == want and 0 < len(want) < len(ids)

    make_output(tmp_path / "many", 40, extra_cols=40)  # 44 source fields + 8 keys > 50: scores dropped, logged
    with RubrixTestServer(mode) as srv:
        cfg = RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace=srv.workspaces[0])
        rep = log_output(tmp_path / "many", cfg)
        assert rep.ok and len([w for w in rep.warnings if "scores do not fit" in w]) == 1
        meta = next(iter(srv.records(DS).values()))["metadata"]
        assert "margin" in meta and "entropy" in meta and not any(k.startswith("score_") for k in meta)


def search_ids(server, dataset_id, body):
    page = server.api("POST", f"/api/v1/me/datasets/{dataset_id}/records/search", body, params="?limit=1000")
    return {x["record"]["external_id"] for x in page["items"]}


SDK_QUERY = """
import json, sys
import argilla as rg
url, key, name, prop, lo, hi = sys.argv[1:]
client = rg.Argilla(api_url=url, api_key=key)
dataset = client.datasets(name=name, workspace="argilla")
query = rg.Query(filter=rg.Filter([("metadata." + prop, ">=", float(lo)), ("metadata." + prop, "<=", float(hi))]))
print(json.dumps([record.id for record in dataset.records(query=query)]))
"""


def sdk_ids(server, name, prop, lo, hi):
    """The external ids the ``argilla`` 2.8 SDK finds with a metadata range filter (run in the server's venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "RUBRIX_", "VIRTUAL_ENV", "PYTHON"))}
    proc = subprocess.run([server.sdk_python, "-c", SDK_QUERY, server.url, server.api_key, name, prop, str(lo), str(hi)],
                          capture_output=True, text=True, timeout=120, env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_2x_float_properties_and_a_range_filter(argilla2, tmp_path, ray_local):
    server = argilla2
    ids = make_output(tmp_path / "out", 90, multi_label=True)
    rows = rows_of(tmp_path / "out")
    cfg = RubrixConfig(rubrix_dataset="scores_multi", rubrix_api_url=server.url, rubrix_api_key=server.api_key,
                       rubrix_workspace="argilla", rubrix_backoff=0.05)
    rep = log_output(tmp_path / "out", cfg)
    assert rep.ok and rep.sent == len(ids)
    ds = server.dataset("scores_multi")
    props = {p["name"]: p for p in server.api("GET", f"/api/v1/me/datasets/{ds['id']}/metadata-properties")["items"]}
    keys = rec.score_keys(LABELS)
    for label, key in keys.items():
        assert props[key]["settings"]["type"] == "float" and props[key]["title"] == f"Score: {label}"
    assert props["margin"]["settings"]["type"] == props["entropy"]["settings"]["type"] == "float"
    for r in server.records(ds["id"]):
        row = rows[r["external_id"]]
        assert {k: r["metadata"][k] for k in expected_meta(row, True)} == pytest.approx(expected_meta(row, True))
        s = r["suggestions"][0]  # multi-label: the suggestion still carries several labels where they pass 0.5
        assert s["value"] == [x for x, p in zip(row["labels"], row["scores"]) if p >= 0.5] or s["value"] == row["labels"][:1]
    # a range filter through the official SDK, as a user's script does it ...
    want = {i for i, r in rows.items() if 0.5 <= dict(zip(r["labels"], r["scores"]))["deportes"] <= 0.9}
    assert sdk_ids(server, "scores_multi", keys["deportes"], 0.5, 0.9) == want and 0 < len(want) < len(ids)
    # ... and the request the SDK and the UI send for it
    body = {"filters": {"and": [{"type": "range", "scope": {"entity": "metadata", "metadata_property": keys["deportes"]},
                                 "ge": 0.5, "le": 0.9}]}}
    assert search_ids(server, ds["id"], body) == want
    body = {"filters": {"and": [{"type": "range", "scope": {"entity": "metadata", "metadata_property": "margin"},
                                 "le": 0.2}]}}
    want = {i for i, r in rows.items() if expected_meta(r, True)["margin"] <= 0.2}
    assert search_ids(server, ds["id"], body) == want and want


def test_2x_dataset_from_before_gets_the_properties(argilla2, tmp_path, ray_local):
    """A dataset made by an older zs-ray (published, no score properties): the properties are added."""
    server = argilla2
    ws = server.workspace()["id"]
    ds = server.api("POST", "/api/v1/datasets", {"name": "scores_older", "workspace_id": ws})
    server.api("POST", f"/api/v1/datasets/{ds['id']}/fields", {"name": "text", "title": "Text", "required": True,
                                                               "settings": {"type": "text"}})
    server.api("POST", f"/api/v1/datasets/{ds['id']}/questions", {
        "name": "label", "title": "Label", "required": True,
        "settings": {"type": "label_selection", "options": [{"value": x, "text": x} for x in LABELS]}})
    server.api("PUT", f"/api/v1/datasets/{ds['id']}/publish")
    ids = make_output(tmp_path / "out", 30)
    cfg = RubrixConfig(rubrix_dataset="scores_older", rubrix_api_url=server.url, rubrix_api_key=server.api_key,
                       rubrix_workspace="argilla", rubrix_backoff=0.05)
    rep = log_output(tmp_path / "out", cfg)
    assert rep.ok and rep.sent == len(ids)
    names = {p["name"] for p in server.api("GET", f"/api/v1/me/datasets/{ds['id']}/metadata-properties")["items"]}
    assert set(rec.score_keys(LABELS).values()) | {"margin", "entropy"} <= names
    assert all("margin" in r["metadata"] for r in server.records(ds["id"]))


def test_score_metadata_switch_on_2x(argilla2, tmp_path, ray_local):
    """--rubrix-score-metadata uncertainty: margin and entropy, no per-label scores, on records and as properties."""
    server = argilla2
    make_output(tmp_path / "out", 30)
    cfg = RubrixConfig(rubrix_dataset="scores_off", rubrix_api_url=server.url, rubrix_api_key=server.api_key,
                       rubrix_workspace="argilla", rubrix_score_metadata="uncertainty")
    assert log_output(tmp_path / "out", cfg).ok
    ds = server.dataset("scores_off")
    props = {p["name"] for p in server.api("GET", f"/api/v1/me/datasets/{ds['id']}/metadata-properties")["items"]}
    assert {"margin", "entropy"} <= props and not {k for k in props if k.startswith("score_")}
    for r in server.records(ds["id"]):
        assert "margin" in r["metadata"] and not [k for k in r["metadata"] if k.startswith("score_")]
