"""Write stage: the predictions as a Parquet dataset plus a manifest, all or nothing, resumable.

Ray Data writes the stream (``write_parquet``, files of at least ``output.ROWS_PER_FILE`` rows) into a
hidden work directory beside ``--output``, ``.<name>.zs-ray-partial/``: ``data/`` (the Parquet files),
``checkpoint/`` (Ray Data's checkpoint of the ids written, ``CheckpointConfig`` with the ``id`` column,
committed in two phases with each data file) and ``run.json`` (the settings that computed them). Only when
every row is written and counted are the files moved to ``--output`` and the manifest written there, last:
readers require it (``output.open_output``), so a failed or stopped run never looks complete, on a local
disk or on an object store alike.

A run that did not finish (driver killed, Ctrl-C, a lost head) keeps its work directory: the same command
again resumes it, and Ray Data's checkpoint filter skips every id already written (at most the blocks in
flight at the kill are computed again). A re-run with other settings is refused; ``--overwrite`` starts
over and replaces an old output only once the new one is complete.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Callable

from zs_ray.errors import ZsRayError
from zs_ray.output import ID_COLUMN, MANIFEST, PREDICTION_SCHEMA, ROWS_PER_FILE, count_rows, filesystem, write_manifest

NEEDS = (ID_COLUMN, *PREDICTION_SCHEMA.names)  # every other column is written as it comes
MAKES = ()  # the Parquet files and the manifest
WRITE_CPUS = 0.25  # a write task mostly waits on encoding and I/O
RUN_FILE = "run.json"


@dataclass
class OutputTarget:
    uri: str
    fs: object  # fsspec filesystem
    path: str
    exists: bool
    run: dict  # what makes two runs the same run (settings and input), written to RUN_FILE
    resumed_rows: int = 0  # rows an unfinished run of the same settings had written

    @property
    def partial(self) -> str:
        parent, name = posixpath.split(self.path.rstrip("/"))
        return posixpath.join(parent, f".{name}.zs-ray-partial")

    def ray_path(self, path: str) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path}"


def prepare_output(output: str, overwrite: bool, run: dict) -> OutputTarget:
    """Check ``--output`` before any work: a non-empty directory needs ``--overwrite``; an unfinished run of
    the same ``run`` settings is resumed, one of other settings refused (``--overwrite``: removed)."""
    try:
        fs, path = filesystem(output)
    except (ImportError, ValueError) as exc:
        raise ZsRayError(f"--output {output}: {exc}") from None
    exists = fs.exists(path)
    target = OutputTarget(output, fs, path, exists, run)
    if exists:
        if not fs.isdir(path):
            raise ZsRayError(f"--output {output} exists and is not a directory")
        interrupted = (not fs.exists(posixpath.join(path, MANIFEST)) and fs.exists(target.partial)
                       and _read_run(fs, target.partial) == run)  # a publish to an object store cut short
        if fs.ls(path) and not overwrite and not interrupted:
            raise ZsRayError(f"--output {output} is not empty: pass --overwrite to replace it")
    if fs.exists(target.partial):
        if overwrite:
            fs.rm(target.partial, recursive=True)
            return target
        theirs = _read_run(fs, target.partial)
        if theirs != run:
            changed = ", ".join(f"{k}: {theirs.get(k)!r} -> {run.get(k)!r}" for k in run if theirs.get(k) != run.get(k))
            raise ZsRayError(f"an unfinished run with other settings ({changed or 'unreadable'}) is in "
                             f"{target.ray_path(target.partial)}: run it again with its settings to finish it, "
                             "or pass --overwrite to start over")
        target.resumed_rows = _checkpointed_rows(fs, target.partial)
    return target


def _committed_checkpoints(fs, partial: str) -> list[str]:
    """Ray Data's committed checkpoint files (a pending one ends in ``.pending.parquet``)."""
    checkpoint = posixpath.join(partial, "checkpoint")
    return [f for f in (fs.find(checkpoint) if fs.exists(checkpoint) else [])
            if f.endswith(".parquet") and not f.endswith(".pending.parquet")]


