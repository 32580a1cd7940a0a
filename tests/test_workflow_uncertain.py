"""Round 2: the uncertainty queue is the brute-force most uncertain records per predicted label, stable across
partitioning and batches; thresholds' "more labels" against a brute-force scan of the same bound; --log-only
sends exactly the chosen records and a later `zs-ray log` exactly the rest, once (1.x test server, real 2.8)."""

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.output import MANIFEST, open_output, uncertainty
from zs_ray.servers import log_output
from zs_ray.workflow.config import RubrixConfig
from zs_ray.workflow.sample import SAMPLE_KEY, make_rule, sample_key, share
from zs_ray.workflow.thresholds import lower_bound, more_needed
from zs_ray.workflow.uncertain import UNCERTAIN_KEY, make_uncertain_rule, queue

DS = "zeroshot_queue"


def repartition(src, dst, files, seed, round_to=None):
    """The same rows as ``src`` in another order and number of files (scores rounded: many ties)."""
    table = pq.read_table(sorted(src.glob("part-*.parquet")))
    if round_to is not None:
        scores = [None if s is None else [round(x, round_to) for x in s] for s in table.column("scores").to_pylist()]
        table = table.set_column(table.schema.get_field_index("scores"), "scores",
                                 pa.array(scores, pa.list_(pa.float64())))
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    table = table.take(order)
    dst.mkdir()
    per = -(-table.num_rows // files)
    for f in range(files):
        pq.write_table(table.slice(f * per, per), dst / f"part-{f:03d}.parquet")
    (dst / MANIFEST).write_text((src / MANIFEST).read_text())
    return table


def brute_force(table, n, by, seed, multi_label=False):
    """Per predicted label, rows sorted by (margin | -entropy, sample key), the first share(n) of each."""
    rows = [r for r in table.select(["id", "scores", "prediction"]).to_pylist() if r["prediction"] is not None]
    margins, entropies = uncertainty([r["scores"] for r in rows], multi_label)
    key = margins if by == "margin" else [-e for e in entropies]
    per: dict = {}
    for r, k in zip(rows, key):
        per.setdefault(r["prediction"], []).append((k, sample_key(seed, r["id"]), r["id"]))
    quota = share(n, {lab: len(v) for lab, v in per.items()})
    return {lab: [i for _, _, i in sorted(v)[:quota[lab]]] for lab, v in per.items() if quota[lab]}


@pytest.mark.parametrize("by,round_to", [("margin", None), ("margin", 1), ("entropy", 2)])
def test_queue_is_the_brute_force_most_uncertain_per_label_and_stable(tmp_path, by, round_to):
    make_output(tmp_path / "a", 700)
    table = repartition(tmp_path / "a", tmp_path / "b", files=5, seed=1, round_to=round_to)
    if round_to is not None:  # the reference is the rounded rows too
        repartition(tmp_path / "b", tmp_path / "c", files=1, seed=2)
    first, second = (tmp_path / "b", tmp_path / "c") if round_to is not None else (tmp_path / "a", tmp_path / "b")
    rule = make_uncertain_rule(open_output(str(first)), 90, by, 7, "round-2")
    again = make_uncertain_rule(open_output(str(second)), 90, by, 7, "round-2")  # other files, order
    assert rule.ids == again.ids and len(rule.ids) == 90
    expected = brute_force(table, 90, by, 7)
    assert rule.ids == {i for ids in expected.values() for i in ids}
    assert rule.by_label == {lab: len(v) for lab, v in expected.items()} and set(rule.by_label.values()) == {15}
    for size in (1, 7, 64):  # any batching gives the same queue, in the same order per label
        got, _ = queue(table.to_batches(max_chunksize=size), 90, by, 7, False)
        assert got == expected
    if round_to == 1:  # ties everywhere: the seed decides among them, and the queue is stable per seed
        other = make_uncertain_rule(open_output(str(first)), 90, by, 8, "round-2")
        assert other.ids != rule.ids and other.ids == {i for v in brute_force(table, 90, by, 8).values() for i in v}


@pytest.mark.parametrize("multi_label", [False, True])
def test_uncertainty_of_a_whole_batch_equals_row_by_row(multi_label):
    """output.uncertainty computes rows of equal width all at once: exactly the values of the row-by-row path
    (a row without a prediction forces that path), so batching never changes a tie."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3000, 6))
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True) if not multi_label else 1 / (1 + np.exp(-logits))
    rows = (-np.sort(-scores, axis=1)).round(3).tolist()  # rounded: ties and zeros
    whole = uncertainty(rows, multi_label)
    one_by_one = uncertainty(rows + [None], multi_label)
    assert whole[0] == one_by_one[0][:-1] and whole[1] == one_by_one[1][:-1]


def test_queue_is_nested_in_n_and_short_labels_give_the_rest(tmp_path):
    make_output(tmp_path / "a", 300)
    out = open_output(str(tmp_path / "a"))
    small, big = (make_uncertain_rule(out, n, "margin", 0, "q") for n in (30, 60))
    assert small.ids < big.ids
    everything = make_uncertain_rule(out, 10_000, "margin", 0, "q")
    assert len(everything.ids) == 300 - 6  # every predicted row (6 have no text), however large N is


def test_more_labels_is_the_brute_force_count():
    for k, n, target in [(9, 10, 0.8), (40, 42, 0.9), (5, 5, 0.9), (95, 100, 0.9), (181, 200, 0.9), (30, 30, 0.95)]:
        p, size = k / n, n
        while lower_bound(p * size, size, 0.95) < target:  # brute force: one more label at a time
            size += 1
        assert more_needed(k, n, target, 0.95) == size - n, (k, n, target)
    assert more_needed(5, 5, 0.9, 0.95) == 29 - 5  # all correct: the m of "too few labels"
    assert more_needed(0, 0, 0.9, 0.95) == 29
    assert more_needed(90, 100, 0.9, 0.95) is None and more_needed(80, 100, 0.9, 0.95) is None


def test_thresholds_reports_more_labels(tmp_path, capsys):
    from tests.test_workflow_thresholds import synthetic, write
    from zs_ray.cli import main
    from zs_ray.workflow.config import ThresholdsConfig
    from zs_ray.workflow.thresholds import _scan, thresholds

    pred, score, gold, labelled = synthetic(3000, seed=4, labelled=260)  # x, y calibrated; z right half the time
    write(tmp_path / "p.parquet", pred, score, gold, labelled)
    res = thresholds(ThresholdsConfig(input=str(tmp_path / "p.parquet"), target_precision=0.97))
    statuses = {lab: r["more_labels"]["status"] for lab, r in res["labels"].items()}
    for lab, r in res["labels"].items():
        if r["threshold"] is not None:
            assert r["more_labels"] == {"status": "enough", "count": 0}
            continue
        mine = labelled & (pred == lab)
        n, k, t, _ = _scan(score[mine], gold[mine] == lab, 0.95)  # every candidate threshold, brute force:
        best = None
        for ni, ki, ti in zip(n, k, t):
            if ki / ni <= 0.97:
                continue
            sizes = np.arange(ni, ni + 5000)  # one more label at a time (the fewest is well within this)
            passed = np.nonzero(lower_bound(ki / ni * sizes, sizes, 0.95) >= 0.97)[0]
            if passed.size and (best is None or passed[0] <= best[0]):
                best = (passed[0], ti, ni)
        more = r["more_labels"]
        if best is None:
            assert more["status"] == "cannot reach" and more["count"] is None
        else:
            assert (more["status"], more["count"], more["at_threshold"], more["labelled_above"]) == ("more", *best)
    assert "more" in statuses.values()
    assert main(["thresholds", "--input", str(tmp_path / "p.parquet"), "--target-precision", "0.97"]) == 0
    table = capsys.readouterr().out
    assert "more labels" in table and "(score >= " in table
    from zs_ray.workflow.thresholds import more_labels

    assert more_labels([0.9, 0.8, 0.7], [False, True, True], 0.9, 0.95, False)["status"] == "cannot reach"
    assert more_labels([], [], 0.9, 0.95, False)["count"] == 29


def chosen_ids(out_dir, sample, uncertain, thresholds, seed, logged):
    """What --log-only sample,uncertain,above-threshold must send, computed from the output's rows."""
    table = pq.read_table(sorted(out_dir.glob("part-*.parquet")), columns=["id", "prediction", "score"]).to_pylist()
    every = [r["id"] for r in table]
    rule = make_rule(str(sample), seed, "round-1", every)
    in_sample = {i for i in every if rule.contains(i)}
    queue_ids = make_uncertain_rule(open_output(str(out_dir)), uncertain, "margin", seed, "round-2").ids
    above = {r["id"] for r in table if r["prediction"] is not None and r["score"] >= thresholds.get(r["prediction"], 2)}
    return (in_sample | queue_ids | above) & set(logged), in_sample & set(logged), set(queue_ids)


def thresholds_file(path):
    path.write_text(json.dumps({"labels": {"política": {"threshold": 0.5}, "deportes": {"threshold": 0.6},
                                           "cultura": {"threshold": None, "status": "too few labels (3, need 29)"}}}))
    return {"política": 0.5, "deportes": 0.6}


@pytest.fixture
def bars(monkeypatch):
    """(total, count) of every progress bar ``log_output`` draws, as it closes (drawn to a string here)."""
    import io

    import tqdm.auto

    closed = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})

        def close(self):
            if not self.disable:  # closed once (close sets disable)
                closed.append((self.total, self.n))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    return closed


