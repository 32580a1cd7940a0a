"""Argilla 2.x against the real argilla-server 2.8 (SQLite, fakeredis, an in-memory search engine), started
once per session in its own virtual environment (tests/argilla2_server). The core ones (log, re-log, pull, the
concurrent-creation race) run on PostgreSQL too (``argilla2_each``), as Argilla's server deployments run it. If a
server or PostgreSQL cannot start, these fail."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from tests.argilla2_server import free_port
from tests.rubrix_server import LABELS, MODEL, make_output
from zs_ray.errors import ZsRayError
from zs_ray import RubrixConfig
from zs_ray.servers import argilla2, log_output, pull
from zs_ray.servers.pull import SCHEMA


@pytest.fixture(scope="session")
def server(argilla2):
    return argilla2  # conftest.py: one server per session


_annotators: dict = {}


def annotator_of(server):
    """A person: an annotator of workspace ``argilla``, created once per server through the API; (username, key)."""
    if server.url not in _annotators:
        user = server.create_user("ana")
        _annotators[server.url] = user["username"], user["api_key"]
    return _annotators[server.url]


@pytest.fixture(scope="session")
def annotator(server):
    return annotator_of(server)


def cfg(server, dataset, **kw):
    kw.setdefault("rubrix_api_key", server.api_key)
    kw.setdefault("rubrix_workspace", "argilla")
    kw.setdefault("rubrix_backoff", 0.05)
    kw.setdefault("rubrix_api_url", server.url)
    return RubrixConfig(rubrix_dataset=dataset, **kw)


def output_rows(path):
    """The predicted rows of an output (``make_output``'s part-*.parquet), by id."""
    import glob

    rows = [r for f in sorted(glob.glob(f"{path}/part-*.parquet"))
            for r in pq.read_table(f, columns=["id", "labels", "scores"]).to_pylist()]
    return {r["id"]: r for r in rows if r["labels"] is not None}


def argilla2_score_keys():
    from zs_ray.servers.records import score_keys

    return score_keys(LABELS).values()


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


def test_log_annotate_relog_pull(argilla2_each, tmp_path, ray_local):
    server, annotator = argilla2_each, annotator_of(argilla2_each)
    ds = "noticias_single"
    out = tmp_path / "out"
    ids = make_output(out, 150)  # every 50th row has an empty text and no prediction
    rows = output_rows(str(out))
    rep = log_output(out, cfg(server, ds, chunk_size=40, senders=4))
    assert rep.ok, rep.errors
    assert (rep.sent, rep.skipped_empty, rep.chunks) == (len(ids), 150 - len(ids), 4)

    meta = server.dataset(ds)
    assert meta["status"] == "ready"
    question = server.api("GET", f"/api/v1/datasets/{meta['id']}/questions")["items"][0]
    assert question["name"] == "label" and question["settings"]["type"] == "label_selection"
    assert [o["value"] for o in question["settings"]["options"]] == LABELS
    assert [f["name"] for f in server.api("GET", f"/api/v1/datasets/{meta['id']}/fields")["items"]] == ["text"]
    props = server.api("GET", f"/api/v1/me/datasets/{meta['id']}/metadata-properties")["items"]
    floats = {key: "float" for key in (*argilla2_score_keys(), "margin", "entropy")}  # test_score_metadata.py
    assert {p["name"]: p["settings"]["type"] for p in props} == {
        **{k: "terms" for k in ("topic", "url", "title", "date")}, **floats}

    records = server.records(meta["id"])
    assert sorted(r["external_id"] for r in records) == sorted(ids)  # exactly the predicted rows, once each
    for r in records:
        [s] = r["suggestions"]
        row = rows[r["external_id"]]
        assert (s["value"], s["score"], s["agent"], s["type"]) == (row["labels"][0], row["scores"][0], MODEL, "model")
        assert s["question_id"] == question["id"]
        assert r["fields"]["text"].startswith("Resumen") and r["metadata"]["topic"]

    # A person works in the UI (here: the same API the UI calls): submitted, draft and discarded responses.
    username, key = annotator
    by_ext = {r["external_id"]: r for r in records}
    a, b, c = ids[3], ids[4], ids[5]
    server.respond(by_ext[a]["id"], {"label": {"value": "cultura"}}, "submitted", key)
    server.respond(by_ext[b]["id"], {"label": {"value": "deportes"}}, "draft", key)
    server.respond(by_ext[c]["id"], None, "discarded", key)
    before = {x: server.api("GET", f"/api/v1/records/{by_ext[x]['id']}", params="?include=responses")["responses"]
              for x in (a, b, c)}

    # The same ledger: nothing is sent again.
    again = log_output(out, cfg(server, ds, chunk_size=40))
    assert again.ok and again.sent == 0 and again.already_acked == len(ids)

    # A re-log without the ledger (e.g. a new run of a better model over the same rows): suggestions are
    # updated, the records are not duplicated, and every response stays exactly as the person left it.
    relog = log_output(out, cfg(server, ds, chunk_size=40, rubrix_agent="model-v2",
                                rubrix_ledger=str(tmp_path / "other.ledger.jsonl")))
    assert relog.ok and relog.sent == len(ids)
    records = server.records(meta["id"])
    assert len(records) == len(ids) and server.api(
        "GET", f"/api/v1/datasets/{meta['id']}/records", params="?limit=1")["total"] == len(ids)
    assert all([s["agent"] for s in r["suggestions"]] == ["model-v2"] for r in records)
    after = {x: server.api("GET", f"/api/v1/records/{by_ext[x]['id']}", params="?include=responses")["responses"]
             for x in (a, b, c)}
    assert after == before and [after[x][0]["status"] for x in (a, b, c)] == ["submitted", "draft", "discarded"]

    # Pull: the same Parquet schema as on 1.x, the person's labels and name, the suggestion as prediction.
    rep = pull(cfg(server, ds), tmp_path / "a.parquet", page_size=50)
    t = pq.read_table(tmp_path / "a.parquet")
    assert t.schema == SCHEMA and rep.rows == t.num_rows == len(ids)
    got = {r["id"]: r for r in t.to_pylist()}
    assert sorted(got) == sorted(ids)
    ann = {x: (got[x]["annotation_labels"], got[x]["annotation_agent"], got[x]["status"]) for x in (a, b)}
    assert ann == {a: (["cultura"], username, "Validated"), b: (["deportes"], username, "Edited")}
    assert (got[c]["annotation_agent"], got[c]["status"]) == (username, "Discarded")
    other = got[ids[0]]
    assert (other["annotation_labels"], other["annotation_agent"], other["status"]) == (None, None, "Default")
    assert other["prediction_labels"] == [rows[ids[0]]["labels"][0]]
    assert other["prediction_scores"] == [rows[ids[0]]["scores"][0]] and other["prediction_agent"] == "model-v2"
    assert other["multi_label"] is False and dict(other["metadata"])["topic"] and other["text"].startswith("Resumen")
    assert rep.status == {"Default": len(ids) - 3, "Validated": 1, "Edited": 1, "Discarded": 1}
    validated = pull(cfg(server, ds), tmp_path / "v.parquet", query={"status": ["Validated"]})
    assert validated.rows == 1 and pq.read_table(tmp_path / "v.parquet")["id"].to_pylist() == [a]


def test_multi_label_and_agent(server, annotator, tmp_path, ray_local):
    ds = "noticias_multi"
    out = tmp_path / "out"
    ids = make_output(out, 60, multi_label=True)
    rows = output_rows(str(out))
    rep = log_output(out, cfg(server, ds, rubrix_agent="Modèle zero-shot+v2 ñ"))
    assert rep.ok and rep.sent == len(ids), rep.errors
    meta = server.dataset(ds)
    question = server.api("GET", f"/api/v1/datasets/{meta['id']}/questions")["items"][0]
    assert question["settings"]["type"] == "multi_label_selection"
    records = server.records(meta["id"])
    assert len(records) == len(ids)
    for r in records:
        [s] = r["suggestions"]
        row = rows[r["external_id"]]
        expected = [(lab, sc) for lab, sc in zip(row["labels"], row["scores"]) if sc >= 0.5] or \
            [(row["labels"][0], row["scores"][0])]
        assert list(zip(s["value"], s["score"])) == expected
        assert s["agent"] == "Modele zero-shot-v2 n"
    username, key = annotator
    rid = next(r for r in records if r["external_id"] == ids[1])
    server.respond(rid["id"], {"label": {"value": ["cultura", "sociedad"]}}, "submitted", key)
    pull(cfg(server, ds), tmp_path / "m.parquet")
    got = {r["id"]: r for r in pq.read_table(tmp_path / "m.parquet").to_pylist()}
    assert got[ids[1]]["annotation_labels"] == ["cultura", "sociedad"] and got[ids[1]]["multi_label"] is True
    assert got[ids[1]]["annotation_agent"] == username and got[ids[1]]["status"] == "Validated"
    assert got[ids[2]]["prediction_labels"] == [x[0] for x in (
        [(lab, sc) for lab, sc in zip(rows[ids[2]]["labels"], rows[ids[2]]["scores"]) if sc >= 0.5]
        or [(rows[ids[2]]["labels"][0], 0)])]


def test_existing_dataset_with_other_settings_is_refused(server, tmp_path, ray_local):
    ds = "noticias_refuse"
    make_output(tmp_path / "single", 30)
    assert log_output(tmp_path / "single", cfg(server, ds)).ok
    n = len(server.records(server.dataset(ds)["id"]))
    make_output(tmp_path / "multi", 30, multi_label=True)
    with pytest.raises(ZsRayError) as e:
        log_output(tmp_path / "multi", cfg(server, ds))
    assert "label_selection" in str(e.value) and "multi_label_selection" in str(e.value) and one_line(str(e.value))
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "single", other)
    manifest = json.loads((other / "_zs_ray_manifest.json").read_text())
    manifest["candidate_labels"] = LABELS[:5] + ["ciencia"]
    (other / "_zs_ray_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZsRayError, match="exists with a label_selection question of labels") as e:
        log_output(other, cfg(server, ds))
    assert one_line(str(e.value)) and "choose another --rubrix-dataset" in str(e.value)
    assert len(server.records(server.dataset(ds)["id"])) == n  # nothing mixed in


def test_refusals_are_one_line_without_the_key(server, tmp_path, ray_local):
    make_output(tmp_path / "out", 20)
    secret = "wrong-SECRET-key-9b1"
    cases = [
        (cfg(server, "noticias_x", rubrix_api_key=secret), "401"),
        (cfg(server, "noticias_x", rubrix_workspace="nowhere"), "workspace 'nowhere' is not one of yours"),
        (cfg(server, "noticias_x", rubrix_api_url=f"http://127.0.0.1:{free_port()}", rubrix_api_key=secret,
             rubrix_retries=0), "cannot reach"),
    ]
    for config, expect in cases:
        for op in (lambda c: log_output(tmp_path / "out", c), lambda c: pull(c, tmp_path / "p.parquet")):
            with pytest.raises(ZsRayError) as e:
                op(config)
            assert expect in str(e.value) and one_line(str(e.value)) and secret not in str(e.value)
    with pytest.raises(ZsRayError, match="dataset never_logged does not exist") as e:
        pull(cfg(server, "never_logged"), tmp_path / "p.parquet")
    assert server.dataset("noticias_x") is None and server.dataset("never_logged") is None
    assert not (tmp_path / "p.parquet").exists()


def test_concurrent_creation_of_the_same_records_is_retried(argilla2_each, tmp_path, ray_local):
    """The same new records sent by several requests at once end up stored once each (the server upserts by
    external_id; the 500 it can answer to two requests creating the same ids at once, a unique-constraint
    race, is retried; on SQLite the race rarely shows, so this checks the outcome). A 422 is not retried."""
    server = argilla2_each
    ds = "noticias_race"
    make_output(tmp_path / "out", 20)
    assert log_output(tmp_path / "out", cfg(server, ds)).ok
    meta = server.dataset(ds)
    qid = server.api("GET", f"/api/v1/datasets/{meta['id']}/questions")["items"][0]["id"]
    target = argilla2.Target(meta["id"], qid, False, tuple(LABELS), "m")
    recs = [{"id": f"race-{i}", "inputs": {"text": f"t {i}"}, "metadata": {},
             "prediction": {"labels": [{"class": "cultura", "score": 0.9}]}} for i in range(100)]
    encoded = [target.encode(r) for r in recs]
    config = cfg(server, ds, rubrix_retries=8, rubrix_backoff=0.05)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        argilla2.send_chunk(config, meta["id"], [r["id"] for r in recs], encoded))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["error"] is None for r in results), [r["error"] for r in results]
    assert sum(r["external_id"].startswith("race-") for r in server.records(meta["id"])) == 100
    # one invalid item: refused by the server with 422 for the whole request, not retried
    bad = json.dumps({"external_id": "bad", "fields": {"text": "x"}, "suggestions": [
        {"question_id": qid, "value": "not-a-label", "score": 0.5, "agent": "m", "type": "model"}]}).encode()
    t0 = time.monotonic()
    res = argilla2.send_chunk(cfg(server, ds, rubrix_retries=8, rubrix_backoff=2.0), meta["id"], ["bad"], [bad])
    assert res["status"] == 422 and res["failed"] == ["bad"] and "not-a-label" in res["error"]
    assert time.monotonic() - t0 < 20  # retrying it 8 times would wait >= 1 + 2 + 4 + 8 + 10 + ... s
    # ... which is why items are checked before sending
    with pytest.raises(ZsRayError, match="not options"):
        target.encode({"id": "x", "inputs": {"text": "t"}, "metadata": {},
                       "prediction": {"labels": [{"class": "otra", "score": 0.5}]}})


