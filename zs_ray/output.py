"""The output format, owned here: the columns zs-ray adds, the manifest, and how an output is read back.

An annotation-job output is a directory (local path or any fsspec URI: ``file://``, ``s3://``, ...)
of Parquet files plus ``_zs_ray_manifest.json``, written last: its presence means the output is
complete. Every row holds the source columns, a stable ``id`` and the prediction columns below
(null for a row whose text was empty). ``stages/write.py`` writes it; ``log``, ``pull`` and any later
command read it back only through ``open_output``, so every URI the writer accepts is readable.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.dataset as pads

from zs_ray.errors import ZsRayError

ID_COLUMN = "id"
#: The dataset config (MLSum's language) of each row, for datasets with configs.
CONFIG_COLUMN = "config"
#: The prediction columns the model stage adds, in order: labels and scores by descending score,
#: then the top label and its score.
PREDICTION_SCHEMA = pa.schema([
    ("labels", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float64())),
    ("prediction", pa.string()),
    ("score", pa.float64()),
])
#: Every column zs-ray adds; a source column of the same name is kept as ``source_<name>``.
ADDED_COLUMNS = (ID_COLUMN, CONFIG_COLUMN, *PREDICTION_SCHEMA.names)
MANIFEST = "_zs_ray_manifest.json"
# At least this many rows per Parquet file: what a killed run loses at most per write task (a file and its
# checkpoint are committed together), and a full MLSum run is a few hundred files, not thousands.
ROWS_PER_FILE = 4096
ID_FORMAT = "<config>-<split>-<index in split, 7 digits>"


def source_name(column: str) -> str:
    """The output name of a source column (renamed when it clashes with an added column)."""
    return f"source_{column}" if column in ADDED_COLUMNS else column


def prediction_table(labels: Sequence[Optional[list]], scores: Sequence[Optional[list]]) -> pa.Table:
    """The prediction columns for rows whose ranked ``labels``/``scores`` are given (None: no prediction)."""
    return pa.table(
        [list(labels), list(scores), [l[0] if l else None for l in labels], [s[0] if s else None for s in scores]],
        schema=PREDICTION_SCHEMA,
    )


def uncertainty(scores: Sequence[Optional[Sequence[float]]], multi_label: bool) -> tuple[list, list]:
    """Each row's ``(margin, entropy)`` from its ranked ``scores`` (None for a row without a prediction): the
    one definition the round-2 queue (``--sample-by``) and the server metadata share.

    Single-label (scores sum to 1): margin = first - second score (1.0 with one label); entropy = the Shannon
    entropy of the distribution divided by log(number of labels), in [0, 1]. Multi-label (independent scores):
    margin = the smallest ``|2 s - 1|`` over the labels (how far the least certain label is from its 0.5
    decision); entropy = the mean binary entropy of the labels in bits, in [0, 1]. Low margin / high entropy:
    a person's label teaches the most.
    """
    import numpy as np

    widths = {len(row) if row else 0 for row in scores}
    if len(widths) == 1 and min(widths) > 1:  # every row has the same labels (an output's rows): all at once,
        s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)  # the same operations, the same values
        if multi_label:
            q = np.clip(s, 1e-12, 1 - 1e-12)
            return (np.min(np.abs(2.0 * s - 1.0), axis=1).tolist(),
                    np.mean(-(q * np.log2(q) + (1 - q) * np.log2(1 - q)), axis=1).tolist())
        ranked = np.sort(s, axis=1)[:, ::-1]
        terms = np.where(s > 0, s * np.log(np.where(s > 0, s, 1.0)), 0.0)  # 0 log 0 = 0, as p = s[s > 0] below
        return (ranked[:, 0] - ranked[:, 1]).tolist(), (-terms.sum(axis=1) / float(np.log(s.shape[1]))).tolist()
    margins: list = []
    entropies: list = []
    for row in scores:
        if not row:
            margins.append(None)
            entropies.append(None)
            continue
        s = np.clip(np.asarray(row, dtype=np.float64), 0.0, 1.0)
        if multi_label:
            margins.append(float(np.min(np.abs(2.0 * s - 1.0))))
            q = np.clip(s, 1e-12, 1 - 1e-12)
            entropies.append(float(np.mean(-(q * np.log2(q) + (1 - q) * np.log2(1 - q)))))
        else:
            ranked = np.sort(s)[::-1]
            margins.append(float(ranked[0] - ranked[1]) if len(ranked) > 1 else 1.0)
            p = s[s > 0]
            h = float(-(p * np.log(p)).sum())
            entropies.append(h / float(np.log(len(s))) if len(s) > 1 else 0.0)
    return margins, entropies


def config_runs(batch: pa.Table):
    """(config, rows) of each run of consecutive rows of one config in ``batch``, in order (one run, config
    None, without a config column). Rows come config by config, so a batch holds one run, or two at a border."""
    if CONFIG_COLUMN not in batch.column_names or batch.num_rows == 0:
        yield None, batch
        return
    import numpy as np

    values = batch.column(CONFIG_COLUMN).to_numpy(zero_copy_only=False)
    starts = [0, *(np.flatnonzero(values[1:] != values[:-1]) + 1).tolist(), len(values)]
    for lo, hi in zip(starts, starts[1:]):
        yield values[lo], batch.slice(lo, hi - lo)


def filesystem(uri: str):
    """(fsspec filesystem, path) of a local path or URI."""
    import fsspec

    return fsspec.core.url_to_fs(uri)


def data_dataset(fs, path: str) -> pads.Dataset:
    """The Parquet files under ``path`` (hidden ``.`` and ``_`` entries left out) as one dataset."""
    return pads.dataset(path, format="parquet", filesystem=fs, exclude_invalid_files=True,
                        ignore_prefixes=[".", "_"])


def count_rows(fs, path: str) -> dict[Optional[str], tuple[int, int]]:
    """Per config (None without configs): (rows, rows without a prediction) of written Parquet under ``path``,
    from the ``score`` and ``config`` columns only."""
    dataset = data_dataset(fs, path)
    if not dataset.files:
        return {}
    keys = [CONFIG_COLUMN] if CONFIG_COLUMN in dataset.schema.names else []
    counts: dict[Optional[str], tuple[int, int]] = {}
    # Batch by batch: the driver never holds a column of the whole output (1.5M rows: 12 MB of scores).
    for batch in dataset.to_batches(columns=["score", *keys]):
        agg = pa.Table.from_batches([batch]).group_by(keys).aggregate(  # the key column first, if any
            [("score", "count", pa.compute.CountOptions("all")), ("score", "count", pa.compute.CountOptions("only_null"))])
        configs = agg.column(0).to_pylist() if keys else [None]
        for c, rows, null in zip(configs, *(agg.column(i).to_pylist() for i in (len(keys), len(keys) + 1))):
            before = counts.get(c, (0, 0))
            counts[c] = (before[0] + rows, before[1] + null)
    return counts


def manifest(settings: dict, **facts) -> dict:
    """The manifest of a run: its settings (``candidate_labels`` for the labels), ``facts`` (config,
    text field, precision, device, ``configs``: each config's model, template, labels and counts, ...), the
    id format, the time and the versions of what computed it. For one config, its model, template and labels
    are also the top-level settings; for several, those are null and ``for_config`` gives each one's."""
    from datetime import datetime, timezone

    import pyarrow
    import ray
    import torch
    import transformers

    import zs_ray

    settings = dict(settings)
    settings["candidate_labels"] = settings.pop("labels")
    return {
        **settings,
        **facts,
        "id_format": ID_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"zs_ray": zs_ray.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "ray": ray.__version__, "pyarrow": pyarrow.__version__},
    }


