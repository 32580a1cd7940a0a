"""The README's walk-through, command by command, on the Rubrix / Argilla 1.x test server (a version that
takes bulk labels, 1.4): the server gets the round-1 sample only, then what is above the thresholds (bulk-
labelled, with an audit sample kept for people), then the round-2 queue, then the rest; every record reaches it
exactly once, every mark where it belongs, and no person's answer is touched."""

import json

from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray.cli import main
from zs_ray.servers.config import SAMPLE_KEY, UNCERTAIN_KEY

DS = "zeroshot_noticias"


def test_readme_walk_through_sends_each_subset_once_and_keeps_answers(tmp_path, capsys, ray_local):
    out = tmp_path / "mlsum-es"
    ids = make_output(out, 400)
    with RubrixTestServer("argilla-1.4") as srv:
        server = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-workspace", "rubrix"]
        log = ["log", "--input", str(out), *server]

        # 1. only the seeded sample is sent
        assert main([*log, "--sample", "40", "--sample-seed", "1", "--log-only", "sample"]) == 0
        sample = set(srv.records(DS))
        assert len(sample) == 40
        assert all(r["metadata"][SAMPLE_KEY] == "round-1" for r in srv.records(DS).values())
        # 2. people label it (their answers must survive everything that follows)
        for i in sorted(sample)[:30]:
            srv.annotate(DS, i, ["cultura"], agent="ana")
        answered = {i: json.dumps(srv.records(DS)[i], sort_keys=True) for i in sorted(sample)[:30]}
        assert main(["pull", *server, "--output", str(tmp_path / "round1.parquet")]) == 0

        # 4.-5. thresholds (written as `zs-ray thresholds` writes them), the records above them sent and bulk-labelled
        labels = ["política", "deportes"]
        (tmp_path / "t.json").write_text(json.dumps({"target_precision": 0.7, "confidence": 0.9, "labels": {
            lab: {"threshold": 0.3, "precision": 1.0} for lab in labels}}))
        assert main([*log, "--log-only", "above-threshold", "--thresholds", str(tmp_path / "t.json")]) == 0
        recs = srv.records(DS)
        above = set(recs) - sample
        assert above and all(r["prediction"]["labels"][0]["class"] in labels for i, r in recs.items() if i in above)
        undo = ["--undo-file", str(tmp_path / "u.jsonl")]
        assert max(srv.writes[DS].values()) == 1  # each record sent once so far
        assert main(["bulk-label", "--thresholds", str(tmp_path / "t.json"), *server, *undo, "--apply"]) == 0
        after_bulk = dict(srv.writes[DS])
        assert main(["audit", *server, *undo, "--output", str(tmp_path / "audit.json")]) == 0
        recs = srv.records(DS)
        bulk = {i for i, r in recs.items() if (r.get("annotation") or {}).get("agent") == "zs-ray-bulk"}
        audit = {i for i, r in recs.items() if r["metadata"].get("zs_ray_audit") == "audit"}
        assert bulk and audit and not bulk & set(answered) and not audit & bulk

        # 6. the round-2 queue, then the rest: each record once
        assert main([*log, "--uncertain", "25", "--log-only", "uncertain"]) == 0
        recs = srv.records(DS)
        queued = {i for i, r in recs.items() if r["metadata"].get(UNCERTAIN_KEY) == "round-2"}
        assert 0 < len(queued) <= 25 and not queued & (sample | above)
        assert main(log) == 0
        recs = srv.records(DS)
        assert sorted(recs) == sorted(ids)
        new = {i: n - after_bulk.get(i, 0) for i, n in srv.writes[DS].items()}
        assert {i for i, n in new.items() if n} == set(ids) - sample - above and set(new.values()) <= {0, 1}
        assert all(json.dumps(recs[i], sort_keys=True) == a for i, a in answered.items())
        assert all(recs[i]["annotation"]["agent"] == "zs-ray-bulk" for i in bulk)
    capsys.readouterr()
