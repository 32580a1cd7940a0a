"""JSON inputs: JSON lines streamed in byte ranges, a .json list of records, anything else refused."""

import json

import pyarrow as pa
import pyarrow.json as pj
import pytest

from tests.builders import mlsum_rows
from zs_ray import ZsRayError
from zs_ray.stages.read import plan_read, read_segment
from zs_ray.stages.read import source as read_source

N = 10_000  # three blocks of ROWS_PER_READ_TASK (4096) lines


def rows_of(plan):
    return pa.concat_tables([read_segment(plan.filesystem, s, plan.renamed) for s in plan.segments]).to_pylist()


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory):
    """N records, with blank lines (empty, spaces, CRLF) around block boundaries and at the end."""
    rows = mlsum_rows(N, seed=3)
    path = tmp_path_factory.mktemp("jsonl") / "noticias.jsonl"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for i, row in enumerate(rows):
            fh.write(json.dumps(row, ensure_ascii=False) + ("\r\n" if i % 3 else "\n"))
            if i in (0, 4095, 4096, 8191, 9000):
                fh.write(["\n", "   \n", " \t\r\n"][i % 3])
        fh.write("\n  \n")
    return path, rows


@pytest.fixture
def json_calls(monkeypatch):
    """The byte sizes pyarrow.json.read_json is given (pyarrow is asked for nothing else in the read stage)."""
    calls = []
    real = pj.read_json

    def spy(source, *args, **kwargs):
        calls.append(len(source.getbuffer()))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pj, "read_json", spy)
    return calls


def test_jsonl_is_planned_in_byte_ranges_without_parsing_it_whole(big_jsonl, json_calls):
    path, rows = big_jsonl
    size = path.stat().st_size
    plan = plan_read(str(path), None, "train", "summary")
    segs = plan.segments
    assert [s.take for s in segs] == [4096, 4096, N - 8192] and plan.num_rows == N
    assert segs[0].byte_range[0] == 0 and segs[-1].byte_range[1] == size
    assert all(a.byte_range[1] == b.byte_range[0] for a, b in zip(segs, segs[1:]))  # contiguous, no overlap
    assert json_calls and max(json_calls) <= segs[0].byte_range[1] < size / 2  # the first block, for the schema
    json_calls.clear()
    got = rows_of(plan)
    assert json_calls == [s.byte_range[1] - s.byte_range[0] for s in segs]  # each task parses its own bytes
    # Ids as if read in one go: the index of the record among the non-blank lines, blank lines taking none.
    assert [r["id"] for r in got] == [f"noticias-{i:07d}" for i in range(N)]
    assert [r["url"] for r in got] == [r["url"] for r in rows]
    assert got[4096]["summary"] == rows[4096]["summary"]


def test_jsonl_slices_keep_their_ids(big_jsonl, monkeypatch):
    monkeypatch.setattr(read_source, "_CHUNK", 997)  # lines (about 1 KB) cut by many chunk ends while indexing
    path, rows = big_jsonl
    plan = plan_read(str(path), None, "train[4000:4200]+train[9990:]", "summary")
    got = rows_of(plan)
    assert [r["id"] for r in got] == [f"noticias-{i:07d}" for i in [*range(4000, 4200), *range(9990, N)]]
    assert [r["url"] for r in got] == [r["url"] for r in rows[4000:4200] + rows[9990:]]
    assert len(plan.segments) == 2 and plan.segments[0].row_groups == (0, 1)  # two blocks, bytes of those only


def test_jsonl_text_field_is_checked_before_the_file_is_counted(big_jsonl, monkeypatch):
    def counted(*args):
        raise AssertionError("the file was counted before the text field was checked")

    monkeypatch.setattr(read_source, "file_info", counted)
    with pytest.raises(ZsRayError, match="unknown --text-field 'resumen'.*summary"):
        plan_read(str(big_jsonl[0]), None, "train", "resumen")