def write_manifest(fs, path: str, manifest: dict) -> None:
    """Written last: its presence is what makes an output complete."""
    with fs.open(posixpath.join(path, MANIFEST), "w") as fh:
        json.dump(manifest, fh, indent=2, ensure_ascii=False)


@dataclass
class Output:
    """A complete annotation-job output, opened for reading."""

    uri: str
    fs: object
    path: str
    manifest: dict
    dataset: pads.Dataset

    @property
    def text_field(self) -> str:
        return self.manifest["text_field"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("candidate_labels") or [])

    @property
    def configs(self) -> list[str]:
        """The dataset configs of the run (several for a multi-language run; [] for older outputs)."""
        return list(self.manifest.get("configs") or {})

    def for_config(self, config: str) -> "Output":
        """The rows of one config, with that config's settings and counts as the manifest's."""
        import pyarrow.compute as pc

        facts = self.manifest["configs"][config]
        manifest = {**self.manifest, **facts, "config": config}
        return Output(self.uri, self.fs, self.path, manifest, self.dataset.filter(pc.field(CONFIG_COLUMN) == config))


def open_output(uri: str) -> Output:
    """Open a complete output (any fsspec URI); a one-line error for a missing or incomplete one."""
    try:
        fs, path = filesystem(uri)
        if not fs.isdir(path):
            raise ZsRayError(f"input {uri} does not exist or is not a directory")
        manifest_path = posixpath.join(path, MANIFEST)
        if not fs.isfile(manifest_path):
            raise ZsRayError(f"{uri} has no {MANIFEST}: the annotation job did not finish writing it")
        with fs.open(manifest_path, "r") as fh:
            try:
                manifest = json.load(fh)
            except ValueError as exc:
                raise ZsRayError(f"{manifest_path} is not valid JSON: {exc}") from None
        dataset = data_dataset(fs, path)
    except ZsRayError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise ZsRayError(f"cannot read output {uri}: {exc}") from None
    if not dataset.files:
        raise ZsRayError(f"{uri} holds no Parquet files")
    return Output(uri, fs, path, manifest, dataset)
