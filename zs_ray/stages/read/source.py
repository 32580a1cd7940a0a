"""Reading one file's rows: what a file holds (planning, in the driver) and one read task's rows (in Ray).

Formats, decided by content as well as by name:

* Parquet: planned from the footer alone (schema, rows per row group); a task reads its row groups.
* JSON lines (``.jsonl``, or a ``.json`` whose lines are objects): planned by one streamed pass over the
  bytes, in bounded memory, that records where each block of ``ROWS_PER_READ_TASK`` records starts; only
  the first block is parsed, for the schema. A task reads only its byte range and parses it with that
  schema, so every task yields the same types. Blank lines (only spaces, tabs or ``\\r``) are not records:
  they are skipped alike when counting and when parsing (pyarrow skips them), so they take no index.
  One record per line: a file whose lines are not whole records is refused, not mis-numbered.
* A ``.json`` list of records (an array of objects): parsed whole, in planning and in its one read task;
  a JSON document must be parsed whole to be split, and such files are small by nature (large data is
  shipped as JSON lines or Parquet). Any other ``.json`` (an object, a scalar) is refused with one line.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from zs_ray.errors import ZsRayError
from zs_ray.output import CONFIG_COLUMN, ID_COLUMN

ROWS_PER_READ_TASK = 4096  # a read task's rows (a block through every stage; the resume granularity)
MIN_READ_TASKS = 16  # a smaller run is cut finer, down to ...
MIN_ROWS_PER_READ_TASK = 512  # ... read tasks of this many rows (see plan.rows_per_read_task)
_CHUNK = 1 << 20  # bytes read at a time while indexing JSON lines
_BLANK = b" \t\r"  # JSON whitespace other than the newline: a line of only these is blank


@dataclass(frozen=True)
class Segment:
    """Rows ``[skip, skip + take)`` of the given row groups (JSON lines: blocks) of one file, whose first
    kept row has index ``first_index`` in its split."""

    path: str
    row_groups: tuple[int, ...]
    skip: int
    take: int
    first_index: int
    id_prefix: str
    format: str = "parquet"  # "parquet", "jsonl" or "json" (a list of records)
    byte_range: Optional[tuple[int, int]] = None  # JSON lines: the bytes of those blocks ...
    range_rows: int = 0  # ... and the records they hold
    json_schema: Optional[pa.Schema] = None  # JSON: the types every task parses with
    config: Optional[str] = None  # the dataset config the rows belong to (their ``config`` column)


@dataclass
class FileInfo:
    format: str
    rows: list[int]  # records per row group (Parquet), per block (JSON lines), in the list (JSON)
    offsets: list[int] = field(default_factory=list)  # JSON lines: byte where each block starts, then the end

    def segment(self, path, groups, skip, take, first, prefix, json_schema, config=None) -> Segment:
        byte_range, range_rows = None, 0
        if self.format == "jsonl":
            byte_range = (self.offsets[groups[0]], self.offsets[groups[-1] + 1])
            range_rows = sum(self.rows[g] for g in groups)
        return Segment(path, tuple(groups), skip, take, first, prefix, self.format, byte_range, range_rows,
                       json_schema if self.format != "parquet" else None, config)


# --------------------------------------------------------------------------- planning (driver)

def file_format(fs, path: str) -> str:
    """"parquet", "jsonl" or "json" (a list of records); a one-line error for any other JSON document."""
    if path.endswith(".parquet"):
        return "parquet"
    if path.endswith(".jsonl"):
        return "jsonl"
    with fs.open(path, "rb") as fh:
        head = b""
        while not head and (chunk := fh.read(1 << 16)):
            head = chunk.lstrip(b" \t\r\n")[:1]
        if head == b"[":
            return "json"
        if head == b"{":
            fh.seek(0)
            lines = _json_lines(fh)
            first, second = next(lines)[1], next(lines, None)
            if second is not None and _is_object(first):
                return "jsonl"  # one object per line: JSON lines in a file named .json, read as such
    found = _FOUND.get(head, "a JSON number" if head and head in b"-0123456789" else "text that is not JSON")
    raise ZsRayError(f"{path}: a .json file must hold a JSON list of records (an array of objects), found {found}")


_FOUND = {b"{": "a JSON object", b'"': "a JSON string", b"t": "a JSON boolean", b"f": "a JSON boolean",
          b"n": "a JSON null", b"": "an empty file"}


def file_schema(fs, path: str) -> Optional[pa.Schema]:
    """The columns of one file, cheaply: the Parquet footer, the first block of JSON lines, a JSON list
    (for JSON: the types its read tasks parse with, see ``_task_schema``); None for JSON without records."""
    fmt = file_format(fs, path)
    if fmt == "parquet":
        with fs.open(path, "rb") as fh:
            return pq.ParquetFile(fh).schema_arrow
    if fmt == "json":
        table = _json_list(fs, path, None)
        return _task_schema(table.schema) if table.num_rows else None
    with fs.open(path, "rb") as fh:
        lines = [line for _, (_, line) in zip(range(ROWS_PER_READ_TASK), _json_lines(fh))]
    return _task_schema(_parse_lines(b"\n".join(lines), None, path, len(lines)).schema) if lines else None


def file_info(fs, path: str) -> FileInfo:
    """Rows per row group / block of one file, without reading its data (but for a small JSON list)."""
    fmt = file_format(fs, path)
    if fmt == "parquet":
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        return FileInfo(fmt, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    if fmt == "json":
        return FileInfo(fmt, [_json_list(fs, path, None).num_rows])
    rows: list[int] = []
    offsets: list[int] = []
    with fs.open(path, "rb") as fh:
        for n, (offset, _) in enumerate(_json_lines(fh)):
            if n % ROWS_PER_READ_TASK == 0:
                offsets.append(offset)
                rows.append(0)
            rows[-1] += 1
        offsets.append(fh.tell())  # the end of the file: the last block ends there
    return FileInfo(fmt, rows, offsets)


def _task_schema(schema: pa.Schema) -> pa.Schema:
    """The types JSON tasks parse with: the first block's (a column first seen later is left out), a column
    null throughout it read as text (null would refuse any later value)."""
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema])


def _json_lines(fh) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of each non-blank line, streamed ``_CHUNK`` bytes at a time."""
    offset, partial = 0, []  # partial: the pieces of a line not ended yet (joined once, however long)
    while chunk := fh.read(_CHUNK):
        *lines, last = chunk.split(b"\n")
        if lines and partial:
            lines[0] = b"".join([*partial, lines[0]])
            partial = []
        partial.append(last)
        for line in lines:
            if line.strip(_BLANK):
                yield offset, line
            offset += len(line) + 1
    rest = b"".join(partial)
    if rest.strip(_BLANK):
        yield offset, rest


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _parse_lines(data: bytes, schema: Optional[pa.Schema], path: str, expected: int) -> pa.Table:
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore") if schema else None
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=options) if expected else None
    except pa.ArrowInvalid as exc:
        raise ZsRayError(f"cannot read {path} as JSON lines: {str(exc).splitlines()[0]}") from None
    if table is None:
        table = (schema or pa.schema([])).empty_table()
    if table.num_rows != expected:
        raise ZsRayError(f"cannot read {path} as JSON lines: {expected} non-blank lines hold {table.num_rows} "
                         "records (one JSON object per line is required)")
    return table