def _checkpointed_rows(fs, partial: str) -> int:
    """Rows whose ids Ray Data's checkpoint holds as committed: what a resumed run skips."""
    import pyarrow.dataset as pads

    files = _committed_checkpoints(fs, partial)
    return pads.dataset(files, filesystem=fs, format="parquet").count_rows() if files else 0


def _read_run(fs, partial: str) -> dict:
    try:
        with fs.open(posixpath.join(partial, RUN_FILE), "r") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def write_output(ds, target: OutputTarget, expected_rows: int, manifest: Callable[[dict], dict],
                 before_publish: Callable[[], None] = lambda: None) -> dict:
    """Write ``ds`` (resuming an unfinished run of the same settings), call ``before_publish``, publish it,
    then the manifest (``manifest(counts)``, called once every row is written); returns the counts: per
    config (None without configs), (rows, skipped)."""
    from ray.data.checkpoint import CheckpointConfig

    fs, partial = target.fs, target.partial
    data = posixpath.join(partial, "data")
    fs.makedirs(data, exist_ok=True)
    if not fs.exists(posixpath.join(partial, RUN_FILE)):
        with fs.open(posixpath.join(partial, RUN_FILE), "w") as fh:
            json.dump(target.run, fh, indent=2, ensure_ascii=False)
    # On the dataset's own context (a copy taken when the dataset was made), so nothing else runs with it.
    ds.context.checkpoint_config = CheckpointConfig(
        id_column=ID_COLUMN, checkpoint_path=target.ray_path(posixpath.join(partial, "checkpoint")),
        delete_checkpoint_on_success=False)
    ds.write_parquet(target.ray_path(data), min_rows_per_file=ROWS_PER_FILE, ray_remote_args={"num_cpus": WRITE_CPUS})
    counts = count_rows(fs, data)
    rows, skipped = sum(n for n, _ in counts.values()), sum(k for _, k in counts.values())
    if rows != expected_rows:
        fs.rm(partial, recursive=True)  # not a state to resume from
        raise RuntimeError(f"wrote {rows} rows but the input has {expected_rows}")
    before_publish()
    _publish(target, data, {**manifest(counts), "rows": rows, "skipped": skipped})
    fs.rm(partial, recursive=True)
    return counts


def committed_files(target: OutputTarget) -> list[str]:
    """The data files of the unfinished run whose checkpoints are committed: complete, and never written
    again (a data file is named after its checkpoint: ``<checkpoint stem>-<n>.parquet``)."""
    fs, data = target.fs, posixpath.join(target.partial, "data")
    stems = {posixpath.basename(f)[:-len(".parquet")] for f in _committed_checkpoints(fs, target.partial)}
    if not stems or not fs.exists(data):
        return []
    return sorted(f for f in fs.find(data) if f.endswith(".parquet")
                  and posixpath.basename(f).rsplit("-", 1)[0] in stems)


def _publish(target: OutputTarget, data: str, manifest: dict) -> None:
    """The data files and the manifest into ``--output``, replacing an old output (``--overwrite``). On a
    local disk: the manifest into ``data/``, then one rename (with what else ``data/`` holds, such as the
    ledger of records logged while the job ran): no moment shows an output without its manifest. On an
    object store: the files copied, then the manifest, last; a kill in between leaves files without a
    manifest, which readers refuse and the next run of the same settings replaces (``prepare_output``)."""
    fs = target.fs
    local = target.ray_path(data) == data
    if local:
        write_manifest(fs, data, manifest)
    if target.exists or fs.exists(target.path):
        fs.rm(target.path, recursive=True)
    if local:
        fs.mv(data, target.path, recursive=True)
        return
    files = [f for f in fs.find(data) if f.endswith(".parquet")]  # not the directory markers of object stores
    fs.copy(files, [posixpath.join(target.path, posixpath.relpath(f, data)) for f in files])
    write_manifest(fs, target.path, manifest)
