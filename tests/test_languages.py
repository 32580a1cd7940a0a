"""All of MLSum in one run: several configs (languages), each with its own preset; --dry-run; bad presets."""

import json

import pandas as pd
import pyarrow.dataset as pads
import pytest
import yaml

from tests.builders import mlsum_rows, write_mlsum
from tests.conftest import LABELS, TEMPLATE
from tests.rubrix_server import RubrixTestServer
from zs_ray import AnnotateConfig, annotate
from zs_ray.cli import main
from zs_ray.output import MANIFEST
from zs_ray.presets import TUTORIAL, load, resolve
from zs_ray.rubrix import RubrixConfig

DE_LABELS = ["Politik", "Kultur", "Gesellschaft", "Wirtschaft", "Sport", "Wissenschaft und Technik"]
DE_TEMPLATE = "In diesem Artikel geht es um {}."
SPLITS = {"test": 10, "train": 6}


@pytest.fixture(scope="module")
def two_languages(tmp_path_factory):
    """es/ and de/ (config directories), splits test and train, one empty summary per language."""
    root = tmp_path_factory.mktemp("mlsum2")
    write_mlsum(root, SPLITS, config="es", empty_every=7)
    write_mlsum(root, SPLITS, config="de", empty_every=7, seed=5)
    return root


