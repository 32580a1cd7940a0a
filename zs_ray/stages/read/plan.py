"""The read plan: the ``datasets`` split syntax applied to row counts, cut into read tasks (segments)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import pyarrow as pa

from zs_ray.errors import ZsRayError
from zs_ray.output import CONFIG_COLUMN, ID_COLUMN, source_name
from zs_ray.stages.read import source
from zs_ray.stages.read.layout import list_configs, resolve_files
from zs_ray.stages.read.source import Segment

_SPLIT_NAME = re.compile(r"^\s*([A-Za-z0-9_.]+?)\s*(\[.*\])?\s*$")


@dataclass
class ReadPlan:
    dataset: str
    config: Optional[str]
    split: str
    text_field: str
    filesystem: object  # an fsspec filesystem (local, HfFileSystem, s3, ...)
    segments: list[Segment]
    schema: pa.Schema  # output schema of the read stage (source columns + id, + config for datasets with configs)
    renamed: dict[str, str]
    split_rows: dict[str, int] = field(default_factory=dict)  # rows per split name, in order
    ranges: list = field(default_factory=list, repr=False)  # what the segments were cut from (``cut``)

    @property
    def num_rows(self) -> int:
        return sum(s.take for s in self.segments)

    def cut(self, rows_per_task: int) -> "ReadPlan":
        """The same rows in read tasks of about ``rows_per_task`` rows (Parquet row groups and JSON-lines
        blocks stay whole)."""
        return replace(self, segments=[seg for r in self.ranges for seg in _segments(*r, rows_per_task)])


def rows_per_read_task(num_rows: int) -> int:
    """Rows per read task for a run of ``num_rows``: ``source.ROWS_PER_READ_TASK``, or fewer for a small run so
    that it still makes ``source.MIN_READ_TASKS`` blocks (every actor of a pool gets work, not the first one
    ready), but never under ``source.MIN_ROWS_PER_READ_TASK`` (each block costs every stage something)."""
    wanted = -(-num_rows // source.MIN_READ_TASKS)
    return max(source.MIN_ROWS_PER_READ_TASK, min(source.ROWS_PER_READ_TASK, wanted))


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

def _check_text_field(schema: pa.Schema, text_field: str) -> None:
    if text_field not in schema.names:
        raise ZsRayError(f"unknown --text-field {text_field!r}: the dataset's columns are {', '.join(schema.names)}")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ZsRayError(f"--text-field {text_field!r} is not a text column (type {kind})")


def plan_runs(dataset: str, configs: Optional[str], split: str, text_field: str) -> list[ReadPlan]:
    """One plan per config of ``configs`` (one name, ``es,de``, or ``all``: every config of the dataset),
    the same split expression for each; all checked before any work. Their rows are one run's input."""
    names: list[Optional[str]] = [c for c in (configs or "").split(",") if c] or [None]
    if "all" in names:
        available = list_configs(dataset)
        if "all" not in available:
            if len(names) > 1:
                raise ZsRayError(f"--config {configs}: 'all' stands alone (it means every config)")
            names = list(available) or [None]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ZsRayError(f"--config {configs} names {', '.join(dupes)} twice")
    plans = [plan_read(dataset, name, split, text_field) for name in names]
    rows = rows_per_read_task(sum(p.num_rows for p in plans))
    if rows < source.ROWS_PER_READ_TASK:
        plans = [p.cut(rows) for p in plans]
    if len(plans) > 1 and any(p.config is None for p in plans):
        raise ZsRayError(f"--config {configs}: {dataset} has no configs, so it cannot be read as several")
    for plan in plans[1:]:
        if plan.schema != plans[0].schema:
            raise ZsRayError(f"configs {plans[0].config} and {plan.config} of {dataset} have different columns "
                             f"({', '.join(plans[0].schema.names)} / {', '.join(plan.schema.names)}): annotate "
                             "them in separate runs")
    return plans


def plan_read(dataset: str, config: Optional[str], split: str, text_field: str) -> ReadPlan:
    """Resolve, check and cut the split into read tasks, in the driver, before any work."""
    fs, files, used_config, single = resolve_files(dataset, config)
    if split.strip() == "all" and not single:
        split = "+".join(files)  # every split of the config, in the dataset's order
    names = parse_split(split)
    if single:
        files = {name: files["*"] for name in names}
    unknown = [n for n in names if n not in files]
    if unknown:
        raise ZsRayError(f"unknown split {unknown[0]!r} in {dataset}"
                         f"{f' ({used_config})' if used_config else ''}: available splits are {', '.join(sorted(files))}")
    paths = list(dict.fromkeys(p for name in names for p in files[name]))
    # The columns come from the first file with records, cheaply (a Parquet footer, the first block of JSON
    # lines): a wrong --text-field is refused before any file is counted through.
    schema = next((s for s in (source.file_schema(fs, p) for p in paths) if s is not None), None)
    if schema is None:
        raise ZsRayError(f"split {split!r} of {dataset} holds no records")
    _check_text_field(schema, text_field)
    info = {path: source.file_info(fs, path) for path in paths}
    lengths = {n: sum(sum(info[p].rows) for p in files[n]) for n in names}
    ranges: list[tuple] = []
    split_rows: dict[str, int] = {}
    for instr in _absolute(split, lengths):
        name = instr.splitname
        prefix = posixpath.splitext(posixpath.basename(files[name][0]))[0] if single else (
            f"{used_config}-{name}" if used_config else name)
        ranges.append((files[name], info, instr.from_, instr.to, prefix, schema, used_config))
        split_rows[name] = split_rows.get(name, 0) + instr.to - instr.from_
    renamed = {c: source_name(c) for c in schema.names if source_name(c) != c}
    out_schema = pa.schema([pa.field(renamed.get(f.name, f.name), f.type) for f in schema]).append(
        pa.field(ID_COLUMN, pa.string()))
    if used_config is not None:
        out_schema = out_schema.append(pa.field(CONFIG_COLUMN, pa.string()))
    return ReadPlan(dataset, used_config, split, renamed.get(text_field, text_field), fs, [], out_schema,
                    renamed, split_rows, ranges).cut(source.ROWS_PER_READ_TASK)


def _segments(paths, info, start: int, stop: int, prefix: str, json_schema: pa.Schema,
              config: Optional[str], rows_per_task: int) -> Iterator[Segment]:
    """Cut rows [start, stop) of a split (files in order) into read tasks of about ``rows_per_task`` rows,
    at row-group (Parquet) or block (JSON lines) boundaries."""
    offset = 0  # index in the split of the current row group's first row
    for path in paths:
        groups: list[int] = []
        skip = take = first = 0
        for rg, n in enumerate(info[path].rows):
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                if not groups:
                    skip, first = lo - offset, lo
                groups.append(rg)
                take += hi - lo
                if take >= rows_per_task:
                    yield info[path].segment(path, groups, skip, take, first, prefix, json_schema, config)
                    groups, take = [], 0
            offset += n
        if groups:
            yield info[path].segment(path, groups, skip, take, first, prefix, json_schema, config)
