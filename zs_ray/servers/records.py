"""Annotation-job rows -> Rubrix text-classification records, as the seed tutorial builds them.

The seed logs ``rb.TextClassificationRecord(inputs=row[text_field], prediction=list(zip(labels,
scores)), prediction_agent=model, metadata={"topic": ...})``; the REST form of that is
``{"id", "inputs": {"text": ...}, "prediction": {"agent", "labels": [{"class", "score"}]},
"metadata", "multi_label"}``. Everything the server would refuse or silently cut is checked here,
before anything is sent.

Metadata values are made JSON the server takes: dates and times become ISO 8601 strings, decimals
numbers; NaN and infinite floats (Elasticsearch answers 500 to them) are left out of that record's
metadata, as missing values are, and counted for a warning. Columns that cannot be metadata (binary,
nested, durations) or whose strings the server would cut (> 128 characters) are left out with a warning,
or refused before any work when named in ``--rubrix-metadata-fields``.

The whole distribution goes along as metadata (``with_scores``): every candidate label's score as a float
``score_<label>`` (a name every server generation takes, see ``score_keys``), and the row's ``margin`` and
``entropy`` (``zs_ray.output.uncertainty``, the one definition). Rubrix 0.x / Argilla 1.x hold at most 50
metadata keys per dataset: when the labels do not fit beside the source fields, the per-label scores are
left out with one warning and margin and entropy kept.
"""

from __future__ import annotations

import dataclasses

import datetime
import decimal
import json
import logging
import hashlib
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from zs_ray.errors import ZsRayError
from zs_ray.output import ADDED_COLUMNS, uncertainty
from zs_ray.servers.config import SAMPLE_KEY, UNCERTAIN_KEY

log = logging.getLogger(__name__)

MAX_METADATA_KEYS = 50
MAX_METADATA_VALUE = 128
MAX_LABEL = 128
MAX_AGENT = 64
SCORE_SUM_TOLERANCE = 1.001
SCORE_PREFIX = "score_"
MARGIN_KEY, ENTROPY_KEY = "margin", "entropy"
SLUG_MAX = 60


@dataclass(frozen=True)
class RecordSpec:
    """How rows become records; fixed for one output directory."""

    text_field: str
    multi_label: bool
    agent: str
    metadata_fields: tuple[str, ...]
    sample: object = None  # a sample rule (SendConfig.sample_rule_for): its records get metadata {"sample": name}
    score_keys: tuple[tuple[str, str], ...] = ()  # (label, metadata name) of each label's score (with_scores)
    uncertainty: bool = False  # margin and entropy as metadata (with_scores)
    uncertain: object = None  # the uncertainty queue (SendConfig.uncertain_rule_for): metadata {"uncertain": name}


def check_label(label: str, where: str) -> None:
    if not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL:
        raise ZsRayError(f"{where}: label {str(label)[:40]!r} must be 1-{MAX_LABEL} characters")


