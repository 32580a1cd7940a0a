"""The read plan: the ``datasets`` split syntax applied to row counts, cut into read tasks (segments)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow as pa

from zs_ray.errors import ZsRayError
from zs_ray.output import ID_COLUMN, source_name
from zs_ray.read import source
from zs_ray.read.layout import resolve_files
from zs_ray.read.source import Segment

_SPLIT_NAME = re.compile(r"^\s*([A-Za-z0-9_.]+?)\s*(\[.*\])?\s*$")


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


def plan_read(dataset: str, config: Optional[str], split: str, text_field: str) -> ReadPlan:
    """Resolve, check and cut the split into read tasks, in the driver, before any work."""
    names = parse_split(split)
    fs, files, used_config, single = resolve_files(dataset, config)
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
    segments: list[Segment] = []
    for instr in _absolute(split, lengths):
        name = instr.splitname
        prefix = posixpath.splitext(posixpath.basename(files[name][0]))[0] if single else (
            f"{used_config}-{name}" if used_config else name)
        segments.extend(_segments(files[name], info, instr.from_, instr.to, prefix, schema))
    renamed = {c: source_name(c) for c in schema.names if source_name(c) != c}
    out_schema = pa.schema([pa.field(renamed.get(f.name, f.name), f.type) for f in schema]).append(
        pa.field(ID_COLUMN, pa.string()))
    return ReadPlan(dataset, used_config, split, renamed.get(text_field, text_field), fs, segments, out_schema, renamed)


def _segments(paths, info, start: int, stop: int, prefix: str, json_schema: pa.Schema) -> Iterator[Segment]:
    """Cut rows [start, stop) of a split (files in order) into read tasks of about ROWS_PER_READ_TASK rows,
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
                if take >= source.ROWS_PER_READ_TASK:
                    yield info[path].segment(path, groups, skip, take, first, prefix, json_schema)
                    groups, take = [], 0
            offset += n
        if groups:
            yield info[path].segment(path, groups, skip, take, first, prefix, json_schema)
