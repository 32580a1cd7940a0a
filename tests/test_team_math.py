"""zs_ray.team: agreement statistics against published figures and hand checks, and the consensus methods on
planted teams (careful and careless annotators with a known truth)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zs_ray.team import (Responses, binary_counts, bootstrap_interval, cohen_kappa, disagreement_order,
                         fleiss_kappa, krippendorff_alpha, observed_agreement, report, resolve)

# Krippendorff, "Computing Krippendorff's Alpha-Reliability", data C (4 observers x 12 units, None = missing)
KRIPP_C = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
           [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
           [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
           [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
# Fleiss (1971) as in the usual worked example: 10 subjects, 14 raters, 5 categories
FLEISS = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                   [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def kripp_counts() -> np.ndarray:
    counts = np.zeros((12, 5), dtype=np.int64)
    for observer in KRIPP_C:
        for unit, value in enumerate(observer):
            if value is not None:
                counts[unit, value - 1] += 1
    return counts


def plant(n_records: int, accuracies: list, n_labels: int, per_record: int, seed: int = 0):
    """A planted team: accuracy None = careless (uniform random label); each record answered by
    ``per_record`` annotators chosen at random. Returns (Responses, truth)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_labels, n_records)
    n_ann = len(accuracies)
    chosen = np.argsort(rng.random((n_records, n_ann)), axis=1)[:, :per_record]
    record = np.repeat(np.arange(n_records), per_record)
    annotator = chosen.ravel()
    label = truth[record].copy()
    for j, acc in enumerate(accuracies):
        mine = annotator == j
        if acc is None:
            label[mine] = rng.integers(0, n_labels, mine.sum())
        else:
            wrong = mine & (rng.random(len(label)) > acc)
            label[wrong] = (label[wrong] + rng.integers(1, n_labels, wrong.sum())) % n_labels
    r = Responses(record, annotator, label, ids=[f"r{i}" for i in range(n_records)],
                  annotators=[f"a{j}" for j in range(n_ann)], labels=[f"L{k}" for k in range(n_labels)])
    return r, truth


# ------------------------------------------------------------------ agreement statistics

def test_published_figures():
    assert round(krippendorff_alpha(kripp_counts()), 3) == 0.743
    assert round(fleiss_kappa(FLEISS), 3) == 0.210


def test_hand_checks_and_perfect_agreement():
    counts = np.array([[2, 0], [1, 1], [0, 2], [1, 0]])          # the last unit has one rater: ignored
    # Fleiss: P_i = 1, 0, 1 -> P_bar 2/3; p = (1/2, 1/2) -> P_e 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert fleiss_kappa(counts) == pytest.approx(1 / 3)
    # alpha: n = 6, sum_u D_u = 2, n^2 - sum n_c^2 = 36 - 18 -> 1 - 5 * 2 / 18
    assert krippendorff_alpha(counts) == pytest.approx(1 - 10 / 18)
    assert observed_agreement(counts) == pytest.approx(4 / 6)    # ordered pairs: 2 + 0 + 2 of 2 + 2 + 2
    perfect = np.array([[3, 0, 0], [0, 2, 0], [0, 0, 4], [2, 0, 0]])
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    assert fleiss_kappa(perfect) == pytest.approx(1.0)
    assert np.isnan(krippendorff_alpha(np.array([[1, 0], [0, 1]])))   # nothing pairable


def test_weights_are_multiplicities():
    counts = kripp_counts()
    w = np.array([2, 1, 0, 3, 1, 1, 2, 0, 1, 1, 2, 1])
    repeated = np.repeat(counts, w, axis=0)
    for stat in (krippendorff_alpha, fleiss_kappa, observed_agreement):
        assert stat(counts, weights=w) == pytest.approx(stat(repeated))
        assert stat(counts, weights=np.stack([w, w]))[1] == pytest.approx(stat(repeated))


def test_bootstrap_contains_value_and_narrows():
    widths = []
    for n in (100, 3000):
        r, _ = plant(n, [0.8, 0.8, 0.7], 3, 3, seed=n)
        counts = r.counts()
        low, high = bootstrap_interval(counts, krippendorff_alpha, n_boot=400, seed=1)
        assert low <= krippendorff_alpha(counts) <= high
        low_k, high_k = bootstrap_interval(counts, fleiss_kappa, n_boot=400, seed=1)
        assert low_k <= fleiss_kappa(counts) <= high_k
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_cohen_kappa():
    assert cohen_kappa([0, 0, 1, 1], [0, 0, 1, 0]) == pytest.approx(0.5)
    assert cohen_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert np.isnan(cohen_kappa([1], [1]))


def test_binary_counts_for_multi_label():
    answers = [[{"a", "b"}, {"a"}], [{"b"}, {"b"}, {"a", "b"}], [{"a"}]]
    assert binary_counts(answers, "a").tolist() == [[2, 0], [1, 2], [1, 0]]
    assert krippendorff_alpha(binary_counts(answers, "b")) == pytest.approx(
        krippendorff_alpha(np.array([[1, 1], [3, 0], [0, 1]])))


