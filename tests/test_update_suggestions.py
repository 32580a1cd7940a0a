"""``zs-ray log --update-suggestions``: a student's output replaces the prediction of every record nobody answered,
exactly once; every answered record is left byte for byte as it was. On the Rubrix 0.x / Argilla 1.x test server
(a person annotates as the web app does) and on the real argilla-server 2.8 (a person answers through the
responses endpoint)."""

import copy
import glob
import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.rubrix_server import LABELS, RubrixTestServer, make_output
from zs_ray.cli import main
from zs_ray.output import MANIFEST
from zs_ray.servers import log_output
from zs_ray.servers import records as rec
from zs_ray.workflow.config import RubrixConfig

DS = "zeroshot_update"
STUDENT = "zs-ray/student-tiny"


def make_student(teacher, path, extra_id="es-test-999999"):
    """The student's output: the teacher's rows (same ids) with the labels ranked the other way round (so the
    top label changes), its own model name in the manifest, and one id the server does not hold."""
    path.mkdir(parents=True)
    for f in sorted(glob.glob(f"{teacher}/part-*.parquet")):
        rows = pq.read_table(f).to_pylist()
        for r in rows:
            if r["labels"] is not None:
                r["labels"] = r["labels"][::-1]
                r["prediction"] = r["labels"][0]
        pq.write_table(pa.Table.from_pylist(rows), path / f.rsplit("/", 1)[1])
    extra = {**rows[0], "id": extra_id}
    pq.write_table(pa.Table.from_pylist([extra]), path / "part-999.parquet")
    manifest = json.loads((teacher / MANIFEST).read_text())
    manifest.update(model=STUDENT, rows=manifest["rows"] + 1)
    (path / MANIFEST).write_text(json.dumps(manifest))
    return {r["id"]: r for f in sorted(glob.glob(f"{path}/part-*.parquet"))
            for r in pq.read_table(f).to_pylist() if r["labels"] is not None}


def counts(text):
    m = re.search(r"(\d+) updated, (\d+) already updated, (\d+) answered by a person.*?(\d+) not on the server", text)
    return tuple(map(int, m.groups()))


def score_meta(row):
    keys = rec.score_keys(LABELS)
    return {keys[label]: s for label, s in zip(row["labels"], row["scores"])}


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.29"])
def test_1x_update_never_over_a_person(mode, tmp_path, ray_local, capsys):
    ids = make_output(tmp_path / "a", 90)
    student = make_student(tmp_path / "a", tmp_path / "b")
    with RubrixTestServer(mode) as srv:
        ws = srv.workspaces[0]
        assert log_output(tmp_path / "a", RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url,
                                                       rubrix_workspace=ws)).ok
        srv.annotate(DS, ids[0], ["cultura"], agent="ana")
        srv.annotate(DS, ids[1], ["deportes"], agent="luis", status="Discarded")
        srv.annotate(DS, ids[2], ["sociedad"], agent="ana", status="Edited")
        srv.records(DS)[ids[3]]["status"] = "Validated"  # validated without an annotation
        people = {i: json.dumps(srv.records(DS)[i], sort_keys=True) for i in ids[:4]}
        args = ["log", "--input", str(tmp_path / "b"), "--update-suggestions", "--rubrix-dataset", DS,
                "--rubrix-api-url", srv.url, "--rubrix-workspace", ws, "--rubrix-backoff", "0.01"]
        assert main(args) == 0
        assert counts(capsys.readouterr().out) == (len(ids) - 4, 0, 4, 1)
        stored = srv.records(DS)
        assert {i: json.dumps(stored[i], sort_keys=True) for i in people} == people  # byte for byte
        assert "es-test-999999" not in stored  # not created
        for i in ids[4:]:
            r, row = stored[i], student[i]
            assert r["prediction"]["agent"] == STUDENT
            assert [x["class"] for x in r["prediction"]["labels"]] == row["labels"]
            assert {k: r["metadata"][k] for k in score_meta(row)} == pytest.approx(score_meta(row))
            assert r["metadata"]["topic"] and r["status"] == "Default" and "annotation" not in r
        writes = copy.deepcopy(srv.writes[DS])
        assert all(writes[i] == 2 for i in ids[4:]) and all(writes[i] == 1 for i in people)

        assert main(args) == 0  # again: the ledger knows them, nothing is sent
        assert counts(capsys.readouterr().out) == (0, len(ids) - 4, 4, 1)
        ledgers = glob.glob(f"{tmp_path}/b/_rubrix/*.ledger.jsonl")
        assert len(ledgers) == 1
        shutil.move(ledgers[0], str(tmp_path / "gone.jsonl"))  # a lost ledger: read, found updated, not sent ...
        for i in ids[4:6]:  # ... but for two records as an older zs-ray logged them (no scores in the metadata)
            srv.records(DS)[i]["metadata"] = {"topic": srv.records(DS)[i]["metadata"]["topic"]}
        assert main(args) == 0
        assert counts(capsys.readouterr().out) == (2, len(ids) - 6, 4, 1)
        assert srv.writes[DS] == {**writes, ids[4]: 3, ids[5]: 3}
        assert srv.records(DS)[ids[4]]["metadata"]["margin"] is not None
        assert {i: json.dumps(srv.records(DS)[i], sort_keys=True) for i in people} == people


