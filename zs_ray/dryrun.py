"""``annotate --dry-run``: the plan of a run and how long it should take, with nothing read but metadata.

Per config and split: rows (from Parquet footers, or the one indexing pass over JSON lines), (row, label)
pairs, the model, the pools; then an ETA per config and in total. The ETA comes from a calibration of each
model on the cluster's own hardware: a Ray task with one model worker's resources runs the engine on
synthetic texts as long as the config's texts (their mean length is read from the Parquet footers: the
text column's bytes over its rows) for a few seconds and measures pairs/s. Measured figures are kept in
``calibration.json`` in the cache directory (``zs_ray/cache.py``) under the model, the hardware (GPU name, or CPU model and the ISA torch
runs), the precision, the threads and the text length, so a later dry run on the same hardware reuses them.

    ETA of a config = pairs / (pairs/s of one worker x workers) + one model load
    (workers: the pool's largest size; the stream moves from one config's model to the next with one load)

With a dataset to log to (``--rubrix-dataset``), the logging time beside it: the records to log over the
server's rate (``servers.rate``: stored from the last ``zs-ray log`` to that server, or measured now by a short
probe into a scratch dataset that is deleted). Records are logged while the job predicts, so the run takes
about the longer of the two.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

CALIBRATION_S = 3.0  # measured time per calibration (after one warm-up batch)
_LENGTH_BUCKET = 1.25  # text lengths within 25% share a stored calibration


def _cache_file() -> Path:
    from zs_ray.cache import cache_dir

    return cache_dir() / "calibration.json"


# --------------------------------------------------------------------------- text length from metadata

def mean_text_chars(plan) -> float:
    """Mean characters of the text column per row, from metadata: Parquet column-chunk sizes (at most 16
    files), or the bytes per record of JSON lines (the whole record, so an upper bound)."""
    import pyarrow.parquet as pq

    source_field = next((k for k, v in plan.renamed.items() if v == plan.text_field), plan.text_field)
    total_bytes = rows = 0
    for path in list(dict.fromkeys(s.path for s in plan.segments))[:16]:
        seg = next(s for s in plan.segments if s.path == path)
        if seg.format == "parquet":
            with plan.filesystem.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
            col = meta.schema.to_arrow_schema().get_field_index(source_field)
            for g in range(meta.num_row_groups):
                chunk = meta.row_group(g).column(col)
                total_bytes += max(0, chunk.total_uncompressed_size - 4 * meta.row_group(g).num_rows)
                rows += meta.row_group(g).num_rows
        elif seg.byte_range is not None:
            total_bytes += seg.byte_range[1] - seg.byte_range[0]
            rows += seg.range_rows
    return total_bytes / rows if rows else 200.0


# --------------------------------------------------------------------------- calibration (a Ray task)

def _hardware(device: str, cpus: float) -> dict:
    import torch

    from zs_ray.engine import torch_threads_for

    if device == "cuda":
        return {"device": torch.cuda.get_device_name(0), "threads": 0}
    name = "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    return {"device": f"{name} ({torch.backends.cpu.get_cpu_capability()})", "threads": torch_threads_for(cpus)}


def _synthetic_texts(tokenizer, chars: float, n: int) -> list[str]:
    """``n`` texts of about ``chars`` characters, of whole words from the model's own vocabulary."""
    words = [w.lstrip("▁Ġ") for w in tokenizer.get_vocab()]
    words = sorted({w for w in words if len(w) >= 3 and w.isalpha()}) or ["texto"]
    rng = random.Random(0)
    texts = []
    for _ in range(n):
        parts, size = [], 0
        while size < chars:
            parts.append(rng.choice(words))
            size += len(parts[-1]) + 1
        texts.append(" ".join(parts))
    return texts


