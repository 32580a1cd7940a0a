"""zs-ray evaluate: metrics against a hand computation, the report's embedded plots, and the report in a real
headless Chromium (no Ray, no server: a pulled file built here)."""

import base64
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.browser import open_offline
from zs_ray.cli import main
from zs_ray.errors import ZsRayError
from zs_ray.servers.pull import SCHEMA
from zs_ray.workflow.config import EvaluateConfig
from zs_ray.workflow.evaluate import evaluate

LABELS = ["a", "b", "c", "d"]
# (gold, predicted, score) of ten human-labelled records; by hand (see the test): accuracy 7/10, ...
LABELLED = [("a", "a", 0.9), ("a", "a", 0.8), ("a", "b", 0.61), ("b", "b", 0.7), ("b", "b", 0.95),
            ("b", "a", 0.55), ("c", "c", 0.85), ("c", "b", 0.41), ("c", "c", 0.65), ("a", "a", 0.35)]


def record(i, pred, score, ann=None, agent=None, status="Default"):
    rest = (1 - score) / 3  # the server's order, not the score order: evaluate takes the top score
    return {"id": f"es-test-{i:07d}", "text": f"t{i}", "inputs": [("text", f"t{i}")], "prediction_labels": LABELS,
            "prediction_scores": [score if lab == pred else rest for lab in LABELS], "prediction_agent": "m",
            "annotation_labels": ann, "annotation_agent": agent, "status": status, "multi_label": False,
            "metadata": []}


def pulled_file(path, extra=True):
    rows = [record(i, p, s, [g], "ana", "Validated") for i, (g, p, s) in enumerate(LABELLED)]
    if extra:  # none of these may count: unlabelled, a bulk label, a discarded one, a validated-but-empty one
        rows += [record(20 + i, "c", 0.9) for i in range(5)]
        rows += [record(30, "b", 0.99, ["c"], "zs-ray-bulk", "Validated"),
                 record(31, "a", 0.99, ["c"], "luis", "Discarded"),
                 record(32, "a", 0.99, [], "luis", "Validated")]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


def test_metrics_equal_a_hand_computation(tmp_path):
    m = evaluate(EvaluateConfig(input=str(pulled_file(tmp_path / "p.parquet")), output=str(tmp_path / "ev"),
                                bins=5, bootstrap=200))
    assert m["records"] == 10 and m["input"]["records"] == 18 and m["input"]["labelled"] == 10
    assert m["labels"] == ["a", "b", "c"]  # d never occurs: not part of macro-F1
    assert m["accuracy"] == pytest.approx(0.7)
    # Wilson 95% of 7/10: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) = [0.3968, 0.8922]
    assert m["accuracy_ci95"] == pytest.approx([0.39678, 0.89221], abs=1e-4)
    pl = m["per_label"]
    assert (pl["a"]["precision"], pl["a"]["recall"], pl["a"]["f1"], pl["a"]["support"]) == pytest.approx((0.75, 0.75, 0.75, 4))
    assert (pl["b"]["precision"], pl["b"]["recall"], pl["b"]["f1"], pl["b"]["support"]) == pytest.approx((0.5, 2 / 3, 4 / 7, 3))
    assert (pl["c"]["precision"], pl["c"]["recall"], pl["c"]["f1"], pl["c"]["support"]) == pytest.approx((1.0, 2 / 3, 0.8, 3))
    assert m["macro_f1"] == pytest.approx((0.75 + 4 / 7 + 0.8) / 3)
    lo, hi = m["macro_f1_ci95"]
    assert 0 <= lo < m["macro_f1"] < hi <= 1
    assert m["confusion_matrix"]["matrix"] == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    curves = m["threshold_curves"]
    at = curves["thresholds"].index(0.6)
    assert curves["all"]["coverage"][at] == pytest.approx(0.7) and curves["all"]["precision"][at] == pytest.approx(6 / 7)
    at = curves["thresholds"].index(0.5)
    assert curves["by_label"]["a"]["coverage"][at] == pytest.approx(0.75)
    assert curves["by_label"]["a"]["precision"][at] == pytest.approx(2 / 3)
    # ECE, 5 bins: |1-.35|*1 + |0-.48|*2 + |2/3-.6533|*3 + |1-.875|*4 = 2.15, over 10 records
    assert m["calibration"]["ece"] == pytest.approx(0.215)
    assert m["calibration"]["counts"] == [0, 1, 2, 3, 4]
    assert any("zs-ray-bulk" in n for n in m["input"]["left_out"]) and any("Discarded" in n for n in m["input"]["left_out"])
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert on_disk["accuracy"] == m["accuracy"] and on_disk["confusion_matrix"] == m["confusion_matrix"]