@pytest.fixture(scope="module")
def presets_file(tmp_path_factory, nli_model, nli_model_entail0):
    path = tmp_path_factory.mktemp("presets") / "presets.yaml"
    path.write_text(yaml.safe_dump({
        "es": {"model": nli_model, "hypothesis_template": TEMPLATE, "labels": LABELS},
        "de": {"model": nli_model_entail0, "hypothesis_template": DE_TEMPLATE, "labels": DE_LABELS},
    }, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_two_languages_each_with_its_preset_equal_the_pipeline_and_log_apart(ray_local, tmp_path, two_languages, presets_file,
                                                      nli_model, nli_model_entail0, pipeline_factory):
    out = tmp_path / "out"
    with RubrixTestServer() as server:
        rubrix = RubrixConfig(rubrix_dataset="noticias", rubrix_api_url=server.url)
        summary = annotate(AnnotateConfig(output=str(out), dataset=str(two_languages), config="all", split="all",
                                          presets=presets_file, precision="fp32"), rubrix)
        logged = {c: server.records(f"noticias-{c}") for c in ("es", "de")}
        assert not server.records("noticias")
    table = pd.read_parquet(out)  # one dataset, read whole
    assert len(table) == summary.rows == 2 * sum(SPLITS.values())
    assert table["id"].is_unique
    expected_ids = {f"{c}-{s}-{i:07d}" for c in ("es", "de") for s, n in SPLITS.items() for i in range(n)}
    assert set(table["id"]) == expected_ids  # every input row exactly once, ids prefixed by their config
    assert (table["config"] == table["id"].str.split("-").str[0]).all()
    assert pads.dataset(str(out), format="parquet", ignore_prefixes=["_", "."]).count_rows() == len(table)
    assert len(list(out.glob("*.parquet"))) <= 2  # not a file per block

    for config, model, labels, template in (("es", nli_model, LABELS, TEMPLATE),
                                            ("de", nli_model_entail0, DE_LABELS, DE_TEMPLATE)):
        source = mlsum_rows(SPLITS["test"], seed=0 if config == "es" else 5, empty_every=7)
        rows = table[table["id"].str.startswith(f"{config}-test-")].sort_values("id")
        texts = [s["summary"] for s in source]
        kept = [i for i, t in enumerate(texts) if t and t.strip()]
        assert 0 < len(kept) < len(texts)  # an empty summary in each language
        reference = pipeline_factory(model)([texts[i] for i in kept], candidate_labels=labels,
                                            hypothesis_template=template)
        for i, ref in zip(kept, reference):
            row = rows.iloc[i]
            got = dict(zip(row["labels"], row["scores"]))  # by label: ties (unknown-token labels) may order either way
            assert got == pytest.approx(dict(zip(ref["labels"], ref["scores"])), abs=1e-4), (config, i)
            assert got[row["prediction"]] == pytest.approx(ref["scores"][0], abs=1e-4)
        for i in set(range(len(texts))) - set(kept):
            assert pd.isna(rows.iloc[i]["prediction"])

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["config"] == "de,es" and manifest["model"] is None  # all: the dataset's order
    assert manifest["configs"]["de"]["candidate_labels"] == DE_LABELS
    assert manifest["configs"]["de"]["model"] == nli_model_entail0
    assert sum(c["rows"] for c in manifest["configs"].values()) == manifest["rows"] == len(table)
    assert summary.pairs == sum(((table["config"] == c) & table["score"].notna()).sum() * 6 for c in ("es", "de"))

    # one annotation dataset per language, named after the given one, with that language's labels
    assert summary.log.ok, summary.log.summary()
    for config, labels in (("es", LABELS), ("de", DE_LABELS)):
        predicted = table[(table["config"] == config) & table["score"].notna()]
        assert set(logged[config]) == set(predicted["id"])  # exactly this language's predicted rows
        assert all({p["class"] for p in r["prediction"]["labels"]} == set(labels) for r in logged[config].values())


def test_dry_run_plans_from_metadata_and_writes_nothing(ray_local, tmp_path, two_languages, presets_file,
                                                       monkeypatch):
    monkeypatch.setenv("ZS_RAY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "never"
    config = AnnotateConfig(output=str(out), dataset=str(two_languages), config="all", split="all",
                            presets=presets_file, dry_run=True)
    plan = annotate(config)
    assert not out.exists()
    assert {(r.config, r.split): (r.rows, r.pairs) for r in plan.rows} == {
        (c, s): (n, n * 6) for c in ("es", "de") for s, n in SPLITS.items()}
    assert plan.total_rows == 32 and plan.total_eta_s > 0
    assert all(not c.stored and c.pairs_per_s > 0 for c in plan.calibrations.values()), plan.calibrations
    text = str(plan)
    assert "es" in text and "de" in text and "ETA total" in text and "32" in text
    again = annotate(config)  # a stored figure of the same hardware: no second measurement
    assert all(c.stored for c in again.calibrations.values())
    assert not out.exists()


def test_presets_resolve_flags_over_presets_over_tutorial(tmp_path, presets_file):
    presets = resolve(["es", "de"], presets_file, labels=["a", "b"])
    assert presets["es"].labels == presets["de"].labels == ("a", "b")  # a flag applies to every config
    assert presets["de"].hypothesis_template == DE_TEMPLATE
    assert resolve([None], None)[None] == TUTORIAL  # no configs: the tutorial's settings
    shipped = load()
    assert set(shipped) == {"es", "de", "fr", "ru", "tu"} and shipped["es"] == TUTORIAL


@pytest.mark.parametrize("preset, message", [
    ({"model": "m", "labels": ["a"]}, "missing hypothesis_template"),
    ({"model": "m", "labels": ["a"], "hypothesis_template": "x {}", "temperature": 1}, "unknown temperature"),
    ({"model": "m", "labels": ["a"], "hypothesis_template": "no placeholder"}, "must contain '{}'"),
])
def test_bad_presets_one_line_no_output(tmp_path, capsys, two_languages, preset, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"es": preset}))
    out = tmp_path / "out"
    code = main(["annotate", "--dataset", str(two_languages), "--config", "es", "--presets", str(path),
                 "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "config es" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("configs, message", [
    ("es,xx", "unknown --config 'xx'"),
    ("es,es", "names es twice"),
    ("all,es", "'all' stands alone"),
])
def test_unknown_configs_refused(tmp_path, capsys, two_languages, presets_file, configs, message):
    out = tmp_path / "out"
    code = main(["annotate", "--dataset", str(two_languages), "--config", configs, "--presets", presets_file,
                 "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_config_without_preset_refused(tmp_path, capsys, two_languages, nli_model):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"es": {"model": nli_model, "labels": ["a", "b"], "hypothesis_template": "{}"}}))
    code = main(["annotate", "--dataset", str(two_languages), "--config", "all", "--presets", str(path),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no preset for config 'de'" in err
