"""zs-ray thresholds on synthetic pulled files whose right answer is known (no Ray, no server)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zs_ray.cli import main
from zs_ray.servers.pull import SCHEMA
from zs_ray.workflow.config import ThresholdsConfig
from zs_ray.workflow.thresholds import choose, needed, thresholds

LABELS = ["x", "y", "z"]


def synthetic(n, seed, calibrated=("x", "y"), labelled=None):
    """Records predicted x/y/z, score uniform in [1/3, 1]; for calibrated labels a record is right with
    probability = its score, so precision above t is (t + 1)/2 for t >= 1/3: the lowest threshold with
    precision P is 2P - 1. Label z is right with probability 0.5 at every score (no threshold reaches 0.9)."""
    rng = np.random.default_rng(seed)
    pred = rng.choice(LABELS, n)
    score = rng.uniform(1 / 3, 1, n)
    p_right = np.where(np.isin(pred, calibrated), score, 0.5)
    right = rng.random(n) < p_right
    gold = np.where(right, pred, [LABELS[(LABELS.index(p) + 1) % 3] for p in pred])
    is_labelled = np.ones(n, bool) if labelled is None else np.arange(n) < labelled
    return pred, score, gold, is_labelled


def write(path, pred, score, gold, is_labelled):
    rows = []
    for i, (p, s, g, lab) in enumerate(zip(pred, score, gold, is_labelled)):
        rest = (1 - s) / 2
        rows.append({"id": f"r{i:07d}", "text": "t", "inputs": [("text", "t")], "prediction_labels": LABELS,
                     "prediction_scores": [float(s) if x == p else rest for x in LABELS], "prediction_agent": "m",
                     "annotation_labels": [str(g)] if lab else None, "annotation_agent": "ana" if lab else None,
                     "status": "Validated" if lab else "Default", "multi_label": False, "metadata": []})
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)


@pytest.mark.parametrize("target", [0.8, 0.9])
def test_chosen_thresholds_reach_the_target_on_held_out_records(target, tmp_path):
    pred, score, gold, labelled = synthetic(16000, seed=1, labelled=8000)  # half labelled
    write(tmp_path / "p.parquet", pred, score, gold, labelled)
    out = tmp_path / "t.json"
    res = thresholds(ThresholdsConfig(input=str(tmp_path / "p.parquet"), target_precision=target, output=str(out)))
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    # the held-out truth: 200,000 fresh records of the same distribution
    hp, hs, hg, _ = synthetic(200_000, seed=2)
    for lab in ("x", "y"):
        r = res["labels"][lab]
        t = r["threshold"]
        assert r["status"] == "ok" and r["lower_bound"] >= target > 0
        assert t >= 2 * target - 1 - 0.01  # never below the true answer (beyond noise)
        assert t <= 2 * target - 1 + 0.12  # and not needlessly conservative
        held = (hp == lab) & (hs >= t)
        assert (hg[held] == lab).mean() >= target  # the precision bulk labels would really have
        mine = pred == lab
        assert r["coverage"] == pytest.approx(((score >= t) & mine).sum() / mine.sum())
        assert r["would_label"] == int(((score >= t) & mine & ~labelled).sum())
    assert res["labels"]["z"]["threshold"] is None and res["labels"]["z"]["status"].startswith("not reachable")


def test_too_few_labels_is_said(tmp_path, capsys):
    pred, score, gold, labelled = synthetic(300, seed=3, labelled=60)  # about 20 labelled per label
    write(tmp_path / "p.parquet", pred, score, gold, labelled)
    assert main(["thresholds", "--input", str(tmp_path / "p.parquet"), "--target-precision", "0.9",
                 "--output", str(tmp_path / "t.json")]) == 0
    res = json.loads((tmp_path / "t.json").read_text())
    m = needed(0.9, 0.95)
    assert m == 29  # 0.05 ** (1/29) >= 0.9 > 0.05 ** (1/28)
    for lab in LABELS:
        n = int(((pred == lab) & labelled).sum())
        assert n < m and res["labels"][lab]["status"] == f"too few labels ({n}, need {m})"
        assert res["labels"][lab]["threshold"] is None
    printed = capsys.readouterr().out
    assert f"too few labels ({int(((pred == 'x') & labelled).sum())}, need 29)" in printed


def test_lower_bound_not_point_estimate():
    # 28 of 28 correct at the top: point estimate 1.0, but the 95% lower bound 0.05**(1/28) = 0.8985 < 0.9
    scores, correct = np.linspace(0.99, 0.5, 60), np.r_[np.ones(28, bool), np.zeros(32, bool)]
    assert choose(scores, correct, 0.9, 0.95)["threshold"] is None
    correct[28] = True  # 29 of 29: 0.05**(1/29) = 0.9018 >= 0.9
    r = choose(scores, correct, 0.9, 0.95)
    assert r["threshold"] == pytest.approx(scores[28]) and r["labelled_above"] == 29


@pytest.mark.parametrize("value", ["0", "1", "1.2", "-0.5", "nan"])
def test_target_precision_outside_0_1(value, tmp_path, capsys):
    assert main(["thresholds", "--input", str(tmp_path / "p.parquet"), "--target-precision", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target-precision must be in (0, 1)" in err[0]
