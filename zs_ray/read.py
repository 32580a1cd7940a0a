"""Read stage: a dataset split as a Ray Data stream of rows with stable ids.

``plan_read`` resolves the dataset (a Hub id over ``HfFileSystem``, a local
directory laid out like a Hub parquet dataset, any fsspec URI, or a single
Parquet/JSONL file), applies the ``datasets`` split syntax (``test[0:500]``,
``test[:10%]``, ``train+validation``) from the Parquet footers alone, and checks
the text field: all before any work starts, in the driver.

``read_dataset`` turns the plan into a Ray Dataset: one read task per slice of
Parquet row groups, streamed, never the whole corpus in one process. Each row
gets ``id = "<config>-<split>-<index in split>"`` (``<file stem>-<index>`` for a
single file): identical across runs and machines for the same source row.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from zs_ray.errors import ZsRayError

ID_COLUMN = "id"
#: Columns zs-ray adds; a source column of the same name is kept as ``source_<name>``.
ADDED_COLUMNS = ("id", "labels", "scores", "prediction", "score")
ROWS_PER_READ_TASK = 4096
_SPLIT_NAME = re.compile(r"^\s*([A-Za-z0-9_.]+?)\s*(\[.*\])?\s*$")


@dataclass(frozen=True)
class Segment:
    """Rows ``[skip, skip + take)`` of the given row groups of one file, whose first
    kept row has index ``first_index`` in its split."""

    path: str
    row_groups: tuple[int, ...]
    skip: int
    take: int
    first_index: int
    id_prefix: str


@dataclass
class ReadPlan:
    dataset: str
    config: Optional[str]
    split: str
    text_field: str
    filesystem: object  # an fsspec filesystem (local, HfFileSystem, s3, ...)
    segments: list[Segment]
    schema: pa.Schema  # output schema of the read stage (source columns + id)
    renamed: dict[str, str]

    @property
    def num_rows(self) -> int:
        return sum(s.take for s in self.segments)


# --------------------------------------------------------------------------- resolving files

def _filesystem(dataset: str):
    """(fsspec filesystem, root path) for a local path, a URI, or a Hub dataset id."""
    import fsspec

    if "://" in dataset:
        return fsspec.core.url_to_fs(dataset)
    if os.path.exists(dataset) or dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(dataset))
    from huggingface_hub import HfFileSystem

    return HfFileSystem(), f"datasets/{dataset}"


def _is_data_file(path: str) -> bool:
    return path.endswith((".parquet", ".jsonl", ".json"))


def _split_files(fs, base: str) -> dict[str, list[str]]:
    """Split name -> sorted files, for SPLIT.parquet, SPLIT-*.parquet and SPLIT/*.parquet under ``base``."""
    splits: dict[str, list[str]] = {}
    for entry in fs.ls(base, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if name.startswith((".", "_")):
            continue
        if entry["type"] == "directory":
            files = sorted(p for p in fs.ls(entry["name"], detail=False) if p.endswith(".parquet"))
            if files:
                splits.setdefault(name, []).extend(files)
        elif name.endswith(".parquet"):
            split = name[: -len(".parquet")].split("-")[0]
            splits.setdefault(split, []).append(entry["name"])
    return {k: sorted(v) for k, v in splits.items()}


def _is_config_dir(fs, path: str) -> bool:
    """CONFIG/SPLIT*.parquet or CONFIG/SPLIT/*.parquet, unlike a split directory of shards (SPLIT/0000.parquet)."""
    return any(not name.isdigit() for name in _split_files(fs, path))


def resolve_files(dataset: str, config: Optional[str]) -> tuple[object, dict[str, list[str]], Optional[str], bool]:
    """(filesystem, split -> files, config actually used, single_file)."""
    try:
        fs, root = _filesystem(dataset)
        if fs.isfile(root):
            if not _is_data_file(root):
                raise ZsRayError(f"--dataset {dataset!r} is a file but not .parquet/.jsonl/.json")
            return fs, {"*": [root]}, None, True
        if not fs.isdir(root):
            offline = root.startswith("datasets/") and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
            raise ZsRayError(f"dataset {dataset!r} not found (neither a local path nor a Hub dataset"
                             f"{'; HF_HUB_OFFLINE is set, so the Hub was not asked' if offline else ''})")
        dirs = {posixpath.basename(e["name"].rstrip("/")): e["name"]
                for e in fs.ls(root, detail=True) if e["type"] == "directory"}
        configs = sorted(n for n, d in dirs.items() if not n.startswith((".", "_")) and n != "data"
                         and _is_config_dir(fs, d))
        if config in configs:
            return fs, _split_files(fs, dirs[config]), config, False
        if configs and config is None:
            raise ZsRayError(f"{dataset} has configs ({', '.join(configs)}): choose one with --config")
        if configs:
            raise ZsRayError(f"unknown --config {config!r} for {dataset}: available configs are {', '.join(configs)}")
        splits = _split_files(fs, dirs["data"] if "data" in dirs else root)  # data/SPLIT-*.parquet, else flat
        if not splits:
            raise ZsRayError(f"no parquet files found in dataset {dataset!r}")
        return fs, splits, None, False
    except ZsRayError:
        raise
    except Exception as exc:  # network, auth, repository-not-found ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ZsRayError(f"dataset {dataset!r} not found or not readable: {first}") from None


# --------------------------------------------------------------------------- split syntax

def parse_split(split: str) -> list[str]:
    """Split names in a datasets split expression; a one-line error for bad syntax."""
    from datasets import ReadInstruction

    try:
        ReadInstruction.from_spec(split)
    except (ValueError, AssertionError, TypeError) as exc:
        raise ZsRayError(f"bad --split {split!r}: {str(exc).splitlines()[0] if str(exc) else 'invalid syntax'} "
                         "(examples: test, test[0:500], test[:10%], train+validation)") from None
    names = []
    for part in split.split("+"):
        match = _SPLIT_NAME.match(part)
        if not match:
            raise ZsRayError(f"bad --split {split!r}")
        names.append(match.group(1))
    return names


def _absolute(split: str, lengths: dict[str, int]):
    from datasets import ReadInstruction

    try:
        return ReadInstruction.from_spec(split).to_absolute(lengths)
    except (ValueError, AssertionError) as exc:
        raise ZsRayError(f"bad --split {split!r}: {str(exc).splitlines()[0]}") from None


# --------------------------------------------------------------------------- planning

def _file_info(fs, path: str) -> tuple[pa.Schema, list[int]]:
    """Schema and per-row-group row counts (Parquet: footer only; JSONL: read once)."""
    if path.endswith(".parquet"):
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
            return meta.schema.to_arrow_schema(), [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    table = _read_json(fs, path)
    return table.schema, [table.num_rows]


def _read_json(fs, path: str) -> pa.Table:
    import pyarrow.json as pj

    with fs.open(path, "rb") as fh:
        try:
            return pj.read_json(fh)
        except pa.ArrowInvalid as exc:
            raise ZsRayError(f"cannot read {path} as JSON lines: {exc}") from None


def plan_read(dataset: str, config: Optional[str], split: str, text_field: str) -> ReadPlan:
    names = parse_split(split)
    fs, files, used_config, single = resolve_files(dataset, config)
    if single:
        files = {name: files["*"] for name in names}
    unknown = [n for n in names if n not in files]
    if unknown:
        raise ZsRayError(f"unknown split {unknown[0]!r} in {dataset}"
                         f"{f' ({used_config})' if used_config else ''}: available splits are {', '.join(sorted(files))}")
    info = {path: _file_info(fs, path) for name in dict.fromkeys(names) for path in files[name]}
    schema = next(iter(info.values()))[0]
    if text_field not in schema.names:
        raise ZsRayError(f"unknown --text-field {text_field!r}: the dataset's columns are {', '.join(schema.names)}")
    if not (pa.types.is_string(schema.field(text_field).type) or pa.types.is_large_string(schema.field(text_field).type)):
        raise ZsRayError(f"--text-field {text_field!r} is not a text column (type {schema.field(text_field).type})")
    lengths = {n: sum(sum(info[p][1]) for p in files[n]) for n in names}
    segments: list[Segment] = []
    for instr in _absolute(split, lengths):
        name = instr.splitname
        prefix = posixpath.splitext(posixpath.basename(files[name][0]))[0] if single else (
            f"{used_config}-{name}" if used_config else name)
        segments.extend(_segments(files[name], info, instr.from_, instr.to, prefix))
    renamed = {c: f"source_{c}" for c in schema.names if c in ADDED_COLUMNS}
    out_schema = pa.schema([pa.field(renamed.get(f.name, f.name), f.type) for f in schema]).append(
        pa.field(ID_COLUMN, pa.string()))
    return ReadPlan(dataset, used_config, split, renamed.get(text_field, text_field), fs, segments, out_schema, renamed)


def _segments(paths, info, start: int, stop: int, prefix: str) -> Iterator[Segment]:
    """Cut rows [start, stop) of a split (files in order) into read tasks of about ROWS_PER_READ_TASK rows."""
    offset = 0  # index in the split of the current row group's first row
    for path in paths:
        groups: list[int] = []
        skip = take = first = 0
        for rg, n in enumerate(info[path][1]):
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                if not groups:
                    skip, first = lo - offset, lo
                groups.append(rg)
                take += hi - lo
                if take >= ROWS_PER_READ_TASK:
                    yield Segment(path, tuple(groups), skip, take, first, prefix)
                    groups, take = [], 0
            offset += n
        if groups:
            yield Segment(path, tuple(groups), skip, take, first, prefix)


# --------------------------------------------------------------------------- reading

def read_segment(fs, segment: Segment, renamed: dict[str, str]) -> pa.Table:
    if segment.path.endswith(".parquet"):
        with fs.open(segment.path, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_groups(list(segment.row_groups))
    else:
        table = _read_json(fs, segment.path)
    table = table.slice(segment.skip, segment.take)
    if renamed:
        table = table.rename_columns([renamed.get(c, c) for c in table.column_names])
    ids = [f"{segment.id_prefix}-{i:07d}" for i in range(segment.first_index, segment.first_index + segment.take)]
    return table.append_column(ID_COLUMN, pa.array(ids, pa.string()))


def read_dataset(plan: ReadPlan, num_cpus: float = 1.0):
    """The plan as a Ray Dataset (one read task per segment, in split order)."""
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    fs, renamed, schema = plan.filesystem, plan.renamed, plan.schema

    class SplitDatasource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for seg in plan.segments:
                meta = BlockMetadata(num_rows=seg.take, size_bytes=None, exec_stats=None, input_files=(seg.path,))
                tasks.append(ReadTask(lambda seg=seg: [read_segment(fs, seg, renamed)], meta, schema=schema,
                                      per_task_row_limit=per_task_row_limit))
            return tasks

    # One block per segment: without override_num_blocks Ray Data splits the reads into >= 200 blocks
    # (a few rows each for a small split), and every tiny block costs the stages downstream.
    return ray.data.read_datasource(SplitDatasource(), num_cpus=num_cpus, override_num_blocks=len(plan.segments))