def test_log_only_then_log_sends_the_rest_once_1x(tmp_path, ray_local, bars):
    out = tmp_path / "out"
    logged = make_output(out, 400)
    values = thresholds_file(tmp_path / "t.json")
    want, sample, queued = chosen_ids(out, 25, 30, values, 3, logged)
    with RubrixTestServer("argilla-1.29") as srv:
        base = dict(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", sample_seed=3)
        first = log_output(out, RubrixConfig(**base, sample="25", uncertain=30, thresholds=str(tmp_path / "t.json"),
                                             log_only=["sample,uncertain,above-threshold"]))
        assert first.ok and first.sent == len(want) and first.held_back == len(logged) - len(want)
        assert bars[-1] == (len(want), len(want))  # the bar's total: what is sent, not the held-back records
        recs = srv.records(DS)
        assert set(recs) == want and 60 < len(want) < len(logged)
        assert {i for i, r in recs.items() if r["metadata"].get(SAMPLE_KEY) == "round-1"} == sample
        assert {i for i, r in recs.items() if r["metadata"].get(UNCERTAIN_KEY) == "round-2"} == queued
        both = sample & queued
        assert all(recs[i]["metadata"][SAMPLE_KEY] == "round-1" for i in both)  # both marks where both apply
        person = sorted(sample)[0]
        srv.annotate(DS, person, ["cultura"])
        again = log_output(out, RubrixConfig(**base, sample="25", uncertain=30, thresholds=str(tmp_path / "t.json"),
                                             log_only=["sample", "uncertain", "above-threshold"]))
        assert again.ok and again.sent == 0 and again.already_acked == len(want)  # the same selection: nothing new
        assert bars[-1] == (len(want), len(want))  # all of them acknowledged before: full from the start
        rest = log_output(out, RubrixConfig(**base))  # later, without --log-only: exactly the rest, once
        assert rest.ok and rest.sent == len(logged) - len(want) and rest.already_acked == len(want)
        assert rest.held_back == 0 and rest.already_on_server == 0
        assert bars[-1] == (len(logged), len(logged))
        recs = srv.records(DS)
        assert sorted(recs) == sorted(logged)  # every predicted row once
        assert all(UNCERTAIN_KEY not in recs[i]["metadata"] and SAMPLE_KEY not in recs[i]["metadata"]
                   for i in set(logged) - want)
        assert recs[person]["annotation"]["labels"][0]["class"] == "cultura" and recs[person]["status"] == "Validated"


def test_log_only_then_log_sends_the_rest_once_argilla2(argilla2, tmp_path, ray_local):
    out = tmp_path / "out"
    logged = make_output(out, 300)
    want, sample, queued = chosen_ids(out, 20, 24, {}, 5, logged)
    base = dict(rubrix_dataset="queue_v2", rubrix_api_url=argilla2.url, rubrix_api_key=argilla2.api_key,
                rubrix_workspace="argilla", rubrix_backoff=0.05, sample_seed=5)
    first = log_output(out, RubrixConfig(**base, sample="20", uncertain=24, log_only=["sample,uncertain"],
                                         chunk_size=7))
    assert first.ok and first.sent == len(want) and first.held_back == len(logged) - len(want)
    meta = argilla2.dataset("queue_v2")
    recs = {r["external_id"]: r for r in argilla2.records(meta["id"])}
    assert set(recs) == want == sample | queued
    assert {i for i, r in recs.items() if r["metadata"].get(UNCERTAIN_KEY) == "round-2"} == queued
    assert {i for i, r in recs.items() if r["metadata"].get(SAMPLE_KEY) == "round-1"} == sample
    props = argilla2.api("GET", f"/api/v1/me/datasets/{meta['id']}/metadata-properties")["items"]
    assert {p["name"]: p["settings"]["type"] for p in props}[UNCERTAIN_KEY] == "terms"
    rest = log_output(out, RubrixConfig(**base))
    assert rest.ok and rest.sent == len(logged) - len(want) and rest.already_acked == len(want)
    ext = [r["external_id"] for r in argilla2.records(meta["id"])]
    assert sorted(ext) == sorted(logged)  # every predicted row exactly once


def test_annotate_with_the_queue_logs_after_writing_and_log_sends_the_rest(tmp_path, mlsum_dir, nli_model,
                                                                          ray_local, capsys):
    """annotate --uncertain --log-only: the queue is known once every row is scored, so it logs in the last pass;
    `zs-ray log` (the CLI) sends the rest."""
    from zs_ray.cli import main

    out = tmp_path / "out"
    with RubrixTestServer("argilla-1.29") as srv:
        server = ["--rubrix-dataset", DS, "--rubrix-api-url", srv.url, "--rubrix-workspace", "rubrix"]
        code = main(["annotate", "--dataset", mlsum_dir, "--config", "es", "--split", "test[0:120]", "--model",
                     nli_model,
                     "--output", str(out), "--precision", "fp32", "--num-workers", "1", *server,
                     "--uncertain", "18", "--uncertain-by", "entropy", "--log-only", "uncertain"])
        assert code == 0
        queued = make_uncertain_rule(open_output(str(out)), 18, "entropy", 0, "round-2").ids
        assert set(srv.records(DS)) == queued and len(queued) == 18
        assert "held back by --log-only" in capsys.readouterr().out
        assert main(["log", "--input", str(out), *server]) == 0
        predicted = {r["id"] for r in pq.read_table(out, columns=["id", "prediction"]).to_pylist() if r["prediction"]}
        assert set(srv.records(DS)) == predicted and len(predicted) > 100


def test_annotate_log_only_live_sends_the_sample_and_what_is_above_threshold(tmp_path, mlsum_dir, nli_model,
                                                                           ray_local):
    """Without --uncertain, annotate logs while it writes: only the sample (from the read plan) and the records
    of labels whose threshold they reach."""
    from zs_ray.config import AnnotateConfig
    from zs_ray.pipeline import annotate

    out = tmp_path / "out"
    (tmp_path / "t.json").write_text(json.dumps({"labels": {"cultura": {"threshold": 0.0},
                                                            "deportes": {"threshold": 0.0}}}))
    with RubrixTestServer("argilla-1.29") as srv:
        cfg = RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", sample="15",
                           sample_seed=2, log_only=["sample,above-threshold"], thresholds=str(tmp_path / "t.json"))
        summary = annotate(AnnotateConfig(dataset=mlsum_dir, config="es", split="test[0:120]", model=nli_model,
                                          output=str(out), precision="fp32", num_workers="1"), cfg)
        rows = pq.read_table(out, columns=["id", "prediction"]).to_pylist()
        every = [f"es-test-{i:07d}" for i in range(120)]
        rule = make_rule("15", 2, "round-1", every)
        want = {r["id"] for r in rows if r["prediction"] and (rule.contains(r["id"]) or r["prediction"] in
                                                              ("cultura", "deportes"))}
        assert summary.log.ok and set(srv.records(DS)) == want and 15 <= len(want) < len(rows) - 20
        assert summary.log.held_back == sum(1 for r in rows if r["prediction"]) - len(want)


@pytest.mark.parametrize("flags,expect", [
    (["--log-only", "sample"], "--log-only sample needs --sample"),
    (["--log-only", "uncertain,everything"], "--log-only takes sample, uncertain, above-threshold"),
    (["--sample", "10", "--log-only", "above-threshold", "--thresholds", "{t}"], "needs sample among the subsets"),
    (["--thresholds", "{t}"], "--thresholds is for --log-only above-threshold"),
    (["--log-only", "above-threshold", "--thresholds", "{missing}"], "cannot read --thresholds"),
    (["--uncertain", "0"], "--uncertain must be a count"),
    (["--uncertain-by", "variance"], "invalid choice"),
])
def test_bad_queue_and_log_only_settings(tmp_path, capsys, flags, expect):
    from zs_ray.cli import main

    thresholds_file(tmp_path / "t.json")
    flags = [f.format(t=tmp_path / "t.json", missing=tmp_path / "no.json") for f in flags]
    assert main(["log", "--input", str(tmp_path), "--rubrix-dataset", DS, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and "\n" not in err and "Traceback" not in err
    with pytest.raises(ZsRayError):
        RubrixConfig(rubrix_dataset=DS, uncertain=5, log_only="sample")