def test_cli_log_and_pull(server, tmp_path):
    out = tmp_path / "out"
    ids = make_output(out, 40)
    secret = server.api_key
    env = {**os.environ, "ARGILLA_API_URL": server.url, "ARGILLA_API_KEY": secret, "ARGILLA_WORKSPACE": "argilla",
           "RAY_ADDRESS": "local"}
    for k in ("RUBRIX_API_URL", "RUBRIX_API_KEY", "RUBRIX_WORKSPACE"):
        env.pop(k, None)

    def cli(*args, **extra):
        proc = subprocess.run([sys.executable, "-m", "zs_ray.cli", *args], env={**env, **extra},
                              capture_output=True, text=True, timeout=180)
        for key in (secret, extra.get("ARGILLA_API_KEY")):
            assert not key or key not in proc.stdout + proc.stderr
        return proc

    p = cli("log", "--input", str(out), "--rubrix-dataset", "noticias_cli", "--senders", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{len(ids)} sent" in p.stdout and "argilla2 2.8" in p.stdout
    p = cli("pull", "--rubrix-dataset", "noticias_cli", "--output", str(tmp_path / "a.parquet"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert pq.read_table(tmp_path / "a.parquet").num_rows == len(ids)
    for args, extra, expect in [
        (("log", "--input", str(out), "--rubrix-dataset", "noticias_cli"), {"ARGILLA_API_KEY": "nope-" + secret[:4]},
         "refused the API key"),
        (("pull", "--rubrix-dataset", "nothing_here", "--output", str(tmp_path / "b.parquet")), {}, "does not exist"),
        (("pull", "--rubrix-dataset", "noticias_cli", "--output", str(tmp_path / "b.parquet")),
         {"ARGILLA_WORKSPACE": "nowhere"}, "not one of yours"),
    ]:
        p = cli(*args, **extra)
        lines = p.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("zs-ray: error:")]
        assert p.returncode == 2 and len(errors) == 1, p.stderr[-2000:]
        assert all(line.startswith("zs-ray: WARNING:") for line in lines if line not in errors), p.stderr[-2000:]
        assert expect in errors[0] and "Traceback" not in p.stderr
