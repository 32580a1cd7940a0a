"""zs-ray tune: planted templates and phrasings found with the tiny NLI model, its presets run by annotate (the Ray
job), verbalizer scores against the pipeline's, the tie verdict, and bad inputs (one line, nothing written)."""

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import mlsum_rows
from tests.conftest import LABELS
from zs_ray import AnnotateConfig, ZeroShotClassifier, annotate
from zs_ray.cli import main
from zs_ray.presets import load as load_presets
from zs_ray.servers.pull import SCHEMA

A = "Esta noticia habla de {}."  # the current template
B = "{}"  # the planted one
C = "Trata de {}."
V = {"deportes": ["deportes", "fútbol"], "economia": ["economia", "mercado", "bolsa"],
     "política": ["gobierno", "política"]}
N = 40  # the first N test rows of the mlsum_dir fixture (es, seed 0, an empty summary every 37th row)


def summaries():
    """(ids, texts) of the fixture's first N es test rows with a summary, as annotate names them."""
    rows = mlsum_rows(300, seed=0, empty_every=37)[:N]
    kept = [(f"es-test-{i:07d}", r["summary"]) for i, r in enumerate(rows) if r["summary"] and r["summary"].strip()]
    return [k for k, _ in kept], [t for _, t in kept]


def pulled(path, ids, texts, gold, labelled=True):
    """A `zs-ray pull` file: every record predicted, each annotated with its gold label (validated) by a person."""
    rows = [{"id": i, "text": t, "inputs": [("text", t)], "prediction_labels": LABELS,
             "prediction_scores": [1 / len(LABELS)] * len(LABELS), "prediction_agent": "m",
             "annotation_labels": [g] if labelled else None, "annotation_agent": "ana" if labelled else None,
             "status": "Validated" if labelled else "Default", "multi_label": False, "metadata": []}
            for i, t, g in zip(ids, texts, gold)]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return str(path)


def top_labels(model, template, texts, **kw):
    return [r["labels"][0] for r in ZeroShotClassifier(model, LABELS, template, precision="fp32", **kw)(texts)]


def tune_argv(pull, out, model, *extra):
    return ["tune", "--input", pull, "--output", str(out), "--model", model, "--labels", ",".join(LABELS),
            "--hypothesis-template", A, "--precision", "fp32", "--bootstrap", "200", *extra]


def annotated_scores(tmp_path, mlsum_dir, presets):
    out = tmp_path / "annotated"
    annotate(AnnotateConfig(output=str(out), dataset=mlsum_dir, config="es", split=f"test[0:{N}]", presets=presets,
                            precision="fp32"))
    table = pd.read_parquet(out).sort_values("id")
    table = table[table["score"].notna()]
    return list(table["id"]), [dict(zip(r["labels"], r["scores"])) for _, r in table.iterrows()]


