"""Write stage: the predictions as a Parquet dataset plus a manifest, all or nothing.

Ray Data writes the stream (``write_parquet``, files of at least ``output.ROWS_PER_FILE`` rows) into a
hidden staging directory beside ``--output``. Only when every row is written and counted is the manifest
added and the staging directory moved into place, so a failed or stopped run leaves no half-written
output, and ``--overwrite`` replaces an old output only once the new one is complete. The format itself
(columns, manifest) is ``output.py``'s.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from typing import Callable

from zs_ray.errors import ZsRayError
from zs_ray.output import ROWS_PER_FILE, count_rows, filesystem, write_manifest

WRITE_CPUS = 0.25  # a write task mostly waits on encoding and I/O


@dataclass
class OutputTarget:
    uri: str
    fs: object  # fsspec filesystem
    path: str
    exists: bool

    def staging(self) -> str:
        parent, name = posixpath.split(self.path.rstrip("/"))
        return posixpath.join(parent, f".{name}.zs-ray-staging-{uuid.uuid4().hex[:8]}")

    def ray_path(self, path: str) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path}"


def prepare_output(output: str, overwrite: bool) -> OutputTarget:
    """Check ``--output`` before any work: a non-empty directory needs ``--overwrite``."""
    fs, path = filesystem(output)
    exists = fs.exists(path)
    if exists:
        if not fs.isdir(path):
            raise ZsRayError(f"--output {output} exists and is not a directory")
        if fs.ls(path) and not overwrite:
            raise ZsRayError(f"--output {output} is not empty: pass --overwrite to replace it")
    return OutputTarget(output, fs, path, exists)


def write_output(ds, target: OutputTarget, expected_rows: int, manifest: Callable[[], dict]) -> tuple[int, int]:
    """Write ``ds``, then the manifest (``manifest()``, called once every row is written); returns
    (rows, skipped)."""
    staging = target.staging()
    fs = target.fs
    fs.makedirs(posixpath.dirname(staging), exist_ok=True)
    try:
        ds.write_parquet(target.ray_path(staging), min_rows_per_file=ROWS_PER_FILE,
                         ray_remote_args={"num_cpus": WRITE_CPUS})
        rows, skipped = count_rows(fs, staging) if fs.exists(staging) else (0, 0)
        if rows != expected_rows:
            raise RuntimeError(f"wrote {rows} rows but the input has {expected_rows}")
        if rows == 0:
            fs.makedirs(staging, exist_ok=True)
        write_manifest(fs, staging, {**manifest(), "rows": rows, "skipped": skipped})
        if target.exists:
            fs.rm(target.path, recursive=True)
        fs.mv(staging, target.path, recursive=True)
        return rows, skipped
    finally:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
