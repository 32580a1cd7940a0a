"""Read every record of a Rubrix dataset back (prediction, annotation, annotator, status) to Parquet.

Pages with ``/TextClassification/data`` + ``id_from`` on Rubrix 0.x, ``records/:search`` +
``next_idx`` on Argilla 1.x (never ``:search?from=``, which stops at 10,000 records), and
``/api/v1/datasets/{id}/records`` by offset on Argilla 2.x (``argilla2_pull.pull_rows``). The rows are the
same on every server: Rubrix 0.x streams records as sent (labels ``{"class", "score"}``), Argilla 1.2+
returns the stored documents (labels ``{"class_label", "score"}``, agents also as ``{agent: {...}}``
maps and ``annotated_by``). A missing or null status is kept as null. The Parquet file is written page
by page to a temporary name and renamed when complete: an error (also one inside a ``/data`` stream)
leaves no file.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from zs_ray.errors import ZsRayError
from zs_ray.servers import v1
from zs_ray.servers.argilla2_pull import STATUS_FROM_V2
from zs_ray.servers.client import RubrixError
from zs_ray.servers.config import ServerConfig
from zs_ray.servers.connect import connect

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("text", pa.string()),
    ("inputs", pa.map_(pa.string(), pa.string())),
    ("prediction_labels", pa.list_(pa.string())),
    ("prediction_scores", pa.list_(pa.float64())),
    ("prediction_agent", pa.string()),
    ("annotation_labels", pa.list_(pa.string())),
    ("annotation_agent", pa.string()),
    ("status", pa.string()),
    ("multi_label", pa.bool_()),
    ("metadata", pa.map_(pa.string(), pa.string())),
    # Every response every person gave (2.x: all of a record's; 0.x/1.x: its one annotation), by annotator.
    ("responses", pa.list_(pa.struct([("annotator", pa.string()), ("labels", pa.list_(pa.string())),
                                      ("status", pa.string())]))),
])
# A 1.x record status -> the status of its one response (the 2.x names, which the responses column uses).
RESPONSE_STATUS = {v: k for k, v in STATUS_FROM_V2.items()}


@dataclass
class PullReport:
    dataset: str
    path: str
    rows: int = 0
    status: dict[str, int] = field(default_factory=dict)
    responses: int = 0

    def summary(self) -> str:
        st = ", ".join(f"{k or 'no status'} {v}" for k, v in sorted(self.status.items(), key=lambda kv: kv[0] or ""))
        return (f"pulled {self.rows} records and {self.responses} responses of {self.dataset} to {self.path} "
                f"({st or 'none'})")


def _one(value, agent_key: str = "agent") -> tuple[dict | None, str | None]:
    """A prediction/annotation as stored, or the first of an ``{agent: {...}}`` mapping."""
    if not value or not isinstance(value, dict):
        return None, None
    if "labels" in value:
        return value, value.get(agent_key)
    agent, inner = next(iter(value.items()))
    return (inner, inner.get("agent") or agent) if isinstance(inner, dict) else (None, None)


def _labels(value: dict | None) -> tuple[list | None, list | None]:
    """(classes, scores) of a prediction/annotation; a label is {"class"} as sent (Rubrix 0.x) or
    {"class_label"} as stored (Argilla 1.2+)."""
    if value is None:
        return None, None
    labels = value.get("labels") or []
    classes = [str(x["class"] if "class" in x else x.get("class_label")) for x in labels]
    return classes, [float(x.get("score", 1.0)) for x in labels]


def _text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def to_row(r: dict) -> dict:
    """One server record (either generation) -> one Parquet row."""
    inputs = r.get("inputs") or ({"text": r["text"]} if "text" in r else {})
    pred, pred_agent = _one(r.get("prediction") or r.get("predictions"))
    ann, ann_agent = _one(r.get("annotation") or r.get("annotations"))
    meta = r.get("metadata") or {}
    pred_labels, pred_scores = _labels(pred)
    ann_labels, _ = _labels(ann)
    status = r.get("status")
    responses = [] if ann is None else [{
        "annotator": ann_agent or (r.get("annotated_by") or [None])[0], "labels": ann_labels,
        "status": RESPONSE_STATUS.get(str(status), str(status).lower() if status is not None else None)}]
    return {
        "id": str(r.get("id")),
        "text": inputs.get("text", next(iter(inputs.values()), None)) if inputs else None,
        "inputs": [(k, _text(v)) for k, v in inputs.items()],
        "prediction_labels": pred_labels,
        "prediction_scores": pred_scores,
        "prediction_agent": pred_agent or (r.get("predicted_by") or [None])[0] or r.get("prediction_agent")
        if pred else None,
        "annotation_labels": ann_labels,
        "annotation_agent": ann_agent or (r.get("annotated_by") or [None])[0] if ann else None,
        "status": str(status) if status is not None else None,
        "multi_label": r.get("multi_label"),
        "metadata": [(k, _text(v)) for k, v in meta.items() if v is not None],
        "responses": responses,
    }


def decide(rows: list[dict], reviewers=()) -> list[dict]:
    """Each row's annotation becomes the consensus of its submitted responses (``zs_ray.team``, majority: a
    tie is left unresolved, with no annotation; a reviewer's answer decides), its agent who decided it: the
    one annotator, ``consensus``, or the reviewer. Rows without a submitted response keep what they have."""
    from zs_ray.team import Responses, resolve

    per_record, keys = [], {}
    for row in rows:
        answers = []
        for x in row.get("responses") or []:
            if x["status"] == "submitted" and x["labels"]:
                key = "\x1f".join(sorted(x["labels"])) if row.get("multi_label") else x["labels"][0]
                keys[key] = sorted(x["labels"]) if row.get("multi_label") else x["labels"]
                answers.append((x["annotator"], key))
        per_record.append(answers)
    if not keys:
        return rows
    team = Responses.from_lists([r["id"] for r in rows], per_record)
    result = resolve(team, "majority", reviewers=list(reviewers))
    for row, answers, label, agent in zip(rows, per_record, result.label, result.decided_by):
        if answers:
            row["annotation_labels"] = keys[team.labels[label]] if label >= 0 else None
            row["annotation_agent"] = agent if label >= 0 else None
    return rows


def pull(config: ServerConfig, output_path: str | os.PathLike, query: dict | None = None,
         page_size: int = 1000, reviewers=()) -> PullReport:
    """Write every record of ``config.rubrix_dataset`` (optionally filtered by a server query, e.g.
    ``{"status": ["Validated"]}``) to ``output_path`` (a path or fsspec URI ending in .parquet): every response in
    ``responses``, their consensus (``decide``; ``reviewers``' answers decide) as the annotation."""
    import fsspec
    from tqdm.auto import tqdm

    target = str(output_path)
    if not target.endswith(".parquet"):
        raise ZsRayError(f"pull writes Parquet: give an output path ending in .parquet, not {target}")
    config.validate()
    fs, path = fsspec.core.url_to_fs(target)
    client, info, existed = connect(config)
    report = PullReport(config.rubrix_dataset, target)
    if not existed:
        client.close()
        raise ZsRayError(f"dataset {config.rubrix_dataset} does not exist on {config.public_url}")
    parent, name = posixpath.split(path)
    tmp = posixpath.join(parent, f".{name}.tmp")
    status: Counter = Counter()
    try:
        fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as fh, pq.ParquetWriter(fh, SCHEMA) as writer, \
                tqdm(unit="rec", desc=f"pull {config.rubrix_dataset}", disable=None) as bar:
            rows: list[dict] = []
            if info.generation == "argilla2":  # the /api/v1 records, mapped to the same rows
                from zs_ray.servers import argilla2_pull

                source = argilla2_pull.pull_rows(client, config, client.argilla2, (query or {}).get("status"), page_size,
                                                 reviewers)
            else:
                source = map(to_row, v1.iter_records(client, query, page=page_size, retry=True))
            for row in source:
                rows.append(row)
                status[rows[-1]["status"]] += 1
                bar.update()
                if len(rows) >= page_size:
                    writer.write_table(pa.Table.from_pylist(decide(rows, reviewers), schema=SCHEMA))
                    report.rows += len(rows)
                    report.responses += sum(len(r["responses"]) for r in rows)
                    rows = []
            if rows:
                writer.write_table(pa.Table.from_pylist(decide(rows, reviewers), schema=SCHEMA))
                report.rows += len(rows)
                report.responses += sum(len(r["responses"]) for r in rows)
        fs.mv(tmp, path)
    except RubrixError as exc:
        raise ZsRayError(f"reading {config.rubrix_dataset} from {config.public_url}: {exc}") from None
    finally:
        client.close()
        if fs.exists(tmp):
            fs.rm(tmp)
    report.status = dict(status)
    return report
