"""Round 1: the seeded sample is the same records across re-runs, nested across N, stable across a larger run
of the same corpus, decided from the read plan before anything is sent, and marked in the records' metadata."""

import pytest

from tests.rubrix_server import RubrixTestServer, make_output
from zs_ray.errors import ZsRayError
from zs_ray.servers import log_output
from zs_ray.workflow.config import RubrixConfig
from zs_ray.workflow.sample import SAMPLE_KEY, make_rule, plan_ids, resolve_for_plan, share

DS = "zeroshot_noticias"


def ids(n, start=0):
    return [f"es-test-{i:07d}" for i in range(start, n)]


def members(rule, universe, preds=None):
    return {i for k, i in enumerate(universe) if rule.contains(i, preds[k] if preds else None)}


def test_count_sample_rerun_larger_n_and_larger_run():
    small = ids(1000)
    a = members(make_rule("50", 7, "round-1", small), small)
    assert len(a) == 50
    assert members(make_rule("50", 7, "round-1", list(reversed(small))), small) == a  # order does not matter
    assert members(make_rule("50", 8, "round-1", small), small) != a  # the seed does
    bigger_n = members(make_rule("120", 7, "round-1", small), small)
    assert len(bigger_n) == 120 and a < bigger_n  # a larger N: a superset
    large = ids(4000)  # a larger run of the same corpus: test[0:4000] after test[0:1000]
    b = members(make_rule("50", 7, "round-1", large), large)
    assert len(b) == 50 and (b & set(small)) <= a  # nothing new among the old rows
    scaled = members(make_rule("200", 7, "round-1", large), large)  # N scaled with the rows: about the same
    assert len(scaled & set(small)) == pytest.approx(50, abs=10) and len(a & scaled) >= 40  # (not a guarantee)


def test_fraction_sample_is_identical_on_shared_rows():
    small, large = ids(2000), ids(8000)
    a = members(make_rule("5%", 3, "round-1"), small)
    b = members(make_rule("5%", 3, "round-1"), large)
    assert b & set(small) == a and 60 < len(a) < 140  # ~100 expected
    assert a < members(make_rule("10%", 3, "round-1"), small)


def test_stratified_sample_is_balanced_and_nested():
    universe = ids(3000)
    labels = ["a"] * 2000 + ["b"] * 900 + ["c"] * 100
    preds = [labels[(i * 7919) % 3000] for i in range(3000)]
    rule = make_rule("240", 1, "round-1", universe, preds, by_label=True)
    got = members(rule, universe, preds)
    per = {lab: sum(1 for k, i in enumerate(universe) if i in got and preds[k] == lab) for lab in "abc"}
    assert per == {"a": 80, "b": 80, "c": 80} == rule.by_label
    rule2 = make_rule("400", 1, "round-1", universe, preds, by_label=True)  # c has only 100: the rest to a and b
    got2 = members(rule2, universe, preds)
    assert rule2.by_label == {"a": 150, "b": 150, "c": 100} and got < got2
    assert make_rule("240", 1, "round-1", list(reversed(universe)), list(reversed(preds)), by_label=True).cutoffs == rule.cutoffs
    for n in range(0, 500, 37):  # shares only grow with N
        assert all(share(n, {"a": 5, "b": 50, "c": 500})[k] <= share(n + 1, {"a": 5, "b": 50, "c": 500})[k] for k in "abc")


def test_sample_from_the_read_plan_equals_the_sample_from_the_rows(mlsum_dir):
    """annotate decides the sample from the plan (before the first record is sent); the ids it uses are the
    ids the read stage gives the rows, so `log` (from the output's ids) marks the same records."""
    from zs_ray.stages.read import plan_read
    from zs_ray.stages.read.source import read_segment

    plan = plan_read(mlsum_dir, "es", "test[10:250]+validation", "summary")
    read_ids = [i for s in plan.segments for i in read_segment(plan.filesystem, s, plan.renamed)["id"].to_pylist()]
    assert plan_ids(plan) == read_ids and len(read_ids) == 240 + 50
    cfg = RubrixConfig(rubrix_dataset=DS, sample="30", sample_seed=5)
    resolve_for_plan(cfg, plan)
    assert members(cfg.sample_rule, read_ids) == members(make_rule("30", 5, "round-1", read_ids), read_ids)
    assert len(members(cfg.sample_rule, read_ids)) == 30


@pytest.mark.parametrize("value,expect", [("0", "--sample must be"), ("ten", "--sample must be"),
                                          ("150%", "--sample must be")])
