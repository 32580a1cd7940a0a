"""Dataset resolution, split syntax and stable ids (the read plan, executed without Ray).

JSON and JSON-lines inputs: tests/test_read_json.py."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.builders import MLSUM_SCHEMA, mlsum_rows
from zs_ray import ZsRayError
from zs_ray.stages.read import plan_read, read_segment


def rows_of(plan):
    tables = [read_segment(plan.filesystem, s, plan.renamed) for s in plan.segments]
    return pa.concat_tables(tables).to_pylist() if tables else []


def source(n, seed=0):
    return mlsum_rows(n, seed=seed)


def test_slice_gives_contiguous_rows_with_stable_ids(mlsum_dir):
    plan = plan_read(mlsum_dir, "es", "test[10:250]", "summary")
    rows = rows_of(plan)
    assert plan.num_rows == len(rows) == 240
    assert [r["id"] for r in rows] == [f"es-test-{i:07d}" for i in range(10, 250)]
    assert [r["url"] for r in rows] == [r["url"] for r in source(300)[10:250]]  # across 3 files and row groups


def test_ids_identical_across_slicings(mlsum_dir):
    whole = {r["id"]: r["url"] for r in rows_of(plan_read(mlsum_dir, "es", "test", "summary"))}
    part = {r["id"]: r["url"] for r in rows_of(plan_read(mlsum_dir, "es", "test[95:205]", "summary"))}
    assert len(whole) == 300 and len(part) == 110
    assert all(whole[i] == url for i, url in part.items())


def test_percent_and_concatenated_splits(mlsum_dir):
    pct = rows_of(plan_read(mlsum_dir, "es", "test[:10%]", "summary"))
    assert [r["id"] for r in pct] == [f"es-test-{i:07d}" for i in range(30)]
    both = rows_of(plan_read(mlsum_dir, "es", "train+validation[-5:]", "summary"))
    assert len(both) == 205
    assert both[0]["id"] == "es-train-0000000" and both[-1]["id"] == "es-validation-0000049"
    assert len({r["id"] for r in both}) == 205


def test_a_small_run_is_cut_into_enough_read_tasks(tmp_path):
    """A run under MIN_READ_TASKS x ROWS_PER_READ_TASK rows is cut finer (at row groups), so that every actor
    of a pool gets blocks and not only the first one ready; the rows and ids are those of the default cut."""
    from zs_ray.stages.read import plan_runs, source as src

    pq.write_table(pa.Table.from_pylist(source(8000), schema=MLSUM_SCHEMA), tmp_path / "f.parquet",
                   row_group_size=256)
    default = plan_read(str(tmp_path / "f.parquet"), None, "train", "summary")
    assert [s.take for s in default.segments] == [4096, 3904]  # 16 row groups of 256 to a task
    (plan,) = plan_runs(str(tmp_path / "f.parquet"), None, "train", "summary")
    assert len(plan.segments) == src.MIN_READ_TASKS and [s.take for s in plan.segments] == [512] * 15 + [320]
    assert rows_of(plan) == rows_of(default)
    (tiny,) = plan_runs(str(tmp_path / "f.parquet"), None, "train[:1000]", "summary")
    assert [s.take for s in tiny.segments] == [512, 488]  # never under MIN_ROWS_PER_READ_TASK (512) a task


@pytest.mark.parametrize("layout", ["single", "shards", "split_dir", "flat", "data_dir"])
def test_hub_parquet_layouts(tmp_path, layout):
    table = pa.Table.from_pylist(source(30), schema=MLSUM_SCHEMA)
    paths = {
        "single": ["es/test.parquet"],
        "shards": ["es/test-00000-of-00002.parquet", "es/test-00001-of-00002.parquet"],
        "split_dir": ["es/test/0000.parquet", "es/test/0001.parquet"],
        "flat": ["test.parquet"],
        "data_dir": ["data/test-00000-of-00001.parquet"],
    }[layout]
    for k, rel in enumerate(paths):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        part = table.slice(k * 30 // len(paths), 30 // len(paths))
        pq.write_table(part, tmp_path / rel)
    (tmp_path / "README.md").write_text("card")
    plan = plan_read(str(tmp_path), "es", "test", "summary")
    rows = rows_of(plan)
    assert [r["url"] for r in rows] == table.column("url").to_pylist()
    prefix = "es-test" if layout in ("single", "shards", "split_dir") else "test"
    assert rows[3]["id"] == f"{prefix}-0000003"


def test_single_parquet_and_jsonl_files(tmp_path):
    rows = source(20)
    pq.write_table(pa.Table.from_pylist(rows, schema=MLSUM_SCHEMA), tmp_path / "noticias.parquet")
    with open(tmp_path / "noticias.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    for name in ("noticias.parquet", "noticias.jsonl"):
        got = rows_of(plan_read(str(tmp_path / name), "es", "train[5:9]", "summary"))
        assert [r["id"] for r in got] == [f"noticias-{i:07d}" for i in range(5, 9)]
        assert [r["summary"] for r in got] == [r["summary"] for r in rows[5:9]]


def test_source_columns_named_like_outputs_are_kept(tmp_path):
    table = pa.table({"id": ["a", "b"], "score": ["x", "y"], "summary": ["uno", "dos"]})
    pq.write_table(table, tmp_path / "f.parquet")
    plan = plan_read(str(tmp_path / "f.parquet"), None, "train", "summary")
    got = rows_of(plan)
    assert got[0] == {"source_id": "a", "source_score": "x", "summary": "uno", "id": "f-0000000"}
    assert plan.schema.names == ["source_id", "source_score", "summary", "id"]


@pytest.mark.parametrize("split,message", [
    ("test[0:", "bad --split"),
    ("test[a:b]", "bad --split"),
    ("", "bad --split"),
    ("dev", "unknown split 'dev'.*available splits are test, train, validation"),
    ("train+dev[:5]", "unknown split 'dev'"),
])
def test_bad_splits(mlsum_dir, split, message):
    with pytest.raises(ZsRayError, match=message):
        plan_read(mlsum_dir, "es", split, "summary")


def test_bad_config_text_field_and_dataset(mlsum_dir, tmp_path):
    with pytest.raises(ZsRayError, match="unknown --config 'xx'.*available configs are es"):
        plan_read(mlsum_dir, "xx", "test", "summary")
    with pytest.raises(ZsRayError, match="unknown --text-field 'resumen'.*summary"):
        plan_read(mlsum_dir, "es", "test", "resumen")
    with pytest.raises(ZsRayError, match="not found"):
        plan_read(str(tmp_path / "nowhere"), "es", "test", "summary")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZsRayError, match="no parquet/jsonl/json data files found"):
        plan_read(str(tmp_path / "empty"), "es", "test", "summary")


def test_missing_hub_dataset_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZsRayError, match="'no-such-org/no-such-dataset' not found.*HF_HUB_OFFLINE is set") as info:
        plan_read("no-such-org/no-such-dataset", "es", "test", "summary")
    assert "\n" not in str(info.value)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_hub_ids_are_read_over_hffilesystem():
    from huggingface_hub import HfFileSystem

    from zs_ray.stages.read import _filesystem

    fs, root = _filesystem("mteb/mlsum")
    assert isinstance(fs, HfFileSystem) and root == "datasets/mteb/mlsum"


@pytest.mark.parametrize("layout", ["root_split_dirs", "data_jsonl", "keyword_names"])
def test_standard_layouts_without_configs(tmp_path, layout):
    """Layouts ``datasets.data_files.get_data_patterns`` resolves (no config: ids are <split>-<index>)."""
    rows = source(30)
    files = {
        "root_split_dirs": {"test/0000.parquet": rows[:12], "test/0001.parquet": rows[12:], "train/0.parquet": rows},
        "data_jsonl": {"data/test.jsonl": rows, "data/train.jsonl": rows[:3]},
        "keyword_names": {"my_test_set.parquet": rows, "train_part.parquet": rows[:3]},  # **/*[-._ 0-9]test[-._ 0-9]*
    }[layout]
    for rel, part in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".jsonl"):
            (tmp_path / rel).write_text("".join(json.dumps(r) + "\n" for r in part))
        else:
            pq.write_table(pa.Table.from_pylist(part, schema=MLSUM_SCHEMA), tmp_path / rel)
    plan = plan_read(str(tmp_path), None, "test", "summary")
    got = rows_of(plan)
    assert plan.config is None and [r["url"] for r in got] == [r["url"] for r in rows]
    assert got[29]["id"] == "test-0000029"
    with pytest.raises(ZsRayError, match="unknown split 'dev'.*available splits are test, train$"):
        plan_read(str(tmp_path), None, "dev", "summary")


CARD = """---
language: [es, fr, de]
configs:
- config_name: es
  data_files:
  - split: test
    path: es/test.parquet
  - split: train
    path: es/train-*.parquet