def test_jsonl_later_blocks_use_the_first_blocks_types(tmp_path, monkeypatch):
    monkeypatch.setattr(read_source, "ROWS_PER_READ_TASK", 2)
    lines = [{"summary": "a", "n": 1, "x": None}, {"summary": "b", "n": 2},
             {"summary": "c", "n": 3, "x": "late text", "extra": 1}, {"summary": "d"}]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    plan = plan_read(str(tmp_path / "f.jsonl"), None, "train", "summary")
    tables = [read_segment(plan.filesystem, s, plan.renamed) for s in plan.segments]
    assert len(tables) == 2 and all(t.schema == plan.schema for t in tables)
    assert plan.schema.names == ["summary", "n", "x", "id"] and plan.schema.field("x").type == pa.string()
    assert pa.concat_tables(tables).column("x").to_pylist() == [None, None, "late text", None]


def test_jsonl_with_records_across_lines_is_refused(tmp_path):
    (tmp_path / "pretty.jsonl").write_text('{"summary":\n "a"}\n{"summary": "b"}\n')
    with pytest.raises(ZsRayError, match=r"pretty.jsonl as JSON lines: 3 non-blank lines hold 2 records") as info:
        plan_read(str(tmp_path / "pretty.jsonl"), None, "train", "summary")
    assert "\n" not in str(info.value)


def test_json_list_of_records_reads_like_jsonl(tmp_path):
    rows = mlsum_rows(30, seed=4)
    (tmp_path / "lista.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    (tmp_path / "lista.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    as_list = plan_read(str(tmp_path / "lista.json"), None, "train[3:7]", "summary")
    as_lines = plan_read(str(tmp_path / "lista.jsonl"), None, "train[3:7]", "summary")
    assert as_list.schema == as_lines.schema and rows_of(as_list) == rows_of(as_lines)
    assert [r["id"] for r in rows_of(as_list)] == [f"lista-{i:07d}" for i in range(3, 7)]
    assert [r["summary"] for r in rows_of(as_list)] == [r["summary"] for r in rows[3:7]]


def test_json_lines_in_a_json_file_are_read_as_lines(tmp_path):
    rows = mlsum_rows(5, seed=5)
    (tmp_path / "lineas.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = plan_read(str(tmp_path / "lineas.json"), None, "train", "summary")
    assert plan.segments[0].format == "jsonl" and [r["url"] for r in rows_of(plan)] == [r["url"] for r in rows]


@pytest.mark.parametrize("content,found", [
    ('{"data": [{"summary": "a"}, {"summary": "b"}]}', "found a JSON object"),
    ('{\n  "summary": "a"\n}\n', "found a JSON object"),
    ('{"summary": "one record, no list"}\n', "found a JSON object"),
    ('["a", "b"]', "found a JSON list of strings"),
    ('[{"summary": "a"}, 3]', "found a JSON list of numbers"),
    ('[{"summary": "a"}, null]', "found a JSON list of nulls"),
    ("42", "found a JSON number"),
    ('"text"', "found a JSON string"),
    ("", "found an empty file"),
])
def test_json_that_is_not_a_list_of_records_is_refused(tmp_path, content, found):
    (tmp_path / "datos.json").write_text(content)
    with pytest.raises(ZsRayError, match=found) as info:
        plan_read(str(tmp_path / "datos.json"), None, "train", "summary")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "datos.json") in message and "a JSON list of records" in message


def test_jsonl_read_tasks_in_ray(big_jsonl, ray_local):
    from zs_ray.stages.read import read_dataset

    path, rows = big_jsonl
    plan = plan_read(str(path), None, "train[100:9000]", "summary")
    got = read_dataset(plan).select_columns(["id", "url"]).take_all()
    assert [r["id"] for r in got] == [f"noticias-{i:07d}" for i in range(100, 9000)]
    assert [r["url"] for r in got] == [r["url"] for r in rows[100:9000]]
