"""Supervised text classifiers as the pre-annotator: the model kind from the config, one forward pass per text
equal to transformers' text-classification pipeline, the job (annotate -> log -> pull -> evaluate) with the
model's own labels, label maps, and labels the model does not have refused in one line."""

import json

import pyarrow.parquet as pq
import pytest

from tests.builders import build_nli_model, build_text_classifier
from zs_ray import AnnotateConfig, ZeroShotClassifier, ZsRayError, annotate
from zs_ray.cli import main
from zs_ray.engine import load_model_config, model_kind
from zs_ray.output import MANIFEST

CLASSES = ["politica", "economia", "cultura", "deportes"]
TEXTS = ["El gobierno y el congreso votan la ley.", "Gol del equipo en el estadio. " * 60, "museo", "",
         "La bolsa y el banco: inflación, empleo y crecimiento del euro."]
DS = "supervised_noticias"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return str(build_text_classifier(tmp_path_factory.mktemp("clf"), CLASSES))


def reference(model, texts, **kwargs):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model, tokenizer=model, device="cpu", top_k=None, **kwargs)
    return [{r["label"]: r["score"] for r in row} for row in pipe(texts, truncation=True)]


def test_kind_is_told_from_the_config(tmp_path, classifier, nli_model):
    assert model_kind(load_model_config(nli_model)) == "nli"
    assert model_kind(load_model_config(classifier)) == "classifier"
    generic = load_model_config(str(build_nli_model(tmp_path / "g", entailment_index=None)))
    with pytest.raises(ZsRayError, match="no entailment label"):
        model_kind(generic)  # LABEL_0.. and no entailment: still refused
    assert model_kind(generic, {"LABEL_0": "a", "LABEL_2": "b"}) == "classifier"  # unless a label map names them


def test_fp32_equals_the_text_classification_pipeline(classifier):
    """Softmax over the classes, one pass per text, truncated at model_max_length (the long text is 360+
    tokens for a 128-token model): the pipeline's scores to 1e-4, for all classes, a subset and a label map."""
    texts = [t for t in TEXTS if t]
    ref = reference(classifier, texts)
    clf = ZeroShotClassifier(classifier, precision="fp32")
    assert clf.kind == "classifier" and clf.labels == tuple(CLASSES)
    for got, want in zip(clf(texts), ref):
        assert dict(zip(got["labels"], got["scores"])) == pytest.approx(want, abs=1e-4)
        assert got["scores"] == sorted(got["scores"], reverse=True)
    subset = ZeroShotClassifier(classifier, ["deportes", "politica"], precision="fp32")(texts)
    for got, want in zip(subset, ref):  # the model's probabilities, not renormalised
        assert dict(zip(got["labels"], got["scores"])) == pytest.approx(
            {k: want[k] for k in ("deportes", "politica")}, abs=1e-4)
    mapped = ZeroShotClassifier(classifier, label_map={"politica": "sociedad", "economia": "sociedad",
                                                       "deportes": "deporte"}, precision="fp32")
    assert mapped.labels == ("sociedad", "deporte")
    for got, want in zip(mapped(texts), ref):
        assert dict(zip(got["labels"], got["scores"])) == pytest.approx(
            {"sociedad": want["politica"] + want["economia"], "deporte": want["deportes"]}, abs=1e-4)
    multi = ZeroShotClassifier(classifier, multi_label=True, precision="fp32")(texts)
    for got, want in zip(multi, reference(classifier, texts, function_to_apply="sigmoid")):
        assert dict(zip(got["labels"], got["scores"])) == pytest.approx(want, abs=1e-4)


def test_engine_refuses_labels_the_model_does_not_have(classifier):
    with pytest.raises(ZsRayError, match="--labels ciencia: the model does not have this label") as info:
        ZeroShotClassifier(classifier, ["politica", "ciencia"])
    assert "\n" not in str(info.value) and "politica, economia, cultura, deportes" in str(info.value)
    with pytest.raises(ZsRayError, match="--label-map names classes the model does not have: salud"):
        ZeroShotClassifier(classifier, label_map={"salud": "sociedad"})