def test_tune_finds_a_planted_template_and_annotate_runs_its_presets(ray_local, nli_model, mlsum_dir, tmp_path, capsys):
    ids, texts = summaries()
    gold = top_labels(nli_model, B, texts)  # the labels are template B's predictions: B is planted
    pull = pulled(tmp_path / "round1.parquet", ids, texts, gold)
    assert main(tune_argv(pull, tmp_path / "t", nli_model, "--templates", C, B, "--config", "es")) == 0
    result = json.loads((tmp_path / "t" / "tune.json").read_text())
    ranked = result["candidates"]
    assert [c["rank"] for c in ranked] == list(range(1, len(ranked) + 1)) and len(ranked) == 3
    assert ranked[0]["hypothesis_template"] == B and ranked[0]["macro_f1"] == 1.0 and not ranked[0]["current"]
    current = next(c for c in ranked if c["current"])
    assert current["hypothesis_template"] == A and current["macro_f1"] < 0.8
    assert ranked[0]["vs_current_ci95"][0] > 0 and result["clearly_better"]
    # each candidate's macro-F1 is that of its own classifier's predictions (the union of hypotheses scored once)
    from sklearn.metrics import f1_score

    c = next(c for c in ranked if c["hypothesis_template"] == C)
    used = sorted(set(gold), key=LABELS.index)
    assert c["macro_f1"] == pytest.approx(f1_score(gold, top_labels(nli_model, C, texts), labels=used, average="macro"))
    assert result["scoring"] == {**result["scoring"], "where": "in-process", "distinct_hypotheses": 18,
                                 "pairs": 18 * len(texts)}
    out = capsys.readouterr().out
    assert "rank 1 is clearly better than the current settings" in out and out.count("\n") >= 5
    presets_file = tmp_path / "t" / "presets.yaml"
    assert yaml.safe_load(presets_file.read_text()) == {"es": {"model": nli_model, "hypothesis_template": B,
                                                               "labels": LABELS}}
    # annotate --presets (the Ray job) runs the winner: template B's scores
    got_ids, got = annotated_scores(tmp_path, mlsum_dir, str(presets_file))
    assert got_ids == ids
    reference = ZeroShotClassifier(nli_model, LABELS, B, precision="fp32")(texts)
    for g, ref in zip(got, reference):
        assert g == pytest.approx(dict(zip(ref["labels"], ref["scores"])), abs=1e-4)

    # the same tuning through Ray Data (the job's tokenize and model stages) ranks the same, to the same figures
    assert main(tune_argv(pull, tmp_path / "r", nli_model, "--templates", C, B, "--ray-min-records", "0")) == 0
    on_ray = json.loads((tmp_path / "r" / "tune.json").read_text())
    assert on_ray["scoring"]["where"] == "ray"
    assert [(c["hypothesis_template"], c["macro_f1"]) for c in on_ray["candidates"]] == \
        [(c["hypothesis_template"], c["macro_f1"]) for c in ranked]


def test_tune_finds_planted_phrasings_and_annotate_runs_them(ray_local, nli_model, mlsum_dir, tmp_path):
    ids, texts = summaries()
    gold = top_labels(nli_model, A, texts, verbalizers=V, aggregate="max")
    pull = pulled(tmp_path / "round1.parquet", ids, texts, gold)
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"planted": V, "decoy": {"cultura": ["cultura", "arte"],
                                                                             "sociedad": ["familia"]}},
                                                    allow_unicode=True), encoding="utf-8")
    assert main(tune_argv(pull, tmp_path / "t", nli_model, "--verbalizers", str(tmp_path / "v.yaml"))) == 0
    result = json.loads((tmp_path / "t" / "tune.json").read_text())
    kinds = {(c["phrasings"], c["aggregate"]) for c in result["candidates"]}
    assert kinds == {("labels", None), ("planted", "max"), ("planted", "mean"), ("decoy", "max"), ("decoy", "mean")}
    best = result["candidates"][0]
    assert (best["phrasings"], best["aggregate"], best["macro_f1"]) == ("planted", "max", 1.0)
    assert best["hypotheses"] == 6 + 4 and result["scoring"]["distinct_hypotheses"] == 6 + 4 + 2
    preset = load_presets(result["presets"])["es"]
    assert (preset.hypothesis_template, preset.verbalizers, preset.aggregate) == (A, V, "max")
    # annotate --presets runs the phrasings: each label's score from its phrasings', as ZeroShotClassifier's
    got_ids, got = annotated_scores(tmp_path, mlsum_dir, result["presets"])
    assert got_ids == ids
    reference = ZeroShotClassifier(nli_model, LABELS, A, precision="fp32", verbalizers=V, aggregate="max")(texts)
    for g, ref in zip(got, reference):
        assert g == pytest.approx(dict(zip(ref["labels"], ref["scores"])), abs=1e-4)
    assert [max(g, key=g.get) for g in got] == gold