- config_name: fr
  default: true
  data_files:
  - split: test
    path: francais/*.jsonl
- config_name: de
  data_dir: de
---
# A card like mteb/mlsum's
"""


@pytest.fixture
def card_dir(tmp_path):
    """Configs only the card declares: es/test-old.parquet (named by no path), francais/ (not a config name)."""
    rows = source(40)
    for rel, part in {"es/test.parquet": rows[:25], "es/test-old.parquet": rows[25:],
                      "es/train-0.parquet": rows[:5], "es/train-1.parquet": rows[5:8],
                      "de/validation.parquet": rows[:7]}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part, schema=MLSUM_SCHEMA), tmp_path / rel)
    (tmp_path / "francais").mkdir()
    (tmp_path / "francais" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (tmp_path / "francais" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:6]))
    (tmp_path / "README.md").write_text(CARD)
    return tmp_path, rows


def test_card_configs_resolve_configs_and_splits(card_dir):
    root, rows = card_dir
    es = plan_read(str(root), "es", "test", "summary")
    assert es.config == "es" and es.num_rows == 25  # es/test-old.parquet is no file of the card's test split
    assert [r["url"] for r in rows_of(es)] == [r["url"] for r in rows[:25]]
    train = rows_of(plan_read(str(root), "es", "train[4:6]", "summary"))
    assert [(r["id"], r["url"]) for r in train] == [("es-train-0000004", rows[4]["url"]), ("es-train-0000005", rows[5]["url"])]
    fr = plan_read(str(root), None, "test", "summary")  # fr is the card's default config
    assert fr.config == "fr" and [r["id"] for r in rows_of(fr)] == [f"fr-test-{i:07d}" for i in range(6)]
    de = plan_read(str(root), "de", "validation", "summary")  # data_dir only: get_data_patterns inside de/
    assert [r["url"] for r in rows_of(de)] == [r["url"] for r in rows[:7]]
    with pytest.raises(ZsRayError, match=r"unknown --config 'francais'.*available configs are es, fr, de$"):
        plan_read(str(root), "francais", "test", "summary")
    with pytest.raises(ZsRayError, match=r"unknown split 'validation' in .* \(es\): available splits are test, train$"):
        plan_read(str(root), "es", "validation", "summary")


def test_card_without_default_asks_for_a_config(card_dir):
    root, _ = card_dir
    (root / "README.md").write_text(CARD.replace("  default: true\n", ""))
    with pytest.raises(ZsRayError, match=r"has configs \(es, fr, de\): choose one with --config") as info:
        plan_read(str(root), None, "test", "summary")
    assert "\n" not in str(info.value)


def test_card_configs_over_another_fsspec_filesystem(card_dir):
    """The same card-declared layout in an fsspec memory filesystem (as the Hub's, not a local path)."""
    import fsspec

    root, rows = card_dir
    fs = fsspec.filesystem("memory")
    for path in root.rglob("*"):
        if path.is_file():
            fs.pipe(f"/zs-card/{path.relative_to(root)}", path.read_bytes())
    try:
        plan = plan_read("memory://zs-card", "es", "test[:3]", "summary")
        assert plan.filesystem is fs and [s.path for s in plan.segments] == ["/zs-card/es/test.parquet"]
        assert [r["url"] for r in rows_of(plan)] == [r["url"] for r in rows[:3]]
    finally:
        fs.rm("/zs-card", recursive=True)


def test_config_dirs_without_a_card_stay_our_rule(mlsum_dir):
    """CONFIG/SPLIT-*.parquet without a card: get_data_patterns on the root would merge configs."""
    from zs_ray.stages.read import resolve_files

    _, files, used, single = resolve_files(mlsum_dir, "es")
    assert used == "es" and not single and sorted(files) == ["test", "train", "validation"]
    assert [f.rsplit("/", 1)[1] for f in files["test"]] == [f"test-0000{k}-of-00003.parquet" for k in range(3)]