def test_2x_update_never_over_a_person(argilla2, tmp_path, ray_local, capsys):
    server = argilla2
    user = server.create_user("berta")
    ids = make_output(tmp_path / "a", 60)
    student = make_student(tmp_path / "a", tmp_path / "b")
    cfg = dict(rubrix_api_url=server.url, rubrix_api_key=server.api_key, rubrix_workspace="argilla")
    assert log_output(tmp_path / "a", RubrixConfig(rubrix_dataset="update_single", **cfg)).ok
    ds = server.dataset("update_single")
    by_ext = {r["external_id"]: r for r in server.records(ds["id"])}
    server.respond(by_ext[ids[0]]["id"], {"label": {"value": "cultura"}}, "submitted", user["api_key"])
    server.respond(by_ext[ids[1]]["id"], {"label": {"value": "deportes"}}, "draft", user["api_key"])
    server.respond(by_ext[ids[2]]["id"], None, "discarded", user["api_key"])
    server.respond(by_ext[ids[3]]["id"], {"label": {"value": "sociedad"}}, "submitted", server.api_key)
    people = {r["external_id"]: r for r in server.records(ds["id"]) if r["external_id"] in ids[:4]}
    assert all(r["responses"] for r in people.values())

    args = ["log", "--input", str(tmp_path / "b"), "--update-suggestions", "--rubrix-dataset", "update_single",
            "--rubrix-api-url", server.url, "--rubrix-api-key", server.api_key, "--rubrix-workspace", "argilla"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert counts(out) == (len(ids) - 4, 0, 4, 1) and server.api_key not in out
    after = {r["external_id"]: r for r in server.records(ds["id"])}
    assert {i: json.dumps(after[i], sort_keys=True) for i in people} == \
        {i: json.dumps(r, sort_keys=True) for i, r in people.items()}  # responses, suggestion, metadata: as they were
    assert "es-test-999999" not in after
    for i in ids[4:]:
        [s], row = after[i]["suggestions"], student[i]
        assert (s["value"], s["score"], s["agent"]) == (row["labels"][0], pytest.approx(row["scores"][0]), STUDENT)
        assert {k: after[i]["metadata"][k] for k in score_meta(row)} == pytest.approx(score_meta(row))
        assert after[i]["metadata"]["topic"] and not after[i]["responses"]

    assert main(args) == 0  # again: nothing sent, nothing changed
    assert counts(capsys.readouterr().out) == (0, len(ids) - 4, 4, 1)
    assert {r["external_id"]: r for r in server.records(ds["id"])} == after

    # The race (a person answers between the read and the write): the server's bulk upsert of a suggestion keeps
    # the record's responses, as this update writes it (no fields, no responses).
    qid = after[ids[0]]["suggestions"][0]["question_id"]
    server.api("PUT", f"/api/v1/datasets/{ds['id']}/records/bulk", {"items": [{
        "external_id": ids[0], "metadata": after[ids[0]]["metadata"],
        "suggestions": [{"question_id": qid, "value": "economía", "score": 0.4, "agent": "x", "type": "model"}]}]})
    raced = next(r for r in server.records(ds["id"]) if r["external_id"] == ids[0])
    assert raced["responses"] == after[ids[0]]["responses"] and raced["suggestions"][0]["value"] == "economía"


def test_2x_multi_label_update(argilla2, tmp_path, ray_local, capsys):
    """Multi-label: the new suggestion carries the student's labels at 0.5 or more (else its top one)."""
    server = argilla2
    ids = make_output(tmp_path / "a", 30, multi_label=True, empty_every=0)
    student = make_student(tmp_path / "a", tmp_path / "b")
    assert log_output(tmp_path / "a", RubrixConfig(rubrix_dataset="update_multi", rubrix_api_url=server.url,
                                                   rubrix_api_key=server.api_key, rubrix_workspace="argilla")).ok
    ds = server.dataset("update_multi")
    first = next(r for r in server.records(ds["id"]) if r["external_id"] == ids[0])
    server.respond(first["id"], {"label": {"value": ["cultura"]}}, "submitted", server.api_key)
    before = next(r for r in server.records(ds["id"]) if r["external_id"] == ids[0])
    assert main(["log", "--input", str(tmp_path / "b"), "--update-suggestions", "--rubrix-dataset", "update_multi",
                 "--rubrix-api-url", server.url, "--rubrix-api-key", server.api_key]) == 0
    assert counts(capsys.readouterr().out) == (len(ids) - 1, 0, 1, 1)
    after = {r["external_id"]: r for r in server.records(ds["id"])}
    assert after[ids[0]] == before
    for i in ids[1:]:
        row = student[i]
        want = [x for x, p in zip(row["labels"], row["scores"]) if p >= 0.5] or row["labels"][:1]
        assert after[i]["suggestions"][0]["value"] == want and after[i]["suggestions"][0]["agent"] == STUDENT


def test_bad_input_refused_in_one_line(tmp_path, capsys):
    make_output(tmp_path / "a", 10)
    with RubrixTestServer("argilla-1.29") as srv:
        base = ["log", "--input", str(tmp_path / "a"), "--update-suggestions", "--rubrix-api-url", srv.url,
                "--rubrix-workspace", "rubrix"]
        assert main([*base, "--rubrix-dataset", "never_logged"]) == 2
        err = capsys.readouterr().err
        assert "never_logged does not exist" in err and len(err.strip().splitlines()) == 1
        assert main([*base, "--rubrix-dataset", DS, "--sample", "5"]) == 2
        assert "--update-suggestions" in capsys.readouterr().err
        assert srv.writes[DS] == {} and not (tmp_path / "a" / "_rubrix").exists()