def test_engine_refuses_a_label_map_for_an_nli_model(nli_model):
    with pytest.raises(ZsRayError, match="--label-map is for supervised classifiers"):
        ZeroShotClassifier(nli_model, ["a"], "{}", label_map={"entailment": "a"})


def test_job_annotate_log_pull_evaluate(ray_local, tmp_path, mlsum_dir, classifier):
    """The job with a supervised model: one row per input with the model's labels, ``model_kind`` in the
    manifest, logged to Rubrix, annotated, pulled back and evaluated."""
    from tests.rubrix_server import RubrixTestServer
    from zs_ray.rubrix import RubrixConfig, pull

    out = tmp_path / "out"
    with RubrixTestServer("argilla-1.29") as srv:
        rubrix = RubrixConfig(rubrix_dataset=DS, rubrix_api_url=srv.url, rubrix_workspace="rubrix",
                              rubrix_backoff=0.01)
        summary = annotate(AnnotateConfig(output=str(out), dataset=mlsum_dir, split="test[0:80]", model=classifier,
                                          precision="fp32"), rubrix)
        assert summary.rows == 80 and summary.log is not None and summary.log_error is None
        rows = {r["id"]: r for r in pq.read_table(str(out)).to_pylist()}
        assert len(rows) == 80
        kept = {i: r for i, r in rows.items() if r["prediction"] is not None}
        assert 0 < len(kept) < 80  # the MLSum fixture's empty summaries are skipped
        assert all(sorted(r["labels"]) == sorted(CLASSES) and r["prediction"] == r["labels"][0] for r in kept.values())
        some = sorted(kept)[:5]
        want = reference(classifier, [kept[i]["summary"] for i in some])
        for i, w in zip(some, want):
            assert dict(zip(kept[i]["labels"], kept[i]["scores"])) == pytest.approx(w, abs=1e-4)
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["model_kind"] == "classifier" and manifest["candidate_labels"] == CLASSES
        assert set(srv.records(DS)) == set(kept)
        for n, i in enumerate(sorted(kept)[:12]):  # people label some: the model's label, or another
            srv.annotate(DS, i, [kept[i]["prediction"] if n % 3 else "cultura"], agent="ana")
        pull(rubrix, tmp_path / "pulled.parquet")
        assert main(["evaluate", "--input", str(tmp_path / "pulled.parquet"), "--output", str(tmp_path / "ev"),
                     "--bootstrap", "20"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["records"] == 12 and set(metrics["labels"]) <= set(CLASSES)


def test_job_with_a_label_map(ray_local, tmp_path, mlsum_dir, classifier):
    """The CLI with a label map file (model class -> candidate label) and --labels among its image."""
    (tmp_path / "map.yaml").write_text("politica: sociedad\neconomia: sociedad\ndeportes: deporte\ncultura: ocio\n")
    out = tmp_path / "out"
    assert main(["annotate", "--dataset", mlsum_dir, "--split", "test[0:20]", "--model", classifier,
                 "--label-map", str(tmp_path / "map.yaml"), "--labels", "deporte,sociedad", "--precision", "fp32",
                 "--output", str(out)]) == 0
    rows = [r for r in pq.read_table(str(out)).to_pylist() if r["prediction"] is not None]
    assert rows and all(sorted(r["labels"]) == ["deporte", "sociedad"] for r in rows)
    want = reference(classifier, [r["summary"] for r in rows[:3]])
    for r, w in zip(rows, want):
        got = dict(zip(r["labels"], r["scores"]))
        assert got == pytest.approx({"sociedad": w["politica"] + w["economia"], "deporte": w["deportes"]}, abs=1e-4)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["model_kind"] == "classifier" and manifest["candidate_labels"] == ["deporte", "sociedad"]
    assert manifest["label_map"]["cultura"] == "ocio"


BAD = [
    (["--labels", "politica,ciencia,salud"], "--labels ciencia, salud: the model does not have these labels"),
    (["--label-map", '{"salud": "sociedad"}'], "--label-map names classes the model does not have: salud"),
    (["--label-map", '{"politica": "x"}', "--labels", "politica"], "--labels politica: the model does not have"),
    (["--label-map", "{nope"], "--label-map is neither a file nor valid JSON"),
    (["NLI", "--label-map", '{"entailment": "x"}'], "--label-map is for supervised classifiers"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_no_output(tmp_path, capsys, mlsum_dir, classifier, nli_model, extra, message):
    model = nli_model if extra[0] == "NLI" else classifier
    extra = extra[1:] if extra[0] == "NLI" else extra
    out = tmp_path / "nested" / "out"
    assert main(["annotate", "--dataset", mlsum_dir, "--model", model, "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zs-ray: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not list(tmp_path.iterdir())


def test_dry_run_counts_one_sequence_per_text(ray_local, tmp_path, mlsum_dir, classifier, monkeypatch):
    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path / "cache"))
    plan = annotate(AnnotateConfig(output=str(tmp_path / "never"), dataset=mlsum_dir, split="test[0:40]",
                                   model=classifier, label_map={"deportes": "deporte", "cultura": "ocio"},
                                   dry_run=True))
    assert [(r.rows, r.pairs) for r in plan.rows] == [(40, 40)] and plan.total_eta_s > 0
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("mode", ["bf16", "int8", "onnx-int8"])
def test_fast_modes_of_a_classifier_pass_the_guard_and_agree_with_fp32(classifier, mode):
    """A supervised classifier in every fast CPU mode: loaded behind the load guard (checked against
    transformers' fp32 model) and within the mode's agreement bounds on many texts."""
    import random

    from tests.agreement import check_bound

    words = " ".join(TEXTS).replace(":", "").replace(".", "").split()
    rng = random.Random(7)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))) for _ in range(160)]
    exact = ZeroShotClassifier(classifier, precision="fp32")(texts)
    fast = ZeroShotClassifier(classifier, precision=mode)(texts)
    check_bound(mode, exact, fast, min_clear=20)


