"""The inputs of evaluate and thresholds, read into one shape: per record its id, predicted (top) label and
score, and its human label (None where it has none that counts).

* A ``zs-ray pull`` file (``zs_ray.servers.pull.SCHEMA``): the prediction is the top-scored of
  ``prediction_labels``/``prediction_scores`` (the server's order is not the score order on every
  generation). With a ``responses`` column (every file pulled since teams), a record's human label is the
  consensus (``--consensus``, ``--reviewers``: ``zs_ray.workflow.consensus``) of its responses with a status in
  ``statuses`` (default Validated, a submitted response) by annotators not in ``exclude_agents`` (default the bulk
  labels' ``zs-ray-bulk``: evaluating the bulk labels against themselves would say nothing); ties are counted
  as unresolved and left out. An older file without it: the record's one annotation, on the same terms.
* An annotation-job output with a gold column and a YAML label map (gold value -> candidate label): gold
  values the map does not name are counted (``unmapped``) and left out.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zs_ray.checks import load_yaml
from zs_ray.errors import ZsRayError

PULL_COLUMNS = ("id", "prediction_labels", "prediction_scores", "annotation_labels", "annotation_agent", "status",
                "multi_label")


@dataclass
class Labelled:
    """Every record of the input (``ids``, ``pred``, ``score``, ``gold``: None = no human label) + facts."""

    source: str
    kind: str  # "pull" or "output"
    ids: np.ndarray
    pred: np.ndarray  # object: top label (None: no prediction)
    score: np.ndarray  # float: its score (nan: no prediction)
    gold: np.ndarray  # object: the human/gold label, None where there is none
    labels: list[str]  # candidate labels (sorted union of what was predicted and labelled, or the manifest's)
    status: Optional[np.ndarray] = None  # pull: the record's status
    annotated: Optional[np.ndarray] = None  # pull: has any annotation (a person's or a bulk label)
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    unmapped: dict = field(default_factory=dict)
    text: Optional[np.ndarray] = None  # object: each record's text, when asked for (``zs-ray tune``)

    @property
    def has_gold(self) -> np.ndarray:
        return np.array([g is not None for g in self.gold], dtype=bool) & ~np.isnan(self.score)

    @property
    def n_labelled(self) -> int:
        return int(self.has_gold.sum())


def top(labels, scores) -> tuple[Optional[str], float]:
    if not labels or not scores:
        return None, float("nan")
    i = int(np.argmax(scores))
    return labels[i], float(scores[i])


def read_pulled(path: str, columns=PULL_COLUMNS, why: str = "not a `zs-ray pull` file (an annotation-job output "
                "needs --gold-column and --label-map)") -> pa.Table:
    """A pulled file as a table, refused in one line if it is missing, not Parquet, or lacks ``columns``."""
    if not os.path.exists(path):
        raise ZsRayError(f"--input {path} does not exist")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ZsRayError(f"--input {path} is not a Parquet file: {exc}") from None
    missing = [c for c in columns if c not in table.schema.names]
    if missing:
        raise ZsRayError(f"--input {path} has no column(s) {', '.join(missing)}: {why}")
    return table


def load_pulled(path: str, statuses=("Validated",), exclude_agents=("zs-ray-bulk",), with_text: bool = False,
                consensus: str = "majority", reviewers=()) -> Labelled:
    table = read_pulled(path)
    if table.num_rows == 0:
        raise ZsRayError(f"--input {path} holds no records")
    cols = {c: table.column(c).to_pylist() for c in PULL_COLUMNS}
    if any(cols["multi_label"]):
        raise ZsRayError(f"--input {path} holds multi-label records: evaluate and thresholds handle single-label "
                         "datasets only")
    team = None
    if "responses" in table.schema.names:  # every person's answer: the consensus is the human label
        from zs_ray.workflow.consensus import team_labels

        cols.update({c: table.column(c).to_pylist() for c in ("responses", "metadata")})
        labels = sorted({x for ls in cols["prediction_labels"] if ls for x in ls})
        team = team_labels(cols, labels, consensus, reviewers, statuses, exclude_agents)
    preds, scores, gold, annotated = [], [], [], []
    why: Counter = Counter()
    for i in range(table.num_rows):
        p, s = top(cols["prediction_labels"][i], cols["prediction_scores"][i])
        preds.append(p)
        scores.append(s)
        ann = cols["annotation_labels"][i]
        annotated.append(ann is not None or bool(team and cols["responses"][i]))
        g = None
        if team is not None:
            g = team.gold[i]
            if g is not None and p is None:
                why["no prediction"] += 1
                g = None
        elif ann is not None:
            if cols["status"][i] not in statuses:
                why[f"status {cols['status'][i]}"] += 1
            elif cols["annotation_agent"][i] in exclude_agents:
                why[f"annotated by {cols['annotation_agent'][i]}"] += 1
            elif len(ann) != 1:
                why["annotated with no label"] += 1
            elif p is None:
                why["no prediction"] += 1
            else:
                g = ann[0]
        gold.append(g)
    labelled = Labelled(path, "pull", np.array(cols["id"], dtype=object), np.array(preds, dtype=object),
                        np.array(scores, dtype=float), np.array(gold, dtype=object), [],
                        status=np.array(cols["status"], dtype=object), annotated=np.array(annotated, dtype=bool))
    labelled.labels = sorted({p for p in preds if p} | {g for g in gold if g}
                             | {x for ls in cols["prediction_labels"] if ls for x in ls})
    labelled.notes = [f"{n} annotated records left out ({w})" for w, n in sorted(why.items())]
    if team is not None:
        labelled.notes = team.notes + labelled.notes
    if with_text:
        labelled.text = np.array(table.column("text").to_pylist() if "text" in table.schema.names
                                 else [None] * table.num_rows, dtype=object)
    return labelled


def load_label_map(path: str) -> dict[str, str]:
    data = load_yaml(path, "--label-map")
    if not isinstance(data, dict) or not data:
        raise ZsRayError(f"--label-map {path} must be a non-empty mapping of gold values to labels")
    return {str(k): str(v) for k, v in data.items() if v is not None}


def load_output(uri: str, gold_column: str, label_map_path: str, config: Optional[str] = None,
                with_text: bool = False) -> Labelled:
    from zs_ray.output import open_output

    out = open_output(uri)
    if config is not None:
        if config not in out.configs:
            raise ZsRayError(f"--config {config!r} is not a config of {uri} ({', '.join(out.configs) or 'none'})")
        out = out.for_config(config)
    names = out.dataset.schema.names
    if gold_column not in names:
        raise ZsRayError(f"--gold-column {gold_column!r} is not a column of {uri} ({', '.join(names)})")
    mapping = load_label_map(label_map_path)
    text = [out.text_field] if with_text and out.text_field != gold_column else []
    table = out.dataset.to_table(columns=["id", "prediction", "score", gold_column, *text])
    if table.num_rows == 0:
        raise ZsRayError(f"{uri} holds no rows")
    raw = table.column(gold_column).to_pylist()
    candidates = out.labels
    bad = sorted({v for v in mapping.values() if candidates and v not in candidates})
    if bad:
        raise ZsRayError(f"--label-map {label_map_path} maps to {', '.join(bad)}, not candidate labels of the run "
                         f"({', '.join(candidates)})")
    gold = [mapping.get(str(v)) if v is not None else None for v in raw]
    unmapped = Counter(str(v) for v, g in zip(raw, gold) if g is None)
    if not any(g is not None for g in gold):
        raise ZsRayError(f"--label-map {label_map_path} maps none of the {len(raw)} gold values of {gold_column!r} "
                         f"(most common: {', '.join(k for k, _ in unmapped.most_common(5))})")
    score = np.array([np.nan if s is None else s for s in table.column("score").to_pylist()], dtype=float)
    labelled = Labelled(uri, "output", np.array(table.column("id").to_pylist(), dtype=object),
                        np.array(table.column("prediction").to_pylist(), dtype=object), score,
                        np.array(gold, dtype=object), list(candidates) or sorted(set(mapping.values())))
    labelled.unmapped = dict(unmapped.most_common())
    if with_text:
        labelled.text = np.array(table.column(out.text_field).to_pylist(), dtype=object)
    if unmapped:
        labelled.notes.append(f"{sum(unmapped.values())} rows left out: their {gold_column} is not in the label map "
                              f"({', '.join(f'{k} {v}' for k, v in unmapped.most_common(8))})")
    no_pred = int(np.isnan(score).sum())
    if no_pred:
        labelled.notes.append(f"{no_pred} rows without a prediction (empty text) left out")
    return labelled


def load(input: str, gold_column: Optional[str] = None, label_map: Optional[str] = None,
         statuses=("Validated",), exclude_agents=("zs-ray-bulk",), config: Optional[str] = None,
         with_text: bool = False, consensus: str = "majority", reviewers=()) -> Labelled:
    """The records of ``input`` (with ``with_text``, their texts too; ``config``: one config's rows of an output;
    ``consensus``, ``reviewers``: how a pulled file's responses become one label, ``zs_ray.workflow.consensus``)."""
    if gold_column:
        return load_output(input, gold_column, label_map, config, with_text)
    if os.path.isdir(input):
        raise ZsRayError(f"--input {input} is a directory: for an annotation-job output give --gold-column and "
                         "--label-map; for annotations, a `zs-ray pull` file")
    return load_pulled(input, tuple(statuses), tuple(exclude_agents), with_text, consensus, tuple(reviewers or ()))


def load_for(settings, config: Optional[str] = None, with_text: bool = False) -> Labelled:
    """``load`` with a command's settings (``LabelledInputConfig`` or one with its pulled-file fields)."""
    return load(settings.input, getattr(settings, "gold_column", None), getattr(settings, "label_map", None),
                settings.status, settings.exclude_agent, config, with_text, settings.consensus, settings.reviewers)


def require_labels(data: Labelled, minimum: int = 1) -> None:
    if data.n_labelled < minimum:
        extra = f" ({'; '.join(data.notes)})" if data.notes else ""
        raise ZsRayError(f"{data.source} has no human labels to evaluate against: {len(data.ids)} records, none "
                         f"annotated with a status that counts{extra}; label some (e.g. the round-1 sample) and "
                         "pull again")