def _calibrate(model: str, labels: list, template: str, chars: float, multi_label: bool, precision: str,
               device: str, cpus: float, label_map: Optional[dict] = None) -> dict:
    """Runs on a model worker's resources: pairs/s of the engine on texts of ``chars`` characters."""
    import torch

    from zs_ray.engine import ZeroShotClassifier, torch_threads_for

    if device == "cpu":
        torch.set_num_threads(torch_threads_for(cpus))
    start = time.perf_counter()
    clf = ZeroShotClassifier(model, labels, template, multi_label=multi_label, precision=precision, device=device,
                             label_map=label_map)
    load_s = time.perf_counter() - start
    per_call = 64 if device == "cuda" else 8
    texts = _synthetic_texts(clf.encoder.tokenizer, chars, per_call)
    clf(texts)  # warm-up
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < CALIBRATION_S:
        clf(texts)
        calls += 1
    seconds = time.perf_counter() - start
    return {**_hardware(device, cpus), "precision": clf.precision,
            "pairs_per_s": calls * per_call * _sequences(clf.kind, labels) / seconds, "load_s": load_s,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@dataclass
class Calibration:
    model: str
    device: str
    precision: str
    chars: float
    pairs_per_s: float
    load_s: float
    stored: bool  # from an earlier run on the same hardware (else measured now)
    measured_at: str


def _sequences(kind: str, labels) -> int:
    """Sequences the model scores per text: one per label for an NLI model, one for a classifier."""
    return len(labels) if kind == "nli" else 1


def calibrate(model: str, labels: list, template: str, chars: float, multi_label: bool, precision: str, pools,
              store: Optional[dict] = None, label_map: Optional[dict] = None) -> Calibration:
    """A stored figure for this model on this hardware, or one measured now on a model worker's resources."""
    import ray

    options = dict(num_cpus=pools.model.cpus, num_gpus=pools.model.gpus, resources=pools.model.resources or None)
    hardware = ray.get(ray.remote(_hardware).options(**options).remote(pools.device, pools.model.cpus))
    bucket = round(math.log(max(chars, 1.0), _LENGTH_BUCKET))
    key = "|".join(map(str, (model, hardware["device"], hardware["threads"], precision, multi_label,
                             len(labels), bucket)))
    store = _read_store() if store is None else store
    if key in store:
        s = store[key]
        return Calibration(model, hardware["device"], s["precision"], chars, s["pairs_per_s"], s["load_s"], True,
                           s["measured_at"])
    result = ray.get(ray.remote(_calibrate).options(**options).remote(
        model, list(labels), template, chars, multi_label, precision, pools.device, pools.model.cpus, label_map))
    store[key] = result
    _write_store(store)
    return Calibration(model, result["device"], result["precision"], chars, result["pairs_per_s"],
                       result["load_s"], False, result["measured_at"])


def _read_store() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_store(store: dict) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(store, indent=1, ensure_ascii=False))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the figure is measured again next time


# --------------------------------------------------------------------------- the plan

@dataclass
class PlanRow:
    config: Optional[str]
    split: str
    rows: int
    pairs: int
    model: str


@dataclass
class DryRun:
    rows: list[PlanRow]
    pools: object
    calibrations: dict = field(default_factory=dict)  # config -> Calibration
    eta_s: dict = field(default_factory=dict)  # config -> seconds

    logs: list = field(default_factory=list)  # LogEstimate per dataset to log to
    log: None = None  # as RunSummary: nothing was logged
    log_error: None = None

    @property
    def total_rows(self) -> int:
        return sum(r.rows for r in self.rows)

    @property
    def total_pairs(self) -> int:
        return sum(r.pairs for r in self.rows)

    @property
    def total_eta_s(self) -> float:
        return sum(self.eta_s.values())

    def __str__(self) -> str:
        head = ("config", "split", "rows", "pairs", "model")
        body = [(r.config or "-", r.split, f"{r.rows:,}", f"{r.pairs:,}", r.model) for r in self.rows]
        body.append(("total", "", f"{self.total_rows:,}", f"{self.total_pairs:,}", ""))
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
        fmt = lambda row: "  ".join(str(v).rjust(w) if i in (2, 3) else str(v).ljust(w)  # noqa: E731
                                    for i, (v, w) in enumerate(zip(row, widths))).rstrip()
        lines = ["zs-ray dry run: metadata read, nothing written", fmt(head), *map(fmt, body), "",
                 f"pools: model {self.pools.model} on {self.pools.device}; tokenize {self.pools.tokenize}"]
        for config, cal in self.calibrations.items():
            source = f"stored {cal.measured_at}" if cal.stored else "measured now"
            lines.append(f"ETA {config or '-'}: {_hms(self.eta_s[config])} ({cal.pairs_per_s:,.0f} pairs/s per "
                         f"worker x {self.pools.model.max} in {cal.precision} on {cal.device}, texts of "
                         f"~{cal.chars:,.0f} chars; {source}; + {cal.load_s:.0f}s model load)")
        lines.append(f"ETA total: {_hms(self.total_eta_s)} (pairs before empty texts are skipped; pools at their "
                     "largest)")
        for e in self.logs:
            lines.append(f"logging {e.dataset}: {e.records:,} records{e.note} " + (
                f"at {e.rate.records_per_s:,.0f} records/s ({e.rate.describe()}): {_hms(e.seconds)}" if e.rate
                else f": no logging time ({e.error})"))
        if self.logs and all(e.rate for e in self.logs):
            log_s = sum(e.seconds for e in self.logs)
            longer = "the logging" if log_s > self.total_eta_s else "the compute"
            lines.append(f"logging total: {_hms(log_s)} beside the compute ETA {_hms(self.total_eta_s)}; records are "
                         f"logged while the job predicts, so {longer} sets the pace: about "
                         f"{_hms(max(log_s, self.total_eta_s))} in all")
        return "\n".join(lines)