@pytest.mark.parametrize("multi_label", [False, True])
def test_verbalizer_scores_come_from_the_pipelines_scores_of_each_phrasing(nli_model, pipeline_factory, multi_label):
    _, texts = summaries()
    texts = texts[:6]
    plain = ZeroShotClassifier(nli_model, LABELS, A, multi_label, precision="fp32")(texts)
    same = ZeroShotClassifier(nli_model, LABELS, A, multi_label, precision="fp32",
                              verbalizers={lab: [lab] for lab in LABELS}, aggregate="mean")(texts)
    assert same == plain  # one phrasing per label: exactly the pipeline's formula on the same logits
    phrasings = [p for lab in LABELS for p in V.get(lab, [lab])]
    per_phrasing = pipeline_factory(nli_model)(texts, candidate_labels=phrasings, hypothesis_template=A,
                                               multi_label=multi_label)
    for aggregate, reduce in (("max", max), ("mean", lambda xs: sum(xs) / len(xs))):
        got = ZeroShotClassifier(nli_model, LABELS, A, multi_label, precision="fp32", verbalizers=V,
                                 aggregate=aggregate)(texts)
        for ref, row in zip(per_phrasing, got):
            s = dict(zip(ref["labels"], ref["scores"]))
            if multi_label:  # a label's log-odds: the max/mean of its phrasings'; its score, their sigmoid
                odds = {lab: reduce([math.log(s[p] / (1 - s[p])) for p in V.get(lab, [lab])]) for lab in LABELS}
                expected = {lab: 1 / (1 + math.exp(-x)) for lab, x in odds.items()}
            else:  # a label's entailment logit: the max/mean of its phrasings' (log-probabilities + one constant)
                logit = {lab: reduce([math.log(s[p]) for p in V.get(lab, [lab])]) for lab in LABELS}
                z = sum(math.exp(x) for x in logit.values())
                expected = {lab: math.exp(x) / z for lab, x in logit.items()}
            assert dict(zip(row["labels"], row["scores"])) == pytest.approx(expected, abs=1e-4), aggregate


def test_a_tie_is_not_clearly_better(nli_model, tmp_path, capsys):
    ids, texts = summaries()
    gold = top_labels(nli_model, B, texts)
    pull = pulled(tmp_path / "p.parquet", ids, texts, gold)
    # "… de deportes ." tokenizes as "… de deportes.": the same pairs, so the same predictions as the current
    assert main(tune_argv(pull, tmp_path / "t", nli_model, "--templates", "Esta noticia habla de {} .")) == 0
    result = json.loads((tmp_path / "t" / "tune.json").read_text())
    first, second = result["candidates"]
    assert first["current"] and first["macro_f1"] == second["macro_f1"] and second["vs_current_ci95"] == [0.0, 0.0]
    assert not result["clearly_better"]
    assert "no candidate is clearly better than the current settings" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "t" / "presets.yaml").read_text())["es"]["hypothesis_template"] == A


@pytest.mark.parametrize("case,extra,message", [
    ("unlabelled", [], "no human labels"),
    ("labelled", ["--verbalizers", "{verbalizers}"], "'sports', not candidate label"),
    ("labelled", ["--templates", "Trata de deportes."], "--templates must contain '{}'"),
    ("labelled", ["--labels", "política,economia"], "not candidate labels"),
    ("labelled", ["--aggregate", "median"], "--aggregate must be"),
    ("labelled", ["--templates", "{templates}"], "must hold a list of templates"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, extra, message, nli_model, tmp_path, capsys):
    ids, texts = summaries()
    pull = pulled(tmp_path / "p.parquet", ids[:10], texts[:10], ["deportes", "cultura"] * 5, case == "labelled")
    (tmp_path / "v.yaml").write_text("sports: [fútbol]\n")
    (tmp_path / "t.yaml").write_text("template: '{}'\n")
    argv = tune_argv(pull, tmp_path / "t", nli_model) + [a.format(verbalizers=tmp_path / "v.yaml",
                                                                  templates=tmp_path / "t.yaml") for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zs-ray: error:") and message in err[0], err
    assert not (tmp_path / "t").exists()
