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
N = 30  # the first N test rows of the mlsum_dir fixture (es, seed 0, an empty summary every 37th row)


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


DECOY = {"cultura": ["arte"], "sociedad": ["familia"]}
PHRASINGS = list(dict.fromkeys([*LABELS, *(p for v in (V, DECOY) for ps in v.values() for p in ps)]))
_scored: dict = {}


def reference(pipe, texts, template, verbalizers=None, aggregate="max", multi_label=False):
    """Each text's label scores from transformers' pipeline's scores of every phrasing, by engine.verbalize's
    definition: single-label, a label's entailment logit is the max/mean of its phrasings' (their
    log-probabilities, up to one constant per text, which the labels' softmax cancels); multi-label, a label's
    log-odds is the max/mean of its phrasings' and its sigmoid the score. The pipeline scores every phrasing
    of this file once per template (and multi_label)."""
    key = (template, multi_label, tuple(texts))
    if key not in _scored:
        _scored[key] = [dict(zip(r["labels"], r["scores"])) for r in pipe(
            texts, candidate_labels=PHRASINGS, hypothesis_template=template, multi_label=multi_label)]
    phrasings = {lab: (verbalizers or {}).get(lab, [lab]) for lab in LABELS}
    reduce = max if aggregate == "max" else (lambda xs: sum(xs) / len(xs))
    out = []
    for s in _scored[key]:
        if multi_label:
            odds = {lab: reduce([math.log(s[p] / (1 - s[p])) for p in phrasings[lab]]) for lab in LABELS}
            out.append({lab: 1 / (1 + math.exp(-x)) for lab, x in odds.items()})
        else:
            logit = {lab: reduce([math.log(s[p]) for p in phrasings[lab]]) for lab in LABELS}
            z = sum(math.exp(x) for x in logit.values())
            out.append({lab: math.exp(x) / z for lab, x in logit.items()})
    return out


def top(scores):
    return [max(s, key=s.get) for s in scores]


def tune_argv(pull, out, model, *extra):
    return ["tune", "--input", pull, "--output", str(out), "--model", model, "--labels", ",".join(LABELS),
            "--hypothesis-template", A, "--precision", "fp32", "--bootstrap", "200", *extra]


def macro_f1(gold, pred):
    from sklearn.metrics import f1_score

    return f1_score(gold, pred, labels=sorted(set(gold), key=LABELS.index), average="macro", zero_division=0)


def test_tune_finds_a_planted_template(nli_model, pipeline_factory, tmp_path, capsys):
    ids, texts = summaries()
    pipe = pipeline_factory(nli_model)
    gold = top(reference(pipe, texts, B))  # the labels are template B's predictions: B is planted
    pull = pulled(tmp_path / "round1.parquet", ids, texts, gold)
    assert main(tune_argv(pull, tmp_path / "t", nli_model, "--templates", C, B, "--config", "es")) == 0
    result = json.loads((tmp_path / "t" / "tune.json").read_text())
    ranked = result["candidates"]
    assert [c["rank"] for c in ranked] == [1, 2, 3]
    assert ranked[0]["hypothesis_template"] == B and ranked[0]["macro_f1"] == 1.0 and not ranked[0]["current"]
    assert ranked[0]["vs_current_ci95"][0] > 0 and result["clearly_better"]
    for c in ranked:  # each candidate's macro-F1: that of the pipeline's predictions with its template
        assert c["macro_f1"] == pytest.approx(macro_f1(gold, top(reference(pipe, texts, c["hypothesis_template"]))))
    assert next(c for c in ranked if c["current"])["hypothesis_template"] == A
    assert result["scoring"] == {**result["scoring"], "where": "in-process", "distinct_hypotheses": 18,
                                 "pairs": 18 * len(texts)}  # every (text, hypothesis) pair scored once
    out = capsys.readouterr().out
    assert "rank 1 is clearly better than the current settings" in out and len(out.strip().splitlines()) == 7
    assert yaml.safe_load((tmp_path / "t" / "presets.yaml").read_text()) == {
        "es": {"model": nli_model, "hypothesis_template": B, "labels": LABELS}}