@dataclass
class LogEstimate:
    """How long logging ``records`` records to ``dataset`` should take (``rate`` None: unknown, ``error`` why)."""

    dataset: str
    records: int
    rate: Optional[object] = None  # servers.rate.LogRate
    error: Optional[str] = None
    note: str = ""  # what the count is, when --log-only sends a subset

    @property
    def seconds(self) -> float:
        return self.records / self.rate.records_per_s


def logged_records(rubrix, rows: int) -> tuple[int, str]:
    """How many of a config's ``rows`` a run sends: all of them, or with ``--log-only`` the round-1 sample
    plus the uncertainty queue (their sizes are known before predicting; records above the thresholds are
    not, and are left out of the count with a note)."""
    subsets = set(getattr(rubrix, "log_only", None) or ())
    if not subsets:
        return rows, ""
    from zs_ray.workflow.sample import parse_sample

    count = 0
    if "sample" in subsets and rubrix.sample:
        n, fraction = parse_sample(rubrix.sample)
        count += n if n is not None else int(rows * fraction)
    if "uncertain" in subsets and rubrix.uncertain:
        count += int(rubrix.uncertain)
    count = min(count, rows)
    note = f" (--log-only {','.join(sorted(subsets))} of {rows:,} rows"
    note += ", plus those above the thresholds, known once predicted)" if "above-threshold" in subsets else ")"
    return count, note


def log_estimate(rubrix, dataset: str, records: int, labels: list, multi_label: bool, chars: float,
                 rates: Optional[dict] = None) -> LogEstimate:
    """The logging time of ``records`` records (a config's rows, or the subset a run logs) to ``dataset`` on
    ``rubrix``'s server. ``rates``: rates measured by this dry run, by server (one probe per server)."""
    from zs_ray.errors import ZsRayError
    from zs_ray.servers import rate

    config = replace(rubrix, rubrix_dataset=dataset)
    rates = {} if rates is None else rates
    try:
        found = rate.stored(config, dataset) or rates.get(config.public_url)
        if found is None:
            found = rates[config.public_url] = rate.probe(config, list(labels), multi_label, chars)
    except ZsRayError as exc:
        return LogEstimate(dataset, records, None, str(exc))
    return LogEstimate(dataset, records, found)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def dry_run(config, plans, settings, pools, rubrix=None) -> DryRun:
    """The plan of ``plans`` (one per config) with each config's settings, and ETAs (``calibrate``); with
    ``rubrix`` (server settings), each config's logging time too (``log_estimate``)."""
    from zs_ray.servers.config import dataset_names

    out = DryRun([], pools)
    names = dataset_names(rubrix.rubrix_dataset, list(settings)) if rubrix is not None else {}
    rates: dict = {}
    store = _read_store()
    previous = None
    for plan in plans:
        preset = settings[plan.config]
        for split, rows in plan.split_rows.items():
            out.rows.append(PlanRow(plan.config, split, rows, rows * preset.sequences_per_text,
                                    preset.model))
        chars = mean_text_chars(plan)
        cal = calibrate(preset.model, list(preset.labels), preset.hypothesis_template, chars,
                        config.multi_label, config.precision, pools, store, preset.label_map)
        if rubrix is not None:
            records, note = logged_records(rubrix, plan.num_rows)
            estimate = log_estimate(rubrix, names[plan.config], records, list(preset.labels),
                                    config.multi_label, chars, rates)
            estimate.note = note
            out.logs.append(estimate)
        out.calibrations[plan.config] = cal
        pairs = plan.num_rows * preset.sequences_per_text
        load = cal.load_s if preset.model != previous else 0.0  # the next config of the same model loads nothing
        out.eta_s[plan.config] = pairs / (cal.pairs_per_s * pools.model.max) + load
        previous = preset.model
    return out