def images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_embeds_its_plots_and_fetches_nothing(tmp_path):
    evaluate(EvaluateConfig(input=str(pulled_file(tmp_path / "p.parquet")), output=str(tmp_path / "ev"),
                            bootstrap=50))
    html = (tmp_path / "ev" / "report.html").read_text()
    pngs = images(html)
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in pngs)
    for alt in ("Confusion matrix", "Precision and coverage against the threshold", "Reliability diagram"):
        assert f'alt="{alt}"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html and "@import" not in html


def test_report_opens_offline_in_headless_chromium(tmp_path):
    evaluate(EvaluateConfig(input=str(pulled_file(tmp_path / "p.parquet")), output=str(tmp_path / "ev"),
                            bootstrap=50))
    open_offline(tmp_path / "ev" / "report.html", tmp_path, images=3)


@pytest.mark.parametrize("make,args,expect", [
    ("empty", [], "holds no records"),
    ("unlabelled", [], "no human labels"),
    ("output", ["--gold-column", "topic", "--label-map", "{map}"], "maps none of"),
    ("pulled", ["--gold-column", "topic"], "go together"),
])
def test_evaluate_one_line_errors(make, args, expect, tmp_path, capsys):
    from tests.rubrix_server import make_output

    path = tmp_path / "in.parquet"
    if make == "empty":
        pq.write_table(SCHEMA.empty_table(), path)
    elif make == "unlabelled":
        pq.write_table(pa.Table.from_pylist([record(i, "a", 0.9) for i in range(5)], schema=SCHEMA), path)
    elif make == "output":
        make_output(tmp_path / "out", 30)
        path = tmp_path / "out"
        (tmp_path / "map.yaml").write_text("Deportes: deportes\nCiencia: tecnología\n")
    else:
        pulled_file(path)
    argv = ["evaluate", "--input", str(path), "--output", str(tmp_path / "ev"),
            *[a.format(map=tmp_path / "map.yaml") for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zs-ray: error:") and expect in err[0], err


def test_evaluate_an_output_with_a_gold_column(tmp_path, capsys):
    from tests.rubrix_server import LABELS as SERVER_LABELS, make_output

    make_output(tmp_path / "out", 120)  # topic is the label's first 8 characters
    mapping = {lab[:8]: lab for lab in SERVER_LABELS if lab != "cultura"}  # cultura left unmapped
    (tmp_path / "map.yaml").write_text("".join(f"{k}: {v}\n" for k, v in mapping.items()))
    assert main(["evaluate", "--input", str(tmp_path / "out"), "--gold-column", "topic", "--label-map",
                 str(tmp_path / "map.yaml"), "--output", str(tmp_path / "ev"), "--bootstrap", "20"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    from zs_ray.output import open_output

    df = open_output(str(tmp_path / "out")).dataset.to_table().to_pandas()
    df["gold"] = df["topic"].map(mapping)
    df = df[df["gold"].notna() & df["prediction"].notna()]
    assert m["records"] == len(df) and m["accuracy"] == pytest.approx((df["gold"] == df["prediction"]).mean())
    assert m["input"]["unmapped"] == {"cultura": 20}
    out = capsys.readouterr().out
    assert "20 rows left out" in out and "cultura 20" in out
    (tmp_path / "bad.yaml").write_text("deportes: sports\n")
    with pytest.raises(ZsRayError, match="not candidate labels"):
        evaluate(EvaluateConfig(input=str(tmp_path / "out"), output=str(tmp_path / "e2"), gold_column="topic",
                                label_map=str(tmp_path / "bad.yaml")))