def _json_list(fs, path: str, schema: Optional[pa.Schema]) -> pa.Table:
    """A JSON list of records, parsed whole (see the module docstring), typed as JSON lines would be."""
    with fs.open(path, "rb") as fh:
        try:
            records = json.load(fh)
        except ValueError as exc:
            raise ZsRayError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    bad = [r for r in records if not isinstance(r, dict)][:1] if isinstance(records, list) else [records]
    if bad:
        kind = {str: "strings", int: "numbers", float: "numbers", bool: "booleans", list: "lists",
                type(None): "nulls"}.get(type(bad[0]), "values")
        raise ZsRayError(f"{path}: a .json file must hold a JSON list of records (an array of objects), "
                         f"found a JSON list of {kind}")
    lines = b"\n".join(json.dumps(r, ensure_ascii=False).encode() for r in records)
    return _parse_lines(lines, schema, path, len(records))


# --------------------------------------------------------------------------- reading (one task)

def read_segment(fs, segment: Segment, renamed: dict[str, str]) -> pa.Table:
    if segment.format == "parquet":
        with fs.open(segment.path, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_groups(list(segment.row_groups))
    elif segment.format == "jsonl":
        start, end = segment.byte_range
        with fs.open(segment.path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        table = _parse_lines(data, segment.json_schema, segment.path, segment.range_rows)
    else:
        table = _json_list(fs, segment.path, segment.json_schema)
    table = table.slice(segment.skip, segment.take)
    if renamed:
        table = table.rename_columns([renamed.get(c, c) for c in table.column_names])
    ids = [f"{segment.id_prefix}-{i:07d}" for i in range(segment.first_index, segment.first_index + segment.take)]
    table = table.append_column(ID_COLUMN, pa.array(ids, pa.string()))
    if segment.config is not None:
        table = table.append_column(CONFIG_COLUMN, pa.array([segment.config] * segment.take, pa.string()))
    return table


def read_dataset(plans, num_cpus: float = 1.0):
    """The plans (``ReadPlan``s of one run: the configs, whose columns are the same) as one Ray Dataset: one
    read task per segment, config by config, in split order."""
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    plans = plans if isinstance(plans, (list, tuple)) else [plans]
    fs, renamed, schema = plans[0].filesystem, plans[0].renamed, plans[0].schema
    segments = [seg for plan in plans for seg in plan.segments]

    class SplitDatasource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for seg in segments:
                meta = BlockMetadata(num_rows=seg.take, size_bytes=None, exec_stats=None, input_files=(seg.path,))
                tasks.append(ReadTask(lambda seg=seg: [read_segment(fs, seg, renamed)], meta, schema=schema,
                                      per_task_row_limit=per_task_row_limit))
            return tasks

    # One block per segment: without override_num_blocks Ray Data splits the reads into >= 200 blocks
    # (a few rows each for a small split), and every tiny block costs the stages downstream.
    return ray.data.read_datasource(SplitDatasource(), num_cpus=num_cpus, override_num_blocks=len(segments))