def test_bad_sample_settings(value, expect):
    with pytest.raises(ZsRayError, match=expect):
        RubrixConfig(rubrix_dataset=DS, sample=value)
    with pytest.raises(ZsRayError, match="needs a count"):
        RubrixConfig(rubrix_dataset=DS, sample="5%", sample_by_label=True)


def test_log_marks_the_sample_in_metadata(tmp_path, ray_local):
    with RubrixTestServer("argilla-1.29") as srv:
        logged = make_output(tmp_path / "small", 300)
        cfg = dict(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", sample="40", sample_seed=11)
        assert log_output(tmp_path / "small", RubrixConfig(**cfg)).ok
        marked = {i for i, r in srv.records(DS).items() if r["metadata"].get(SAMPLE_KEY) == "round-1"}
        everything = [f"es-test-{i:06d}" for i in range(300)]
        expected = members(make_rule("40", 11, "round-1", everything), everything)
        assert marked == expected & set(logged) and len(marked) >= 40 - 6  # empty-text rows are never logged
        assert all(SAMPLE_KEY not in r["metadata"] for i, r in srv.records(DS).items() if i not in marked)
    with RubrixTestServer("argilla-1.29") as srv:  # the same again on a fresh server: the same records
        assert log_output(tmp_path / "small", RubrixConfig(**{**cfg, "rubrix_api_url": srv.url})).ok
        assert {i for i, r in srv.records(DS).items() if r["metadata"].get(SAMPLE_KEY)} == marked
    with RubrixTestServer("rubrix-0.18") as srv:  # a larger run of the same corpus, stratified by prediction
        make_output(tmp_path / "large", 600)
        assert log_output(tmp_path / "large", RubrixConfig(**{**cfg, "rubrix_api_url": srv.url,
                                                              "sample_by_label": True, "sample": "60"})).ok
        recs = srv.records(DS)
        big = {i for i, r in recs.items() if r["metadata"].get(SAMPLE_KEY)}
        tops = [max(recs[i]["prediction"]["labels"], key=lambda x: x["score"])["class"] for i in big]
        assert len(big) == 60 and set(tops) == {"política", "economía", "cultura", "sociedad", "deportes", "tecnología"}
        assert all(tops.count(t) == 10 for t in set(tops))


def test_annotate_marks_the_same_sample_as_log(tmp_path, mlsum_dir, nli_model, ray_local):
    """annotate decides the sample from the read plan before logging (live), and `log` of the finished output
    into a fresh dataset marks exactly the same records."""
    from zs_ray.config import AnnotateConfig
    from zs_ray.pipeline import annotate

    out = tmp_path / "out"
    with RubrixTestServer("argilla-1.29") as srv:
        cfg = dict(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix", sample="25", sample_seed=4)
        summary = annotate(AnnotateConfig(dataset=mlsum_dir, config="es", split="test[0:150]", model=nli_model,
                                          output=str(out), precision="fp32", num_workers="1"), RubrixConfig(**cfg))
        assert summary.log is not None and summary.log.ok
        live = {i for i, r in srv.records(DS).items() if r["metadata"].get(SAMPLE_KEY) == "round-1"}
        every = [f"es-test-{i:07d}" for i in range(150)]
        logged = set(srv.records(DS))
        assert live == members(make_rule("25", 4, "round-1", every), every) & logged and len(live) >= 20
    with RubrixTestServer("rubrix-0.18") as srv:
        assert log_output(out, RubrixConfig(**{**cfg, "rubrix_api_url": srv.url})).ok
        assert {i for i, r in srv.records(DS).items() if r["metadata"].get(SAMPLE_KEY)} == live


def test_uncertainty_margin_and_entropy_single_and_multi_label():
    import math

    from zs_ray.output import uncertainty

    margins, entropies = uncertainty([[0.7, 0.2, 0.1], [0.5, 0.5], None, [1.0], [1.0, 0.0, 0.0]], multi_label=False)
    assert margins[:2] == [pytest.approx(0.5), pytest.approx(0.0)] and margins[2] is None and margins[3] == 1.0
    assert entropies[1] == pytest.approx(1.0) and entropies[4] == pytest.approx(0.0) and entropies[2] is None
    expected = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert entropies[0] == pytest.approx(expected)
    margins, entropies = uncertainty([[0.9, 0.6, 0.1], [0.5, 0.5]], multi_label=True)
    assert margins == [pytest.approx(0.2), pytest.approx(0.0)]
    assert entropies[1] == pytest.approx(1.0) and 0 < entropies[0] < 1
