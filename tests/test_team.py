"""A team of annotators on the real argilla-server 2.8 (SQLite and PostgreSQL): overlap set and read back, every
response pulled, agreement measured, the careless annotator named, consensus by each method, the review queue
marked on the server, a reviewer deciding, and one line for each bad input."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from tests.browser import open_offline
from tests.rubrix_server import LABELS, make_output
from tests.test_argilla2 import cfg, one_line
from zs_ray.cli import main
from zs_ray.servers import log_output
from zs_ray.team import Responses, krippendorff_alpha

TEAM = ("ana-careful", "ben-careful", "cy-careless")
_users: dict = {}


def team_of(server) -> dict:
    """username -> API key: two careful annotators, one careless, and a reviewer; created once per server."""
    if server.url not in _users:
        _users[server.url] = {name: server.create_user(name)["api_key"] for name in (*TEAM, "lea-lead")}
    return _users[server.url]


def plant(rng: random.Random, n_all: int = 40, n_pairs: int = 20):
    """Answers by record position: the careful two give the truth, the careless one a label that is never the
    truth; on ``n_pairs`` records only ana and cy answer (a tie for majority vote). (Dawid-Skene on noisier
    careful annotators and more records: tests/test_team_math.py.)"""
    truth, answers = [], []
    for i in range(n_all + n_pairs):
        t = rng.choice(LABELS)
        wrong = rng.choice([x for x in LABELS if x != t])
        truth.append(t)
        got = {"ana-careful": t, "cy-careless": wrong}
        if i < n_all:
            got["ben-careful"] = t
        answers.append(got)
    return truth, answers


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def server_flags(server, ds):
    return ["--rubrix-api-url", server.url, "--rubrix-api-key", server.api_key, "--rubrix-workspace", "argilla",
            "--rubrix-dataset", ds]


def test_a_team_on_the_real_server(argilla2_each, tmp_path, ray_local, capsys):
    server = argilla2_each
    keys = team_of(server)
    ds = "team_noticias"
    out = tmp_path / "out"
    ids = make_output(out, 75)  # 73 predicted rows
    rep = log_output(out, cfg(server, ds, chunk_size=40, min_submitted=3))
    assert rep.ok, rep.errors
    meta = server.dataset(ds)
    assert meta["distribution"] == {"strategy": "overlap", "min_submitted": 3}
    # An existing dataset: changed by the next log (nothing is sent again: the ledger), kept when not given.
    assert log_output(out, cfg(server, ds, min_submitted=2)).ok
    assert server.dataset(ds)["distribution"] == {"strategy": "overlap", "min_submitted": 2}
    assert log_output(out, cfg(server, ds)).ok
    assert server.dataset(ds)["distribution"]["min_submitted"] == 2

    records = {r["external_id"]: r for r in server.records(meta["id"])}
    truth, answers = plant(random.Random(7))
    planted = ids[:len(truth)]
    for rid, got in zip(planted, answers):
        for name, label in got.items():
            server.respond(records[rid]["id"], {"label": {"value": label}}, "submitted", keys[name])
    # Not answers, still responses: a draft and a discarded one, which pull keeps.
    server.respond(records[ids[61]]["id"], {"label": {"value": LABELS[0]}}, "draft", keys["cy-careless"])
    server.respond(records[ids[62]]["id"], None, "discarded", keys["ben-careful"])

    pulled = tmp_path / "team.parquet"
    code, stdout, _ = run(capsys, "pull", *server_flags(server, ds), "--output", pulled)
    on_server = sum(len(r["responses"]) for r in server.records(meta["id"]))
    t = pq.read_table(pulled).to_pylist()
    assert code == 0 and on_server == 40 * 3 + 20 * 2 + 2 == sum(len(r["responses"]) for r in t)
    assert f"{on_server} responses" in stdout
    rows = {r["id"]: r for r in t}
    for rid, got in zip(planted, answers):
        assert {(x["annotator"], x["labels"][0], x["status"]) for x in rows[rid]["responses"]} == \
            {(a, lab, "submitted") for a, lab in got.items()}
    assert [(x["annotator"], x["status"]) for x in rows[ids[61]]["responses"]] == [("cy-careless", "draft")]
    assert [(x["annotator"], x["labels"], x["status"]) for x in rows[ids[62]]["responses"]] == \
        [("ben-careful", None, "discarded")]
    # annotation_labels: the majority; a tie unresolved; who decided it.
    assert (rows[planted[1]]["annotation_labels"], rows[planted[1]]["annotation_agent"]) == ([truth[1]], "consensus")
    assert (rows[planted[45]]["annotation_labels"], rows[planted[45]]["annotation_agent"]) == (None, None)
    assert rows[planted[45]]["status"] == "Validated"

    # Agreement: what the file holds is what was planted; the careless annotator is named.
    report_dir = tmp_path / "agreement"
    code, stdout, _ = run(capsys, "agreement", "--input", pulled, "--output", report_dir, "--bootstrap", 200)
    assert code == 0, stdout
    got = json.loads((report_dir / "agreement.json").read_text())
    direct = Responses.from_lists(planted, [sorted(a.items()) for a in answers])
    assert got["krippendorff_alpha"]["value"] == pytest.approx(krippendorff_alpha(direct.counts()), abs=1e-6)
    careful = Responses.from_lists(planted, [sorted((a, v) for a, v in x.items() if a != "cy-careless") for x in answers])
    assert got["krippendorff_alpha"]["value"] < 0.3 < krippendorff_alpha(careful.counts())  # cy drags it down
    assert got["fleiss_kappa"]["value"] is not None
    assert got["krippendorff_alpha"]["low"] <= got["krippendorff_alpha"]["value"] <= got["krippendorff_alpha"]["high"]
    assert got["flagged"] == ["cy-careless"] and "cy-careless" in stdout
    assert {n: a["records"] for n, a in got["annotators"].items()} == {"ana-careful": 60, "ben-careful": 40,
                                                                        "cy-careless": 60}
    assert got["unresolved"] == 20 and got["responses"] == 160

    # Consensus: majority leaves the 20 ties out; Dawid-Skene learns cy is careless and sides with ana.
    def evaluated(*extra):
        d = tmp_path / ("eval" + "-".join(map(str, extra)))
        code, stdout, _ = run(capsys, "evaluate", "--input", pulled, "--output", d, "--bootstrap", 0, *extra)
        assert code == 0
        return json.loads((d / "metrics.json").read_text()), stdout

    majority, _ = evaluated()
    assert majority["records"] == 40
    assert any("20 records unresolved" in n for n in majority["input"]["left_out"])
    ds_metrics, _ = evaluated("--consensus", "dawid-skene")
    assert ds_metrics["records"] == 60 and not any("unresolved" in n for n in ds_metrics["input"]["left_out"])
    from zs_ray.workflow.data import load

    ds_gold = load(str(pulled), consensus="dawid-skene")
    gold = dict(zip(ds_gold.ids, ds_gold.gold))
    assert [gold[r] for r in planted] == truth  # every tie of majority decided for the careful ones

    # The review queue: the most disagreed records marked on the server, once.
    code, stdout, _ = run(capsys, "agreement", "--input", pulled, "--output", report_dir, "--bootstrap", 0,
                          "--review", 5, *server_flags(server, ds))
    assert code == 0 and "marked 5 records for review" in stdout
    marked = [r for r in server.records(meta["id"]) if (r["metadata"] or {}).get("review") == "disagreement"]
    assert len(marked) == 5 and all(r["metadata"].get("topic") for r in marked)  # the rest of the metadata kept
    assert all(len({x["values"]["label"]["value"] for x in r["responses"]}) > 1 for r in marked)

    # A reviewer decides a tie: in pull's file and in every command's consensus.
    tie = marked[0]
    server.respond(tie["id"], {"label": {"value": LABELS[2]}}, "submitted", keys["lea-lead"])
    again = tmp_path / "again.parquet"
    assert run(capsys, "pull", *server_flags(server, ds), "--output", again, "--reviewers", "lea-lead")[0] == 0
    row = next(r for r in pq.read_table(again).to_pylist() if r["id"] == tie["external_id"])
    assert (row["annotation_labels"], row["annotation_agent"]) == ([LABELS[2]], "lea-lead")
    reviewed = load(str(again), reviewers=("lea-lead",))
    assert dict(zip(reviewed.ids, reviewed.gold))[tie["external_id"]] == LABELS[2]


def test_team_bad_input_is_one_line(argilla2, tmp_path, ray_local, capsys):
    server = argilla2
    team_of(server)
    out = tmp_path / "out"
    make_output(out, 10)
    flags = server_flags(server, "team_bad")
    code, _, err = run(capsys, "log", "--input", out, *flags, "--min-submitted", 0)
    assert code == 2 and one_line(err) and "--min-submitted must be >= 1" in err
    assert server.dataset("team_bad") is None  # nothing was created
    assert run(capsys, "log", "--input", out, *flags)[0] == 0
    code, _, err = run(capsys, "pull", *flags, "--output", tmp_path / "p.parquet", "--reviewers", "nobody-here")
    assert code == 2 and one_line(err) and "nobody-here" in err and not (tmp_path / "p.parquet").exists()
    assert server.api_key not in err


def test_agreement_and_consensus_bad_input(tmp_path, capsys):
    """No responses, an unknown reviewer, no responses column: one line each, nothing written."""
    import pyarrow as pa

    from zs_ray.servers.pull import SCHEMA

    row = {"id": "r1", "text": "t", "inputs": [("text", "t")], "prediction_labels": [LABELS[0]],
           "prediction_scores": [0.9], "prediction_agent": "m", "annotation_labels": None, "annotation_agent": None,
           "status": "Default", "multi_label": False, "metadata": [], "responses": []}
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), empty)
    answered = tmp_path / "answered.parquet"
    pq.write_table(pa.Table.from_pylist([{**row, "status": "Validated", "responses": [
        {"annotator": "ana", "labels": [LABELS[0]], "status": "submitted"}]}], schema=SCHEMA), answered)
    old = tmp_path / "old.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA).drop(["responses"]), old)
    for args, expect in [
        (("agreement", "--input", empty, "--output", tmp_path / "a"), "holds no responses that count"),
        (("agreement", "--input", answered, "--output", tmp_path / "a", "--reviewers", "zed"), "--reviewers zed"),
        (("agreement", "--input", old, "--output", tmp_path / "a"), "no column(s) responses"),
        (("agreement", "--input", answered, "--output", tmp_path / "a", "--review", 3), "--rubrix-dataset"),
        (("evaluate", "--input", answered, "--output", tmp_path / "e", "--reviewers", "zed"), "--reviewers zed"),
        (("evaluate", "--input", answered, "--output", tmp_path / "e", "--consensus", "vote"), "consensus"),
    ]:
        code, _, err = run(capsys, *args)
        assert code == 2 and one_line(err) and expect in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()


def test_every_command_takes_the_consensus(tmp_path):
    """thresholds (as evaluate, tune, train: ``workflow.data.load``) and audit count the same consensus: ties left
    out, a reviewer deciding."""
    import pyarrow as pa

    from zs_ray.servers.pull import SCHEMA
    from zs_ray.workflow.audit import answers
    from zs_ray.workflow.bulk_adapters import Rec
    from zs_ray.workflow.config import AuditConfig, ThresholdsConfig
    from zs_ray.workflow.data import load
    from zs_ray.workflow.thresholds import thresholds

    votes = {}
    for i in range(30):
        if i < 20:
            v = [("a", LABELS[0]), ("b", LABELS[0] if i % 3 else LABELS[1]), ("c", LABELS[1])]
        elif i < 25:  # the majority says LABELS[0], the reviewer LABELS[1]
            v = [("a", LABELS[0]), ("b", LABELS[0]), ("lead", LABELS[1])]
        else:  # a tie
            v = [("a", LABELS[0]), ("c", LABELS[1])]
        votes[f"r{i}"] = v
    rows = [{"id": rid, "text": "t", "inputs": [("text", "t")], "prediction_labels": [LABELS[0]],
             "prediction_scores": [0.5 + i / 100], "prediction_agent": "m", "annotation_labels": None,
             "annotation_agent": None, "status": "Validated", "multi_label": False, "metadata": [],
             "responses": [{"annotator": a, "labels": [x], "status": "submitted"} for a, x in v]}
            for i, (rid, v) in enumerate(votes.items())]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    plain = thresholds(ThresholdsConfig(input=str(path)))
    assert plain["labelled"] == 25 and any("5 records unresolved" in n for n in plain["left_out"])
    by_ds = thresholds(ThresholdsConfig(input=str(path), consensus="dawid-skene"))
    assert by_ds["labelled"] == 30 and not any("unresolved" in n for n in by_ds["left_out"])
    gold = dict(zip(*(lambda d: (d.ids, d.gold))(load(str(path)))))
    led = dict(zip(*(lambda d: (d.ids, d.gold))(load(str(path), reviewers=("lead",)))))
    assert (gold["r1"], gold["r3"], gold["r21"], gold["r27"]) == (LABELS[0], LABELS[1], LABELS[0], None)
    assert (led["r1"], led["r21"], led["r27"]) == (LABELS[0], LABELS[1], None)

    recs = {rid: Rec(rid, LABELS[0], 0.9, True, None, None, "Validated", {"responses": [
        {"user": a, "status": "submitted", "values": {"label": {"value": x}}} for a, x in v]})
        for rid, v in votes.items()}
    by_majority = answers(recs, AuditConfig(), {"zs-ray-bulk"})
    by_lead = answers(recs, AuditConfig(reviewers=["lead"]), {"zs-ray-bulk"})
    by_ds_audit = answers(recs, AuditConfig(consensus="dawid-skene"), {"zs-ray-bulk"})
    assert (by_majority["r1"], by_majority["r3"], by_majority["r21"], by_majority["r27"]) == \
        (LABELS[0], LABELS[1], LABELS[0], None)
    assert (by_lead["r21"], by_lead["r27"]) == (LABELS[1], None)
    assert all(by_ds_audit[r] is not None for r in votes)
    assert answers(recs, AuditConfig(), {"a"})["r25"] == LABELS[1]  # a bulk agent's answer is not a person's


def test_one_annotation_servers_refuse_overlap_in_one_line(tmp_path, capsys, ray_local):
    from tests.rubrix_server import RubrixTestServer

    out = tmp_path / "out"
    make_output(out, 10)
    with RubrixTestServer("argilla-1.4") as srv:
        code, _, err = run(capsys, "log", "--input", out, "--rubrix-dataset", "team_v1", "--rubrix-api-url", srv.url,
                           "--rubrix-workspace", "rubrix", "--min-submitted", 2)
        assert code == 2 and one_line(err) and "keeps one annotation per record" in err
        assert not srv.records("team_v1")
        code, _, err = run(capsys, "log", "--input", out, "--rubrix-dataset", "team_v1", "--rubrix-api-url", srv.url,
                           "--rubrix-workspace", "rubrix", "--min-submitted", 1)
        assert code == 0, err


def test_agreement_of_a_multi_label_team(tmp_path, capsys):
    """A set is one answer overall; each label is measured as yes/no; the report opens (its plot embedded)."""
    import pyarrow as pa

    from zs_ray.servers.pull import SCHEMA

    rng = random.Random(3)
    rows = []
    for i in range(40):
        truth = sorted(rng.sample(LABELS[:3], 2))
        sets = {"a": truth, "b": truth if i % 4 else truth[:1], "c": sorted(rng.sample(LABELS[:3], 1))}
        rows.append({"id": f"m{i}", "text": "t", "inputs": [("text", "t")], "prediction_labels": LABELS[:3],
                     "prediction_scores": [0.8, 0.6, 0.1], "prediction_agent": "m", "annotation_labels": None,
                     "annotation_agent": None, "status": "Validated", "multi_label": True, "metadata": [],
                     "responses": [{"annotator": a, "labels": s, "status": "submitted"} for a, s in sets.items()]})
    path = tmp_path / "multi.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    code, stdout, _ = run(capsys, "agreement", "--input", path, "--output", tmp_path / "m", "--bootstrap", 50)
    assert code == 0
    got = json.loads((tmp_path / "m" / "agreement.json").read_text())
    assert got["multi_label"] and set(got["per_label"]) == set(LABELS[:3])
    # label 0 and 1: yes/no per label; a and b agree on every label in 3 of 4 records
    assert all(v["krippendorff_alpha"] is not None for v in got["per_label"].values())
    assert got["annotators"]["a"]["agreement_with_others"] > got["annotators"]["c"]["agreement_with_others"]
    html = (tmp_path / "m" / "report.html").read_text()
    assert "Krippendorff" in html and "<script" not in html and 'src="http' not in html
    open_offline(tmp_path / "m" / "report.html", tmp_path, images=1)
