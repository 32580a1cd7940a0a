"""The annotation job end to end: CLI on a local Ray, the Python API through Ray, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.builders import build_nli_model, build_offset_nli_model, mlsum_rows
from tests.conftest import LABELS, TEMPLATE
from zs_ray import AnnotateConfig, ZeroShotClassifier, ZsRayError, annotate
from zs_ray.cli import main
from zs_ray.output import MANIFEST

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "zs_ray.cli", *args], capture_output=True, text=True, env=env,
                          cwd=kwargs.pop("cwd", ROOT), timeout=kwargs.pop("timeout", 300), **kwargs)


def read_output(path):
    return sorted(pq.read_table(str(path)).to_pylist(), key=lambda r: r["id"])


def test_cli_local_ray_end_to_end(tmp_path, mlsum_dir, nli_model):
    out = tmp_path / "predictions"
    args = ["annotate", "--dataset", mlsum_dir, "--model", nli_model, "--split", "test[0:120]",
            "--output", str(out), "--precision", "fp32", "--batch-size", "16"]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = read_output(out)
    source = mlsum_rows(300, seed=0, empty_every=37)[:120]
    assert [r["id"] for r in rows] == [f"es-test-{i:07d}" for i in range(120)]
    assert [r["url"] for r in rows] == [s["url"] for s in source]  # passed through, one row per input row
    empty = [i for i, s in enumerate(source) if not (s["summary"] or "").strip()]
    assert empty and all(rows[i]["prediction"] is None and rows[i]["labels"] is None for i in empty)

    expected = ZeroShotClassifier(nli_model, LABELS, TEMPLATE, precision="fp32")(
        [s["summary"] for i, s in enumerate(source) if i not in empty])
    kept = [r for i, r in enumerate(rows) if i not in empty]
    for row, exp in zip(kept, expected):
        assert row["labels"] == exp["labels"]
        assert row["scores"] == pytest.approx(exp["scores"], abs=1e-5)
        assert (row["prediction"], row["score"]) == (exp["labels"][0], row["scores"][0])

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["model"] == nli_model and manifest["multi_label"] is False
    assert manifest["hypothesis_template"] == TEMPLATE and manifest["candidate_labels"] == LABELS
    assert (manifest["rows"], manifest["skipped"], manifest["precision"]) == (120, len(empty), "fp32")
    assert "transformers" in manifest["versions"]
    assert len(list(out.glob("*.parquet"))) == 1  # not one tiny file per block
    assert f"120 rows ({len(empty)} skipped" in proc.stdout and "articles/s" in proc.stdout
    assert not list(tmp_path.glob(".*zs-ray-partial"))  # the work directory is gone once published

    # A non-empty output is refused (and left alone) unless --overwrite.
    before = sorted(p.name for p in out.iterdir())
    again = run_cli(args)
    assert again.returncode == 2 and "not empty: pass --overwrite" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == before
    replaced = run_cli(args[:-4] + ["--split", "test[0:10]", "--overwrite"])
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert len(read_output(out)) == 10


def test_api_multilabel_entail0_through_ray_equals_pipeline(ray_local, tmp_path, mlsum_dir, nli_model_entail0,
                                                            pipeline_factory):
    config = AnnotateConfig(output=str(tmp_path / "out"), dataset=mlsum_dir, config="es",
                            split="validation+train[:30]", model=nli_model_entail0, labels=LABELS[:4],
                            hypothesis_template=TEMPLATE, multi_label=True, precision="fp32", batch_size=5)
    summary = annotate(config)
    rows = read_output(tmp_path / "out")
    assert summary.rows == len(rows) == 80
    assert len({r["id"] for r in rows}) == 80
    kept = [r for r in rows if r["summary"] and r["summary"].strip()]
    assert summary.skipped == 80 - len(kept) > 0
    reference = pipeline_factory(nli_model_entail0)([r["summary"] for r in kept], candidate_labels=LABELS[:4],
                                                    hypothesis_template=TEMPLATE, multi_label=True)
    for row, ref in zip(kept, reference):
        got = dict(zip(row["labels"], row["scores"]))
        for label, score in zip(ref["labels"], ref["scores"]):
            assert got[label] == pytest.approx(score, abs=1e-4)
    assert summary.pairs == 4 * len(kept) and summary.articles_per_s > 0


def test_all_empty_text_still_writes_one_row_each(ray_local, tmp_path, nli_model):
    import pyarrow as pa

    pq.write_table(pa.table({"summary": ["", None, "  "], "topic": ["a", "b", "c"]}), tmp_path / "e.parquet")
    summary = annotate(AnnotateConfig(output=str(tmp_path / "out"), dataset=str(tmp_path / "e.parquet"),
                                      split="train", model=nli_model))
    rows = read_output(tmp_path / "out")
    assert (summary.rows, summary.skipped) == (3, 3)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    from zs_ray.engine.calibrate import cache_file

    # auto as measured on this machine for this model with the actors' threads (stored by the one that measured)
    chosen = {e["choice"] for e in json.loads(cache_file().read_text()).values() if e["model"] == nli_model}
    expected = manifest["precision"]
    assert expected in chosen, (expected, chosen)
    assert (manifest["precision_requested"], manifest["precision"]) == ("auto", expected)
    assert f"in {expected} of the Ray cluster" in summary.workers
    assert [r["topic"] for r in rows] == ["a", "b", "c"] and all(r["score"] is None for r in rows)


def test_manifest_names_the_mode_the_actors_ran_after_the_load_guard(ray_local, tmp_path, mlsum_dir):
    """``auto``'s stored choice (an older zs-ray's measurement) fails the load guard in the actors: they run fp32,
    and the manifest and the summary say fp32, not the stored choice. bf16 of a model whose logits carry a large
    common offset is such a pair (tests/builders.py); the store is the one the actors read ($ZS_RAY_CACHE)."""
    from zs_ray.engine import cpu_candidates
    from zs_ray.engine.calibrate import cache_file

    if len(cpu_candidates()) == 1:
        pytest.skip("no measured choice here: auto is fp32 on this CPU")
    model = str(build_offset_nli_model(tmp_path / "offset"))

    def run(name):
        summary = annotate(AnnotateConfig(output=str(tmp_path / name), dataset=mlsum_dir, split="test[0:12]",
                                          model=model, precision="auto"))
        return summary, json.loads((tmp_path / name / MANIFEST).read_text())

    _, first = run("measured")  # the actors measure (bf16 fails the guard: not a candidate) and store their choice
    store = json.loads(cache_file().read_text())
    entries = [e for e in store.values() if e["model"] == model]
    assert entries and all("bf16" not in e["pairs_per_s"] for e in entries)
    assert first["precision"] in {e["choice"] for e in entries}
    for entry in entries:
        entry["choice"] = "bf16"
    cache_file().write_text(json.dumps(store))

    summary, manifest = run("stored")
    assert (manifest["precision_requested"], manifest["precision"]) == ("auto", "fp32")
    assert "in fp32 of the Ray cluster" in summary.workers


@pytest.fixture(scope="module")
def no_entailment_model(tmp_path_factory):
    return str(build_nli_model(tmp_path_factory.mktemp("noent"), entailment_index=None))


BAD_INPUTS = [
    (["--labels", ""], "--labels needs at least one"),
    (["--labels", "política,deportes,política"], "duplicate labels: política"),
    (["--hypothesis-template", "Esta noticia habla de."], "must contain '{}'"),
    (["--text-field", "resumen"], "unknown --text-field 'resumen'"),
    (["--model", "/nonexistent/model"], "model '/nonexistent/model' not found"),
    (["--dataset", "/nonexistent/data"], "dataset '/nonexistent/data' not found"),
    (["--dataset", "no-such-org/no-such-dataset"], "dataset 'no-such-org/no-such-dataset' not found"),
    (["--split", "test[0:"], "bad --split"),
    (["--split", "dev[:5]"], "unknown split 'dev'"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--num-workers", "3-1"], "need 1 <= MIN <= MAX"),
    (["--num-workers", "two"], "--num-workers must be N or MIN-MAX"),
    (["--resources-per-worker", "{slot: 1}"], "--resources-per-worker is not JSON"),
    (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    (["--config", "xx"], "unknown --config 'xx'"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["NOENT"], "no entailment label"),
    (["--labels", "deportes," + "muy " * 130], "no room is left for the text"),  # the tiny model takes 128 tokens
]


@pytest.mark.parametrize("extra,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_one_line_error_before_any_work(tmp_path, capsys, mlsum_dir, nli_model, no_entailment_model,
                                                  extra, message):
    out = tmp_path / "nested" / "out"
    model = no_entailment_model if extra == ["NOENT"] else nli_model
    extra = [] if extra == ["NOENT"] else extra
    args = ["annotate", "--dataset", mlsum_dir, "--model", model, "--output", str(out), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("zs-ray: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not list(tmp_path.iterdir())


def test_bad_input_exit_code_without_traceback_cli_and_job(tmp_path, mlsum_dir, nli_model):
    args = ["--dataset", mlsum_dir, "--model", nli_model, "--output", str(tmp_path / "o"), "--split", "nope"]
    for cmd in ([sys.executable, "-m", "zs_ray.cli", "annotate"], [sys.executable, "jobs/annotate_mlsum.py"]):
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith("zs-ray: error: unknown split 'nope'")
        assert "Traceback" not in proc.stderr + proc.stdout
        assert "Ray" not in proc.stderr  # failed before any Ray started
    assert not (tmp_path / "o").exists()


def test_failure_mid_run_leaves_no_output(ray_local, tmp_path, nli_model):
    """A data page that cannot be decoded (behind a valid footer, so planning passes) fails the run
    after work started: no output directory; only the hidden, resumable work directory remains."""
    import pyarrow as pa

    rows = mlsum_rows(400, seed=5)
    path = tmp_path / "data" / "test.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100, compression="snappy")
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(2).column(0)  # corrupt the third row group's `text` pages
    data = bytearray(path.read_bytes())
    start = column.data_page_offset + 64
    data[start:start + 2048] = b"\xff" * 2048
    path.write_bytes(bytes(data))

    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        annotate(AnnotateConfig(output=str(out), dataset=str(tmp_path / "data"), split="test",
                                model=nli_model, precision="fp32"))
    assert not isinstance(info.value, ZsRayError)  # it failed in the stream, after the checks
    assert "test.parquet" in str(info.value) or "Parquet" in str(info.value)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.zs-ray-partial", "data"]


def test_annotate_file_uri_logs_to_rubrix_and_relog_sends_nothing(ray_local, tmp_path, monkeypatch, capsys, mlsum_dir,
                                                          nli_model):
    """annotate -> write -> log with a file:// output, into an Argilla 1.x test server; a second `zs-ray log`
    resends nothing."""
    from tests.rubrix_server import RubrixTestServer

    key = "zsray-annotate-SECRET-42"
    out = tmp_path / "predictions"
    with RubrixTestServer("argilla-1.29", api_key=key) as srv:
        monkeypatch.setenv("RUBRIX_API_URL", srv.url)
        monkeypatch.setenv("RUBRIX_API_KEY", key)
        monkeypatch.setenv("RUBRIX_WORKSPACE", "rubrix")
        args = ["--output", out.as_uri(), "--dataset", mlsum_dir, "--split", "test[:90]", "--model", nli_model,
                "--precision", "fp32", "--rubrix-dataset", "zeroshot_noticias", "--chunk-size", "16"]
        assert main(["annotate", *args]) == 0
        rows = {r["id"]: r for r in read_output(out)}
        kept = {i: r for i, r in rows.items() if r["prediction"] is not None}
        records = srv.records("zeroshot_noticias")
        assert set(records) == set(kept) and len(kept) < len(rows) == 90
        rec = records["es-test-0000001"]
        row = kept["es-test-0000001"]
        assert rec["inputs"] == {"text": row["summary"]}
        assert rec["prediction"]["agent"] == nli_model
        assert [(p["class"], p["score"]) for p in rec["prediction"]["labels"]] == list(zip(row["labels"],
                                                                                           row["scores"]))
        assert rec["metadata"]["topic"] == row["topic"]
        assert set(srv.writes["zeroshot_noticias"].values()) == {1}

        srv.annotate("zeroshot_noticias", "es-test-0000001", ["deportes"])
        assert main(["log", "--input", out.as_uri(), "--rubrix-dataset", "zeroshot_noticias"]) == 0
        assert set(srv.writes["zeroshot_noticias"].values()) == {1}  # nothing resent
        assert srv.records("zeroshot_noticias")["es-test-0000001"]["status"] == "Validated"
    captured = capsys.readouterr()
    assert key not in captured.out + captured.err
    assert key not in "".join(p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("extra,message", [
    (["--rubrix-api-url", "http://127.0.0.1:9"], "Rubrix at http://127.0.0.1:9"),
    (["--rubrix-dataset", "Noticias Zero"], "invalid Rubrix dataset name"),
])
def test_bad_rubrix_settings_refused_before_any_work(tmp_path, capsys, mlsum_dir, nli_model, extra, message):
    args = ["annotate", "--dataset", mlsum_dir, "--model", nli_model, "--output", str(tmp_path / "out"),
            "--rubrix-dataset", "zeroshot_noticias", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("zs-ray: error: ") and err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir())