def make_spec(dataset: pds.Dataset, manifest: dict, metadata_fields: list[str] | None,
              agent: str | None, sample=None, uncertain=None) -> tuple[RecordSpec, list[str]]:
    """Check the manifest and the columns; choose metadata fields. Returns (spec, warnings).

    With ``metadata_fields`` None, every other source column becomes metadata unless its type cannot be
    (binary, nested, ...) or some value is longer than the server keeps (128 chars): such a column is
    left out with a warning. Named fields must fit, or this raises: the server would cut them silently.
    """
    names = dataset.schema.names
    text_field = manifest.get("text_field")
    if text_field not in names:
        raise ZsRayError(f"text field {text_field!r} from the manifest is not a column ({names})")
    missing = [c for c in ("id", "labels", "scores") if c not in names]
    if missing:
        raise ZsRayError(f"output has no column(s) {missing}: not an annotation-job output?")
    agent = agent or manifest.get("model") or ""
    if not 1 <= len(agent) <= MAX_AGENT:
        raise ZsRayError(
            f"prediction agent {agent!r} must be 1-{MAX_AGENT} characters: set --rubrix-agent"
        )
    for label in manifest.get("candidate_labels") or []:
        check_label(label, "candidate labels")

    warnings: list[str] = []
    explicit = metadata_fields is not None
    if explicit:
        unknown = [f for f in metadata_fields if f not in names]
        if unknown:
            raise ZsRayError(f"metadata field(s) {unknown} are not columns of the output ({names})")
        fields = list(metadata_fields)
    else:
        fields = [f for f in names if f not in ADDED_COLUMNS and f != text_field]
    kinds = {f: metadata_kind(dataset.schema.field(f).type) for f in fields}
    longest = _max_lengths(dataset, [f for f in fields if kinds[f] == "string"])
    for f in list(fields):
        if kinds[f] is None:
            msg = (f"metadata field {f!r} is {dataset.schema.field(f).type}, which metadata cannot hold "
                   "(strings, numbers, booleans, dates and times can)")
        elif longest.get(f, 0) > MAX_METADATA_VALUE:
            msg = (f"metadata field {f!r} has values up to {longest[f]} characters; the server cuts "
                   f"metadata values at {MAX_METADATA_VALUE}")
        else:
            continue
        if explicit:
            raise ZsRayError(msg + ": leave it out of --rubrix-metadata-fields")
        warnings.append(msg + "; it is not logged as metadata")
        fields.remove(f)
    if sample is not None and SAMPLE_KEY in fields:
        raise ZsRayError(f"a metadata field is named {SAMPLE_KEY!r}, the key that marks --sample: leave it out "
                         "of --rubrix-metadata-fields")
    if uncertain is not None and UNCERTAIN_KEY in fields:
        raise ZsRayError(f"a metadata field is named {UNCERTAIN_KEY!r}, the key that marks --uncertain: leave it "
                         "out of --rubrix-metadata-fields")
    if len(fields) + (sample is not None) + (uncertain is not None) > MAX_METADATA_KEYS:
        raise ZsRayError(
            f"{len(fields)} metadata fields exceed the server's limit of {MAX_METADATA_KEYS} per "
            "dataset: choose some with --rubrix-metadata-fields"
        )
    spec = RecordSpec(text_field, bool(manifest.get("multi_label", False)), agent, tuple(fields), sample,
                      uncertain=uncertain)
    return spec, warnings


def score_keys(labels) -> dict[str, str]:
    """label -> the metadata name of its score: ``score_`` + the label in lowercase ASCII letters, digits and
    ``_`` (accents dropped, anything else ``_``), which Argilla 2.x property names, Elasticsearch field names
    and 1.x's dotted metadata all take. A name that would be empty, cut (over 60 characters) or shared by two
    labels gets the first 6 hex digits of the label's SHA-1 appended: unique, and stable for a label set."""
    def slug(label: str) -> str:
        text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower()
        return re.sub(r"[^a-z0-9]+", "_", text).strip("_")

    slugs = {label: slug(label) for label in labels}
    seen = Counter(slugs.values())
    out = {}
    for label, name in slugs.items():
        if not name or len(name) > SLUG_MAX or seen[name] > 1:
            name = f"{name[:SLUG_MAX]}_{hashlib.sha1(label.encode()).hexdigest()[:6]}".lstrip("_")
        out[label] = SCORE_PREFIX + name
    return out


def with_scores(spec: RecordSpec, labels, max_keys: int | None = MAX_METADATA_KEYS,
                what: str = "all") -> tuple[RecordSpec, list[str]]:
    """``spec`` with the distribution as metadata: each label's score, margin and entropy. ``max_keys``: the
    server's metadata keys per dataset (Rubrix 0.x / Argilla 1.x: 50; None: no limit, Argilla 2.x). What does
    not fit beside the source fields (and the sample and queue keys) is left out with a warning, the per-label scores
    first. A source field named like one of these keys is refused (one line). ``what``: all, uncertainty
    (margin and entropy only) or none (``--rubrix-score-metadata``)."""
    if what == "none":
        return dataclasses.replace(spec, score_keys=(), uncertainty=False), []
    keys = score_keys(list(labels or [])) if what == "all" else {}
    taken = set(spec.metadata_fields) | ({SAMPLE_KEY} if spec.sample is not None else set()) \
        | ({UNCERTAIN_KEY} if spec.uncertain is not None else set())
    clash = sorted(taken & {*keys.values(), MARGIN_KEY, ENTROPY_KEY})
    if clash:
        raise ZsRayError(f"metadata field(s) {clash} have the name of a key zs-ray writes (per-label scores, "
                         "margin, entropy): leave them out with --rubrix-metadata-fields")
    room = None if max_keys is None else max_keys - len(taken)
    warnings = []
    if room is not None and room < 2 + len(keys):
        warnings.append(f"{len(keys)} labels' scores do not fit the server's {max_keys} metadata keys per dataset "
                        f"beside {len(taken)} metadata fields: the per-label scores are not logged as metadata"
                        + (", margin and entropy are" if room >= 2 else ", nor margin and entropy")
                        + " (fewer --rubrix-metadata-fields make room)")
        keys = {}
    use_uncertainty = room is None or room >= 2
    return dataclasses.replace(spec, score_keys=tuple(keys.items()), uncertainty=use_uncertainty), warnings


