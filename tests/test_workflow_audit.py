"""The audit after bulk-label, on the Rubrix / Argilla 1.x test server and the real argilla-server 2.8:
``bulk-label --apply`` keeps a seeded sample per label out of the bulk labels and marks it for a person;
people answer it through the server's API (with planted wrong answers for one label); ``zs-ray audit`` finds
that label failing and the others passing; ``--undo-failing`` takes back exactly that label's bulk labels and
nothing else (other labels' bulk labels, every person's answer, every mark: unchanged)."""

import copy
import json

import numpy as np
import pytest

from tests.rubrix_server import RubrixTestServer, make_output
from tests.test_workflow_bulk import DS, put_records, top
from zs_ray.cli import main
from zs_ray.workflow.audit_plan import audit_size, power
from zs_ray.workflow.sample import sample_key
from zs_ray.workflow.thresholds import lower_bound, needed

MARK = "zs_ray_audit"


def expected_audit(candidates: dict, n: int, seed: int = 0) -> set:
    """Per label, the n candidates with the smallest seeded keys (the round-1 sample's hash)."""
    return {i for ids in candidates.values() for i in sorted(ids, key=lambda i: (sample_key(seed, i), i))[:n]}


def test_audit_size_is_the_smallest_with_the_power():
    assert audit_size(1.0, 0.9, 0.95, 0.8, 10_000) == needed(0.9, 0.95) == 29
    for p, target, conf, want in [(0.95, 0.9, 0.95, 0.8), (0.97, 0.9, 0.95, 0.5), (0.9, 0.8, 0.9, 0.8)]:
        n = audit_size(p, target, conf, want, 10_000)
        assert power(n, p, target, conf) >= want and all(power(np.arange(1, n), p, target, conf) < want)
        # the power is what it says: the share of Bin(n, p) outcomes whose lower bound reaches the target
        k = np.arange(n + 1)
        from scipy.stats import binom
        assert abs(binom.pmf(k, n, p)[lower_bound(k, n, conf) >= target].sum() - float(power(n, p, target, conf))) < 1e-9
    assert audit_size(0.95, 0.9, 0.95, 0.8, 40) == 40  # too few records for the power: all of them
    assert audit_size(0.85, 0.9, 0.95, 0.8, 500) == 500  # below the target: never passes