def test_small_report_by_hand():
    r = Responses.from_lists(["r0", "r1", "r2", "r3", "r4"],
                             [[("x", "A"), ("y", "A"), ("z", "B")], [("x", "A"), ("y", "B")],
                              [("x", "B"), ("z", "B")], [("y", "A")], []])
    rep = report(r, model_pred=np.array([0, 1, -1, 0, 0]), n_boot=50)
    json.dumps(rep, allow_nan=False)
    assert (rep["records"], rep["overlap_records"], rep["responses"]) == (4, 3, 8)
    x, y, z = (rep["annotators"][a] for a in "xyz")
    assert x["agreement_with_others"] == pytest.approx(2 / 4)      # r0: 1 of 2, r1: 0 of 1, r2: 1 of 1
    assert y["agreement_with_others"] == pytest.approx(1 / 3)
    assert z["agreement_with_others"] == pytest.approx(1 / 3)
    assert x["agreement_with_model"] == pytest.approx(1 / 2)       # r0 yes, r1 no, r2 has no model label
    assert set(x["cohen_kappa"]) == {"y", "z"} and x["cohen_kappa"]["y"] == pytest.approx(0.0)
    assert rep["flagged"] == []                                     # too little overlap to judge anyone
    assert rep["disagreement"]["matrix"] == [[0, 3], [3, 0]]        # r0: A-A-B -> 2 pairs, r1: 1 pair
    assert rep["confused_pairs"] == [{"a": "A", "b": "B", "pairs": 3}]
    assert rep["per_label"]["A"]["answers"] == 4
    assert disagreement_order(r).tolist() == [1, 0]                 # 1/2 before 1/3; r2 agrees, r3 alone


def test_careless_annotator_flagged():
    r, _ = plant(300, [0.95, 0.95, None], 4, 3, seed=3)
    rep = report(r, n_boot=100)
    assert rep["flagged"] == ["a2"]
    assert "median" in rep["annotators"]["a2"]["why"]
    assert not rep["annotators"]["a0"]["flagged"] and rep["annotators"]["a0"]["why"] is None
    assert rep["annotators"]["a0"]["agreement_with_others"] > rep["annotators"]["a2"]["agreement_with_others"] + 0.2


def test_resubmission_keeps_last():
    r = Responses([0, 0, 0], [0, 1, 0], [0, 1, 1], ids=["r0"], annotators=["x", "y"], labels=["A", "B"])
    assert r.counts().tolist() == [[0, 2]]
    assert r.label.tolist() == [1, 1]


# ------------------------------------------------------------------ consensus

def small_team() -> Responses:
    return Responses.from_lists(
        ["tie", "clear", "single", "empty", "reviewed"],
        [[("x", "A"), ("y", "B")], [("x", "A"), ("y", "A"), ("z", "B")], [("z", "B")], [],
         [("x", "A"), ("y", "A"), ("boss", "B")]])


def test_majority_ties_reviewers_and_decided_by():
    r = small_team()
    c = resolve(r, "majority")
    assert c.label.tolist() == [-1, 0, 1, -1, 0]
    assert c.decided_by.tolist() == [None, "consensus", "z", None, "consensus"]
    assert c.unresolved == 1                                      # the tie; the empty record does not count
    assert c.confidence[1] == pytest.approx(2 / 3) and np.isnan(c.confidence[0])
    for method in ("majority", "dawid-skene"):
        c = resolve(r, method, reviewers=["boss"])
        assert c.label[4] == 1 and c.decided_by[4] == "boss"
        assert c.label[3] == -1 and c.decided_by[3] is None
    c = resolve(r, "majority", reviewers=["y"])
    assert c.label[0] == 1 and c.decided_by[0] == "y" and c.unresolved == 0


def test_dawid_skene_recovers_careful_labels_on_ties():
    r, truth = plant(900, [0.95, 0.95, None], 3, 2, seed=5)
    maj = resolve(r, "majority")
    ds = resolve(r, "dawid-skene")
    ties = maj.label == -1
    assert ties.sum() > 100
    assert np.mean(ds.label[ties] == truth[ties]) > 0.85           # majority: 0 there
    assert np.mean(ds.label == truth) > np.mean(maj.label == truth) + 0.15
    assert ds.annotator_quality["a0"] > 0.85 and ds.annotator_quality["a2"] < 0.6
    assert ds.posterior.shape == (900, 3) and np.allclose(ds.posterior.sum(1), 1)
    assert ds.unresolved == 0


def test_model_weighted():
    r, truth = plant(200, [0.85, 0.85, 0.85], 3, 3, seed=7)
    rng = np.random.default_rng(7)
    model_pred = np.where(rng.random(200) < 0.7, truth, (truth + 1) % 3)
    probs = np.full((200, 3), 0.2)
    probs[np.arange(200), model_pred] = 0.6
    # extra records: a 3-0 majority against a sure model, a 2-1 majority against a mild model, a tie, no answer
    extra_rec = [200, 200, 200, 201, 201, 201, 202, 202]
    extra_ann = [0, 1, 2, 0, 1, 2, 0, 1]
    extra_lab = [0, 0, 0, 0, 0, 1, 0, 1]
    r = Responses(np.r_[r.record, extra_rec], np.r_[r.annotator, extra_ann], np.r_[r.label, extra_lab],
                  ids=r.ids + ["unanimous", "two-one", "tie", "empty"], annotators=r.annotators, labels=r.labels)
    probs = np.vstack([probs, [[0.05, 0.9, 0.05], [0.3, 0.5, 0.2], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]]])
    c = resolve(r, "model-weighted", model_probs=probs)
    assert c.label[200] == 0 and c.label[201] == 0                 # a clear majority holds
    assert c.label[202] == 1 and c.decided_by[202] == "consensus"  # the model breaks the tie
    assert c.label[203] == -1 and c.decided_by[203] is None and c.unresolved == 0
    assert np.allclose(c.posterior[:203].sum(1), 1)
    assert set(c.annotator_quality) == {"a0", "a1", "a2", "model"}
    assert np.mean(c.label[:200] == truth) >= np.mean(resolve(r, "majority").label[:200] == truth)
    with pytest.raises(ValueError, match="model_probs"):
        resolve(r, "model-weighted")
    with pytest.raises(ValueError, match="unknown"):
        resolve(r, "vote")