def metadata_kind(t: pa.DataType) -> str | None:
    """How values of type ``t`` become metadata: "string" (length-checked), "value" (JSON number or bool;
    floats checked one by one), "iso" (dates and times: ISO strings), or None (they cannot)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t) or pa.types.is_null(t):
        return "value"
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return "iso"
    return None


def metadata_value(v):
    """A metadata value as JSON the server takes; None for a missing one (None, NaN, infinite)."""
    if isinstance(v, (datetime.date, datetime.time)):  # datetime is a date
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _max_lengths(dataset: pds.Dataset, columns: list[str]) -> dict[str, int]:
    longest = dict.fromkeys(columns, 0)
    if not columns:
        return longest
    for batch in dataset.to_batches(columns=columns):
        for c in columns:
            m = pc.max(pc.utf8_length(batch.column(c).cast(pa.string()))).as_py()
            if m is not None and m > longest[c]:
                longest[c] = m
    return longest


def build_records(batch: pa.RecordBatch, spec: RecordSpec, dropped: Counter | None = None) -> Iterator[dict | None]:
    """One record per row, or None for a row without a prediction (empty text: not logged). NaN and
    infinite metadata values are left out, counted by field in ``dropped``."""
    cols = {name: batch.column(name).to_pylist()
            for name in {"id", "labels", "scores", spec.text_field, *spec.metadata_fields}}
    keys = dict(spec.score_keys)
    margins, entropies = uncertainty(cols["scores"], spec.multi_label) if spec.uncertainty else ((), ())
    for i in range(batch.num_rows):
        labels, scores, text = cols["labels"][i], cols["scores"][i], cols[spec.text_field][i]
        if labels is None or scores is None or not text:
            yield None
            continue
        rid = cols["id"][i]
        if rid is None or rid == "":
            raise ZsRayError(f"row {i} of a batch has a prediction but no id")
        rid = str(rid)
        check_prediction(rid, labels, scores, spec.multi_label)
        metadata = {}
        for f in spec.metadata_fields:
            v = metadata_value(cols[f][i])
            if v is not None:
                metadata[f] = v
            elif cols[f][i] is not None and dropped is not None:
                dropped[f] += 1
        if spec.sample is not None and spec.sample.contains(rid, labels[0]):
            metadata[SAMPLE_KEY] = spec.sample.name
        for label, s in zip(labels, scores):
            if label in keys:
                metadata[keys[label]] = float(s)
        if spec.uncertainty:
            metadata[MARGIN_KEY], metadata[ENTROPY_KEY] = margins[i], entropies[i]
        if spec.uncertain is not None and spec.uncertain.contains(rid, labels[0]):
            metadata[UNCERTAIN_KEY] = spec.uncertain.name
        yield {
            "id": rid,
            "inputs": {"text": str(text)},
            "prediction": {"agent": spec.agent,
                           "labels": [{"class": c, "score": float(s)} for c, s in zip(labels, scores)]},
            "metadata": metadata,
            "multi_label": spec.multi_label,
        }


def check_prediction(rid: str, labels: list, scores: list, multi_label: bool) -> None:
    where = f"record {rid!r}"
    if len(labels) != len(scores) or not labels:
        raise ZsRayError(f"{where}: {len(labels)} labels but {len(scores)} scores")
    for label, s in zip(labels, scores):
        check_label(label, where)
        if s is None or not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ZsRayError(f"{where}: score {s!r} for {label!r} is not in [0, 1]")
    if not multi_label and sum(scores) > SCORE_SUM_TOLERANCE:
        raise ZsRayError(
            f"{where}: single-label scores sum to {sum(scores):.4f} > {SCORE_SUM_TOLERANCE}; the "
            "server refuses that (was the output made in multi-label mode?)"
        )


def encode(record: dict) -> bytes:
    """Compact UTF-8 JSON of one record (a chunk body is these joined, see ``bulk_body``)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def bulk_body(encoded: list[bytes], tags: dict[str, str]) -> bytes:
    """The ``:bulk`` request body from pre-encoded records."""
    head = b'{"tags":' + json.dumps(tags, ensure_ascii=False).encode() + b',"metadata":{},"records":['
    return head + b",".join(encoded) + b"]}"