def test_classifier_output_logs_to_argilla_2_and_pulls_back(ray_local, tmp_path, mlsum_dir, classifier, argilla2):
    """A supervised classifier's output on the real argilla-server 2.8: the model's classes are the label
    question's options, each predicted row one record whose suggestion is the model's top class and score with
    every class's score as metadata, and a person's answer comes back through pull."""
    from zs_ray.rubrix import RubrixConfig, pull
    from zs_ray.servers.records import score_keys

    out = tmp_path / "out"
    summary = annotate(AnnotateConfig(output=str(out), dataset=mlsum_dir, split="test[0:40]", model=classifier,
                                      precision="fp32"))
    assert summary.rows == 40
    rows = {r["id"]: r for r in pq.read_table(str(out)).to_pylist() if r["prediction"] is not None}
    ds = "supervised_v2"
    rubrix = RubrixConfig(rubrix_dataset=ds, rubrix_api_url=argilla2.url, rubrix_api_key=argilla2.api_key,
                          rubrix_workspace="argilla")
    assert main(["log", "--input", str(out), "--rubrix-dataset", ds, "--rubrix-api-url", argilla2.url,
                 "--rubrix-api-key", argilla2.api_key, "--rubrix-workspace", "argilla"]) == 0
    meta = argilla2.dataset(ds)
    question = argilla2.api("GET", f"/api/v1/datasets/{meta['id']}/questions")["items"][0]
    assert [o["value"] for o in question["settings"]["options"]] == CLASSES
    records = {r["external_id"]: r for r in argilla2.records(meta["id"])}
    assert set(records) == set(rows)
    keys = score_keys(CLASSES)
    for i, r in records.items():
        [s] = r["suggestions"]
        assert (s["value"], s["score"]) == (rows[i]["labels"][0], pytest.approx(rows[i]["scores"][0]))
        assert {lab: r["metadata"][keys[lab]] for lab in CLASSES} == \
            pytest.approx(dict(zip(rows[i]["labels"], rows[i]["scores"])))
    first = sorted(records)[0]
    argilla2.respond(records[first]["id"], {"label": {"value": "cultura"}}, "submitted", argilla2.api_key)
    pull(rubrix, tmp_path / "pulled.parquet")
    pulled = {r["id"]: r for r in pq.read_table(tmp_path / "pulled.parquet").to_pylist()}
    assert set(pulled) == set(rows) and pulled[first]["annotation_labels"] == ["cultura"]