@pytest.mark.parametrize("mode", ["rubrix-0.18", "argilla-1.4"])
def test_audit_and_undo_failing_on_1x(mode, tmp_path, capsys):
    with RubrixTestServer(mode) as srv:
        ids = put_records(srv, tmp_path / "out", 300)
        srv.annotate(DS, ids[0], ["cultura"], agent="ana")  # a person's earlier work
        labels = ["política", "deportes", "economía", "cultura"]
        # target 0.7 at 90%, estimated precision 1.0: the audit takes needed(0.7, 0.9) = 7 records per label
        (tmp_path / "t.json").write_text(json.dumps({"target_precision": 0.7, "confidence": 0.9, "labels": {
            lab: {"threshold": 0.25, "precision": 1.0} for lab in labels}}))
        base = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-workspace", "rubrix",
                "--undo-file", str(tmp_path / "u.jsonl")]
        bulk = ["bulk-label", "--thresholds", str(tmp_path / "t.json"), "--chunk-size", "9", *base]
        audit = ["audit", *base]

        # bad input: an audit before any bulk-label is one line, before anything is read
        assert main(audit) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no undo file" in err[0] and "bulk-label --apply" in err[0]

        before = copy.deepcopy(srv.records(DS))
        cand = {lab: {i for i, r in before.items() if i != ids[0] and top(r)[0] == lab and top(r)[1] >= 0.25}
                for lab in labels}
        assert all(len(c) > 10 for c in cand.values())
        marked = expected_audit(cand, 7)
        assert main(bulk) == 0 and "would mark 28 for audit" in capsys.readouterr().out  # the dry run
        assert srv.records(DS) == before

        assert main(bulk + ["--apply"]) == 0
        out = capsys.readouterr().out
        assert f"annotated {sum(map(len, cand.values())) - 28} records" in out and "marked 28 for audit" in out
        now = srv.records(DS)
        assert {i for i, r in now.items() if (r.get("metadata") or {}).get(MARK)} == marked
        for i in marked:  # kept for a person: no annotation, status Default, only the mark added
            assert now[i]["metadata"][MARK] == "audit" and "annotation" not in now[i]
            assert {**now[i], "metadata": before[i]["metadata"]} == before[i]
        bulk_ids = {i for i, r in now.items() if (r.get("annotation") or {}).get("agent") == "zs-ray-bulk"}
        assert bulk_ids == set().union(*cand.values()) - marked
        applied = copy.deepcopy(now)
        assert main(bulk + ["--apply"]) == 0  # again: nothing to do, the same marks
        assert "annotated 0 records" in capsys.readouterr().out and srv.records(DS) == applied

        # people answer the audit: deportes 3 of 7 wrong, economía 4 of 7 answered, the others all right
        audit_of = {lab: sorted(marked & cand[lab]) for lab in labels}
        for lab, recs in audit_of.items():
            for j, i in enumerate(recs):
                if lab == "deportes":
                    srv.annotate(DS, i, ["sociedad" if j < 3 else lab], agent="eva")
                elif lab != "economía" or j < 4:
                    srv.annotate(DS, i, [lab], agent="eva")
        corrected = sorted(bulk_ids & cand["deportes"])[0]  # a person corrects one deportes bulk label
        srv.annotate(DS, corrected, ["sociedad"], agent="luis")
        people = copy.deepcopy(srv.records(DS))

        assert main(audit + ["--output", str(tmp_path / "audit.json")]) == 0
        printed = capsys.readouterr().out
        result = json.loads((tmp_path / "audit.json").read_text())["labels"]
        assert {lab: r["status"] for lab, r in result.items()} == {
            "cultura": "pass", "deportes": "fail", "economía": "not enough answers (4 of 7)", "política": "pass"}
        assert (result["deportes"]["audited"], result["deportes"]["answered"], result["deportes"]["correct"]) == (7, 7, 4)
        assert result["política"]["lower_bound"] == pytest.approx(0.1 ** (1 / 7))
        assert result["deportes"]["bulk_labels"] == len(cand["deportes"]) - 7
        assert "deportes" in printed and srv.records(DS) == people  # reading changes nothing

        assert main(audit + ["--undo-failing"]) == 0
        assert "--undo-failing: deportes" in capsys.readouterr().out
        now = srv.records(DS)
        changed = {i for i in now if now[i] != people[i]}
        assert changed == (bulk_ids & cand["deportes"]) - {corrected}
        for i in changed:  # exactly as before the apply
            assert now[i] == before[i]
        assert main(audit + ["--undo-failing"]) == 0  # again: nothing left to take back
        assert "0 bulk labels taken back" in capsys.readouterr().out and srv.records(DS) == now

        # the full undo takes back the rest: other bulk labels and the marks nobody answered; answers stay
        assert main(["bulk-label", *base, "--undo"]) == 0
        final = srv.records(DS)
        answered = {i for i in marked if people[i].get("annotation")} | {corrected, ids[0]}
        assert {i: r for i, r in final.items() if i not in answered} == \
            {i: r for i, r in before.items() if i not in answered}
        assert all(final[i] == people[i] for i in answered)


