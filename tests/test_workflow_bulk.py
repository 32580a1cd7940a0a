"""zs-ray bulk-label against the Rubrix / Argilla 1.x test server: the dry run changes nothing, --apply never
writes over a person's record, --undo restores the server exactly. Records are put on the server with the
client directly (the records as ``zs-ray log`` builds them), so no Ray is started."""

import copy
import json

import pytest

from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray.cli import main
from zs_ray.errors import ZsRayError
from zs_ray.output import open_output
from zs_ray.servers import ServerConfig
from zs_ray.servers import records as rec
from zs_ray.servers import v1
from zs_ray.servers.client import RubrixClient
from zs_ray.workflow.config import RubrixConfig
from zs_ray.workflow.bulk import bulk_label
from zs_ray.workflow.config import BulkLabelConfig

DS = "zeroshot_noticias"


def server_config(srv, **kw):
    return ServerConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", rubrix_backoff=0.01, **kw)


def put_records(srv, path, n=240):
    ids = make_output(path, n)
    out = open_output(str(path))
    spec, _ = rec.make_spec(out.dataset, out.manifest, None, None)
    client = RubrixClient(RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix"))
    v1.create_dataset(client)
    for batch in out.dataset.to_batches():
        records = [r for r in rec.build_records(batch, spec) if r is not None]
        v1.bulk(client, rec.bulk_body([rec.encode(r) for r in records], {}))
    client.close()
    return ids


def top(record):
    best = max(record["prediction"]["labels"], key=lambda x: x["score"])
    return best["class"], best["score"]


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.4"])
def test_dry_run_apply_undo(mode, tmp_path, capsys):
    with RubrixTestServer(mode) as srv:
        ids = put_records(srv, tmp_path / "out")
        # people's work: validated, discarded, annotated but left as Edited
        srv.annotate(DS, ids[0], ["cultura"], agent="ana")
        srv.annotate(DS, ids[1], ["deportes"], agent="luis", status="Discarded")
        srv.annotate(DS, ids[2], ["sociedad"], agent="ana", status="Edited")
        srv.records(DS)[ids[3]]["status"] = "Validated"  # validated without an annotation (multi-label style)
        people = {i: copy.deepcopy(srv.records(DS)[i]) for i in ids[:4]}
        before = copy.deepcopy(srv.records(DS))
        writes = sum(srv.writes[DS].values())
        thresholds = {"política": 0.3, "deportes": 0.25, "economía": 0.4}
        expected = {i for i, r in before.items() if i not in people and top(r)[0] in thresholds
                    and top(r)[1] >= thresholds[top(r)[0]]}
        assert len(expected) > 20
        (tmp_path / "t.json").write_text(json.dumps({"labels": {
            "política": {"threshold": 0.3}, "deportes": {"threshold": 0.25}, "economía": {"threshold": 0.4},
            "cultura": {"threshold": None, "status": "too few labels (3, need 29)"}}}))
        undo_file = tmp_path / "undo.jsonl"
        args = ["bulk-label", "--thresholds", str(tmp_path / "t.json"), "--rubrix-dataset", DS, "--rubrix-api-url",
                srv.url, "--rubrix-workspace", "rubrix", "--undo-file", str(undo_file), "--chunk-size", "7"]

        # dry run (the default): says what would change, writes nothing
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert f"would annotate {len(expected)} records" in printed and "nothing written" in printed
        assert srv.records(DS) == before and sum(srv.writes[DS].values()) == writes and not undo_file.exists()

        # apply: exactly the expected records, annotated by zs-ray-bulk, validated; people's records untouched
        srv.annotate(DS, sorted(expected)[0], ["cultura"], agent="eva")  # a person, after the dry run
        expected.discard(sorted(expected)[0])
        after_person = copy.deepcopy(srv.records(DS))
        assert main(args + ["--apply"]) == 0
        assert f"annotated {len(expected)} records" in capsys.readouterr().out
        now = srv.records(DS)
        changed = {i for i in now if now[i] != after_person[i]}
        assert changed == expected
        for i in expected:
            assert now[i]["annotation"] == {"agent": "zs-ray-bulk", "labels": [{"class": top(now[i])[0], "score": 1.0}]}
            assert now[i]["status"] == "Validated"
            assert {k: v for k, v in now[i].items() if k not in ("annotation", "status", "_annotated_by")} == \
                {k: v for k, v in before[i].items() if k not in ("annotation", "status", "_annotated_by")}
        for i, r in people.items():
            assert now[i] == r
        assert srv.writes[DS][ids[0]] == 1  # never re-sent

        # a second apply finds nothing left to do
        assert main(args + ["--apply"]) == 0
        assert "annotated 0 records" in capsys.readouterr().out and srv.records(DS) == now

        # a person corrects one bulk label after the apply: undo must leave it
        corrected = sorted(expected)[1]
        srv.annotate(DS, corrected, ["sociedad"], agent="ana")
        kept = copy.deepcopy(srv.records(DS)[corrected])
        assert main(args + ["--undo"]) == 0
        assert "left (changed since the apply)" in capsys.readouterr().out
        restored = srv.records(DS)
        assert restored[corrected] == kept
        assert {i: r for i, r in restored.items() if i != corrected} == \
            {i: r for i, r in after_person.items() if i != corrected}
        assert not undo_file.exists() and (tmp_path / "undo.jsonl.undone").exists()


def test_apply_never_overwrites_on_an_upsert_server(tmp_path):
    """Argilla 1.7+ keeps fields left out: apply still touches only untouched records."""
    with RubrixTestServer("argilla-1.29") as srv:
        ids = put_records(srv, tmp_path / "out", 120)
        srv.annotate(DS, ids[0], ["cultura"], agent="ana")
        before = copy.deepcopy(srv.records(DS))
        cfg = BulkLabelConfig(threshold=["política=0", "deportes=0", "economía=0", "cultura=0", "sociedad=0",
                                         "tecnología=0"], apply=True, undo_file=str(tmp_path / "u.jsonl"))
        report = bulk_label(cfg, server_config(srv))
        assert report.written == len(ids) - 1
        assert srv.records(DS)[ids[0]] == before[ids[0]]
        assert all(srv.records(DS)[i]["annotation"]["agent"] == "zs-ray-bulk" for i in ids[1:])
        assert "--undo will not be available" in report.summary()
        # undo cannot take an annotation back through :bulk on an upsert server: refused, nothing written
        applied = copy.deepcopy(srv.records(DS))
        with pytest.raises(ZsRayError, match="not available on this server"):
            bulk_label(BulkLabelConfig(undo=True, undo_file=str(tmp_path / "u.jsonl")), server_config(srv))
        assert srv.records(DS) == applied and (tmp_path / "u.jsonl").exists()


@pytest.mark.parametrize("args,expect", [
    (["--apply", "--undo"], "choose one of"),
    ([], "give --thresholds"),
    (["--threshold", "deportes=1.5"], "LABEL=SCORE"),
])
def test_bulk_label_one_line_errors(args, expect, capsys):
    assert main(["bulk-label", "--rubrix-dataset", DS, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0]


def test_bulk_label_on_argilla_2(tmp_path, argilla2_each):
    """The real argilla-server 2.8 (on SQLite, then PostgreSQL): bulk labels are responses of a user kept for them;
    a person's response is never touched; undo deletes exactly the bulk responses."""
    from zs_ray.servers import log_output

    srv = argilla2_each
    make_output(tmp_path / "out", 40)
    owner = dict(rubrix_api_url=srv.url, rubrix_workspace="argilla", rubrix_backoff=0.05)
    assert log_output(tmp_path / "out", RubrixConfig(rubrix_dataset=DS, rubrix_api_key=srv.api_key, **owner)).ok
    bot, ana = srv.create_user("zs-ray-bulk", role="admin"), srv.create_user("bea")  # admin: lists records
    did = srv.dataset(DS)["id"]
    first = sorted(srv.records(did), key=lambda r: r["external_id"])
    srv.respond(first[0]["id"], {"label": {"value": "cultura"}}, "submitted", ana["api_key"])
    srv.respond(first[1]["id"], None, "discarded", ana["api_key"])

    def state():
        return {r["external_id"]: sorted((x["user_id"], x["status"], json.dumps(x.get("values"), sort_keys=True))
                                         for x in r.get("responses") or []) for r in srv.records(did)}

    before = state()
    server = ServerConfig(rubrix_dataset=DS, rubrix_api_key=bot["api_key"], **owner)
    undo = str(tmp_path / "u.jsonl")
    everything = ["política=0", "economía=0", "cultura=0", "sociedad=0", "deportes=0", "tecnología=0"]
    dry = bulk_label(BulkLabelConfig(threshold=everything, undo_file=undo), server)
    assert sum(dry.candidates.values()) == len(before) - 2 and state() == before
    done = bulk_label(BulkLabelConfig(threshold=everything, apply=True, undo_file=undo), server)
    assert done.written == len(before) - 2 and done.warning is None
    after = state()
    assert after[first[0]["external_id"]] == before[first[0]["external_id"]]
    assert after[first[1]["external_id"]] == before[first[1]["external_id"]]
    for r in srv.records(did)[2:]:
        if r["external_id"] in (first[0]["external_id"], first[1]["external_id"]):
            continue
        [resp] = r["responses"]
        assert resp["user_id"] == bot["id"] and resp["status"] == "submitted"
        assert resp["values"]["label"]["value"] == r["suggestions"][0]["value"]
    restored = bulk_label(BulkLabelConfig(undo=True, undo_file=undo), server)
    assert restored.ok and restored.restored == len(before) - 2 and state() == before


def test_the_workflow_end_to_end(tmp_path, capsys):
    """pull -> thresholds -> bulk-label --apply (the count thresholds promised) -> pull -> evaluate, where the
    bulk labels are not counted as human labels."""
    from zs_ray.servers import pull

    with RubrixTestServer("argilla-1.29") as srv:
        ids = put_records(srv, tmp_path / "out", 400)
        recs = srv.records(DS)
        for i in ids[:200]:  # people label half: right when the model is confident, wrong otherwise
            lab, score = top(recs[i])
            srv.annotate(DS, i, [lab if score >= 0.5 else ("cultura" if lab != "cultura" else "sociedad")])
        cfg = server_config(srv)
        pull(cfg, tmp_path / "r1.parquet")
        assert main(["thresholds", "--input", str(tmp_path / "r1.parquet"), "--target-precision", "0.6",
                     "--output", str(tmp_path / "t.json")]) == 0
        result = json.loads((tmp_path / "t.json").read_text())
        promised = sum(r.get("would_label", 0) for r in result["labels"].values())
        assert promised > 0 and all(r["threshold"] is None or r["threshold"] >= 0.3 for r in result["labels"].values())
        base = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-workspace", "rubrix",
                "--undo-file", str(tmp_path / "u.jsonl")]
        # (--audit-size 0: no audit sample kept out, so every record promised is bulk-labelled)
        assert main(["bulk-label", "--thresholds", str(tmp_path / "t.json"), "--apply", "--audit-size", "0", *base]) == 0
        assert f"annotated {promised} records" in capsys.readouterr().out
        assert sum(r.get("annotation", {}).get("agent") == "zs-ray-bulk" for r in srv.records(DS).values()) == promised
        pull(cfg, tmp_path / "r2.parquet")
        assert main(["evaluate", "--input", str(tmp_path / "r2.parquet"), "--output", str(tmp_path / "ev"),
                     "--bootstrap", "20"]) == 0
        metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
        assert metrics["records"] == 200 and any(f"{promised} answers left out (by zs-ray-bulk)" == n
                                                 for n in metrics["input"]["left_out"])