def test_tune_on_ray_finds_planted_phrasings_and_annotate_runs_them(ray_local, nli_model, pipeline_factory, mlsum_dir,
                                                                   tmp_path):
    ids, texts = summaries()
    pipe = pipeline_factory(nli_model)
    planted = reference(pipe, texts, B, V, "max")
    gold = top(planted)  # template B with V's phrasings, a label's logit the max of its phrasings'
    pull = pulled(tmp_path / "round1.parquet", ids, texts, gold)
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"planted": V, "decoy": DECOY}, allow_unicode=True),
                                     encoding="utf-8")
    # --ray-min-records 0: scored through Ray Data, the job's tokenize and model stages
    assert main(tune_argv(pull, tmp_path / "t", nli_model, "--templates", B, "--verbalizers", str(tmp_path / "v.yaml"),
                          "--ray-min-records", "0")) == 0
    result = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert result["scoring"]["where"] == "ray" and result["scoring"]["distinct_hypotheses"] == 2 * (6 + 4 + 2)
    ranked = result["candidates"]
    kinds = {(c["hypothesis_template"], c["phrasings"], c["aggregate"]) for c in ranked}
    assert kinds == {(t, *k) for t in (A, B) for k in (("labels", None), ("planted", "max"), ("planted", "mean"),
                                                      ("decoy", None))}  # decoy: one phrasing a label
    best = ranked[0]
    assert (best["hypothesis_template"], best["phrasings"], best["aggregate"]) == (B, "planted", "max")
    assert best["macro_f1"] == 1.0
    for c in ranked:  # each candidate's macro-F1: that of the pipeline's scores of its phrasings
        verbalizers = {"planted": V, "decoy": DECOY, "labels": None}[c["phrasings"]]
        expected = reference(pipe, texts, c["hypothesis_template"], verbalizers, c["aggregate"] or "max")
        assert c["macro_f1"] == pytest.approx(macro_f1(gold, top(expected))), c
    preset = load_presets(result["presets"])["es"]
    assert (preset.hypothesis_template, preset.verbalizers, preset.aggregate) == (B, V, "max")

    # annotate --presets (the Ray job) runs the winner: each label's score from its phrasings'
    out = tmp_path / "annotated"
    annotate(AnnotateConfig(output=str(out), dataset=mlsum_dir, config="es", split=f"test[0:{N}]",
                            presets=result["presets"], precision="fp32"))
    table = pd.read_parquet(out).sort_values("id")
    table = table[table["score"].notna()]
    assert list(table["id"]) == ids
    for (_, row), expected in zip(table.iterrows(), planted):
        assert dict(zip(row["labels"], row["scores"])) == pytest.approx(expected, abs=1e-4)
    assert list(table["prediction"]) == gold

    # that output as tune's input (gold: its topic column): the current settings are its manifest's phrasings
    (tmp_path / "topics.yaml").write_text("politica: política\neconomia: economia\ncultura: cultura\n"
                                          "sociedad: sociedad\ndeportes: deportes\n", encoding="utf-8")
    assert main(["tune", "--input", str(out), "--gold-column", "topic", "--label-map", str(tmp_path / "topics.yaml"),
                 "--output", str(tmp_path / "t2"), "--precision", "fp32", "--bootstrap", "50"]) == 0
    again = json.loads((tmp_path / "t2" / "tune.json").read_text())
    current = next(c for c in again["candidates"] if c["current"])
    assert (again["config"], again["model"], current["hypothesis_template"]) == ("es", nli_model, B)
    assert (current["phrasings"], current["verbalizers"], current["aggregate"]) == ("current", V, "max")
    assert {c["phrasings"] for c in again["candidates"]} == {"current", "labels"}
    # its macro-F1 is that of the output's own predictions against the topics
    topics = [{"politica": "política"}.get(t, t) for t in table["topic"]]
    assert current["macro_f1"] == pytest.approx(macro_f1(topics, list(table["prediction"])))


@pytest.mark.parametrize("multi_label", [False, True])
def test_verbalizer_scores_come_from_the_pipelines_scores_of_each_phrasing(nli_model, pipeline_factory, multi_label):
    texts = summaries()[1][:8]
    plain = ZeroShotClassifier(nli_model, LABELS, A, multi_label, precision="fp32")
    scores = plain.probabilities(plain.encoder.encode(texts))
    same = ZeroShotClassifier(nli_model, LABELS, A, multi_label, precision="fp32",
                              verbalizers={lab: [lab] for lab in LABELS}, aggregate="mean")
    assert np.array_equal(same.probabilities(same.encoder.encode(texts)), scores)  # exactly the pipeline's formula
    for aggregate in ("max", "mean"):
        got = ZeroShotClassifier(nli_model, LABELS, A, multi_label, precision="fp32", verbalizers=V,
                                 aggregate=aggregate)(texts)
        expected = reference(pipeline_factory(nli_model), texts, A, V, aggregate, multi_label)
        for row, ref in zip(got, expected):
            assert dict(zip(row["labels"], row["scores"])) == pytest.approx(ref, abs=1e-4), aggregate


def test_a_tie_is_not_clearly_better(nli_model, pipeline_factory, tmp_path, capsys):
    ids, texts = summaries()
    gold = top(reference(pipeline_factory(nli_model), texts, B))
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