def test_audit_bad_input(tmp_path, capsys):
    (tmp_path / "u.jsonl").write_text(json.dumps({"run": "r", "id": "x", "before": {}, "label": "deportes",
                                                  "agent": "zs-ray-bulk", "status": "Validated"}) + "\n")
    for args, expect in [(["--undo-file", str(tmp_path / "u.jsonl")], "no record was marked for audit"),
                         (["--undo-file", str(tmp_path / "none.jsonl")], "no undo file")]:
        assert main(["audit", "--rubrix-dataset", DS, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0]
    assert main(["bulk-label", "--rubrix-dataset", DS, "--threshold", "deportes=0.5", "--audit-size", "3"]) == 2
    assert "--audit-size needs --thresholds" in capsys.readouterr().err


def test_audit_and_undo_failing_on_argilla_2(tmp_path, argilla2, capsys):
    """The real argilla-server 2.8: the mark is a terms metadata property (zs_ray_audit) on a pending record;
    people answer with their own responses; --undo-failing deletes exactly the failing label's bulk responses."""
    from zs_ray.servers import log_output
    from zs_ray.workflow.config import RubrixConfig

    srv, ds = argilla2, "zs_audit"
    make_output(tmp_path / "out", 60)
    owner = dict(rubrix_api_url=srv.url, rubrix_workspace="argilla", rubrix_backoff=0.05)
    assert log_output(tmp_path / "out", RubrixConfig(rubrix_dataset=ds, rubrix_api_key=srv.api_key, **owner)).ok
    bot, eva = srv.create_user("zs-audit-bulk", role="admin"), srv.create_user("eva-audit")
    did = srv.dataset(ds)["id"]
    from collections import Counter

    preds = Counter(r["suggestions"][0]["value"] for r in srv.records(did)).most_common(3)
    labels = [lab for lab, _ in preds]  # the three labels with most records (>= 6 each)
    assert preds[2][1] >= 6
    first = min(srv.records(did), key=lambda r: r["external_id"])
    srv.respond(first["id"], {"label": {"value": "cultura"}}, "submitted", eva["api_key"])

    def state():
        return {r["external_id"]: (sorted((x["user_id"], x["status"], json.dumps(x.get("values"), sort_keys=True))
                                          for x in r.get("responses") or []), r.get("metadata") or {})
                for r in srv.records(did)}

    before = state()
    recs = {r["external_id"]: r for r in srv.records(did)}
    cand = {lab: {i for i, r in recs.items() if i != first["external_id"] and r["suggestions"][0]["value"] == lab}
            for lab in labels}
    # target 0.5 at 90%: 4 of 4 right passes (bound 0.56), 1 of 4 fails
    (tmp_path / "t.json").write_text(json.dumps({"target_precision": 0.5, "confidence": 0.9, "labels": {
        lab: {"threshold": 0.0, "precision": 1.0} for lab in labels}}))
    base = ["--rubrix-dataset", ds, "--rubrix-api-url", srv.url, "--rubrix-workspace", "argilla",
            "--rubrix-api-key", bot["api_key"], "--undo-file", str(tmp_path / "u.jsonl")]
    assert main(["bulk-label", "--thresholds", str(tmp_path / "t.json"), "--audit-size", "4", "--apply", *base]) == 0
    capsys.readouterr()
    applied = state()
    marked = expected_audit(cand, 4)
    assert {i for i, (_, meta) in applied.items() if meta.get(MARK) == "audit"} == marked
    for i in marked:  # pending, no response, only the mark added
        assert applied[i] == (before[i][0], {**before[i][1], MARK: "audit"})
    bulk_ids = {i for i, (resp, _) in applied.items() if resp and resp[0][0] == bot["id"]}
    assert bulk_ids == set().union(*cand.values()) - marked

    wrong, right, waiting = labels  # 3 of 4 answers wrong; all 4 right; 3 of 4 answered, right
    other = next(x for x in ["política", "economía", "cultura", "sociedad", "deportes", "tecnología"] if x != wrong)
    for lab in labels:
        for j, i in enumerate(sorted(marked & cand[lab])):
            if lab != waiting or j < 3:
                value = other if lab == wrong and j < 3 else lab
                srv.respond(recs[i]["id"], {"label": {"value": value}}, "submitted", eva["api_key"])
    people = state()
    assert main(["audit", *base, "--undo-failing", "--output", str(tmp_path / "audit.json")]) == 0
    result = json.loads((tmp_path / "audit.json").read_text())
    assert {lab: r["status"] for lab, r in result["labels"].items()} == {
        wrong: "fail", right: "pass", waiting: "not enough answers (3 of 4)"}
    assert result["undo_failing"]["restored"] == len(cand[wrong]) - 4
    now = state()
    changed = {i for i in now if now[i] != people[i]}
    assert changed == bulk_ids & cand[wrong]
    assert all(now[i] == before[i] for i in changed)
    assert main(["audit", *base, "--undo-failing"]) == 0 and state() == now  # again: nothing left to take back
    props = srv.api("GET", f"/api/v1/me/datasets/{did}/metadata-properties")["items"]
    assert any(p["name"] == MARK and p["settings"]["type"] == "terms" and p["visible_for_annotators"] for p in props)
    # the full undo: the other bulk responses and the one mark nobody answered go; the answers stay
    assert main(["bulk-label", "--undo", *base]) == 0
    answered = {i for i in marked if people[i][0] != applied[i][0]} | {first["external_id"]}
    assert len(answered) == 12 and state() == {i: people[i] if i in answered else before[i] for i in before}


def test_undo_failing_refused_on_an_upsert_server(tmp_path, capsys):
    """Argilla 1.7+ keeps the fields a re-sent record leaves out: the marks are written, the audit is read, but
    --undo-failing refuses (one line) before writing anything, as bulk-label --undo does."""
    with RubrixTestServer("argilla-1.29") as srv:
        put_records(srv, tmp_path / "out", 120)
        (tmp_path / "t.json").write_text(json.dumps({"target_precision": 0.5, "confidence": 0.9, "labels": {
            "deportes": {"threshold": 0.0, "precision": 1.0}}}))
        base = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-workspace", "rubrix",
                "--undo-file", str(tmp_path / "u.jsonl")]
        assert main(["bulk-label", "--thresholds", str(tmp_path / "t.json"), "--audit-size", "4", "--apply", *base]) == 0
        marked = [i for i, r in srv.records(DS).items() if r["metadata"].get(MARK) == "audit"]
        assert len(marked) == 4 and all("annotation" not in srv.records(DS)[i] for i in marked)
        for i in marked:
            srv.annotate(DS, i, ["cultura"], agent="eva")  # all wrong
        people = copy.deepcopy(srv.records(DS))
        capsys.readouterr()
        assert main(["audit", *base, "--undo-failing"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not available on this server" in err[0]
        assert srv.records(DS) == people
