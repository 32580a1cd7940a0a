"""The annotation job, in one page: read -> tokenize -> model -> write -> log (while writing).

Everything that can be wrong with the input is checked first (``check``), in the driver, before Ray
starts any work; the pools are sized from what the cluster can hold, and refused if it never can
(``resources.plan_pools``); then the stream runs: a Ray Data read, the stages declared in ``stages`` (each
a ``map_batches`` with its own actor pool and resources, applied by one loop), a Parquet write that is all
or nothing, and, with a dataset to log to, the records sent to the annotation server as their files are
committed (``logstage.LiveLog``), then a last pass over the published output. Nothing holds the corpus in
one process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

from zs_ray import output, read, write
from zs_ray.capacity import cluster_capacity
from zs_ray.cluster import cluster_address, connect_ray
from zs_ray.config import AnnotateConfig
from zs_ray.engine import PairEncoder, check_model
from zs_ray.errors import ZsRayError
from zs_ray.logstage import LiveLog
from zs_ray.predict import TEXTS_PER_BATCH, ModelStage, worker_precision
from zs_ray.resources import AUX_CPUS, Pools, plan_pools
from zs_ray.rubrix import LogReport, RubrixConfig, log_output, preflight
from zs_ray.stage import Stage
from zs_ray.tokenize import TEXTS_PER_BATCH as TEXTS_PER_TOKENIZE, TokenizeStage

log = logging.getLogger(__name__)


def stages(config: AnnotateConfig, text_field: str, pools: Pools) -> list[Stage]:
    """The stages between read and write, in order."""
    return [
        Stage("tokenize", TokenizeStage,
              dict(model=config.model, labels=config.labels, hypothesis_template=config.hypothesis_template,
                   text_field=text_field),
              batch_size=TEXTS_PER_TOKENIZE, pool=pools.tokenize),
        Stage("model", ModelStage,
              dict(model=config.model, labels=config.labels, multi_label=config.multi_label,
                   precision=config.precision, batch_size=config.batch_size, device=pools.device,
                   cpus=pools.model.cpus),
              batch_size=TEXTS_PER_BATCH[pools.device], pool=pools.model),
    ]


@dataclass
class RunSummary:
    rows: int
    skipped: int
    pairs: int
    seconds: float
    output: str
    workers: str
    resumed: int = 0  # rows an unfinished run of the same settings had written (not computed again)
    log: Optional[LogReport] = None  # what logging did, when it ran
    log_error: Optional[str] = None  # why logging could not run; the predictions are complete all the same

    @property
    def articles_per_s(self) -> float:
        """Classified texts per second of this run (rows written before a resume left out)."""
        computed = (self.rows - self.skipped) * (1 - self.resumed / self.rows) if self.rows else 0.0
        return computed / self.seconds if self.seconds else 0.0

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        resumed = f", {self.resumed} of them written before a resume" if self.resumed else ""
        return (f"zs-ray: {self.rows} rows ({self.skipped} skipped: empty text{resumed}) in {self.seconds:.1f}s; "
                f"{self.articles_per_s:.1f} articles/s, {self.pairs_per_s:.1f} pairs/s on {self.workers}; "
                f"output: {self.output}")


def check(config: AnnotateConfig, rubrix: Optional[RubrixConfig]):
    """All input checks, before any work: (read plan, output target)."""
    plan = read.plan_read(config.dataset, config.config, config.split, config.text_field)
    check_model(config.model)
    PairEncoder(config.model, config.labels, config.hypothesis_template)  # the tokenizer loads, hypotheses fit
    if rubrix is not None:
        preflight(rubrix.validate())  # server, key, workspace and dataset name, before hours of work
    target = write.prepare_output(config.output, config.overwrite, run_identity(config))
    if target.resumed_rows:
        log.info("resuming the unfinished run of these settings: %d of %d rows are written already",
                 target.resumed_rows, plan.num_rows)
    return plan, target


def run_identity(config: AnnotateConfig) -> dict:
    """What makes two runs the same run, so that one may finish the other: the input and every setting
    that changes a prediction."""
    keys = ("dataset", "config", "split", "text_field", "model", "labels", "hypothesis_template", "multi_label",
            "precision")
    return {k: v for k, v in config.to_dict().items() if k in keys}


def annotate(config: AnnotateConfig, rubrix: Optional[RubrixConfig] = None) -> RunSummary:
    """Run the whole job for ``config`` (and log to ``rubrix``, if given); return its summary."""
    plan, target = check(config, rubrix)
    connect_ray(config.ray_address)
    pools = plan_pools(config, cluster_capacity())
    start = time.perf_counter()
    precision = worker_precision(config.precision, pools.device, pools.model.gpus)  # resolved while streaming

    def manifest(precision: str) -> dict:
        return output.manifest(config.to_dict(), config=plan.config, text_field=plan.text_field,
                               precision_requested=config.precision, precision=precision, device=pools.device)

    ds = read.read_dataset(plan, num_cpus=AUX_CPUS)
    for stage in stages(config, plan.text_field, pools):
        ds = stage.apply(ds)
    live = LiveLog(target, rubrix, manifest(config.precision)).start() if rubrix is not None else None
    try:
        rows, skipped = write.write_output(ds, target, plan.num_rows, lambda: manifest(precision()),
                                           before_publish=live.stop if live else lambda: None)
    finally:
        if live is not None:
            live.stop(last_pass=False)  # already stopped (with its last pass) unless the write failed

    seconds = time.perf_counter() - start
    workers = f"{pools.model} model worker(s) in {precision()} of the Ray cluster at {cluster_address()}"
    summary = RunSummary(rows, skipped, (rows - skipped) * len(config.labels), seconds, config.output, workers,
                         resumed=target.resumed_rows)
    if rubrix is not None:
        try:
            summary.log = log_output(config.output, rubrix)
        except ZsRayError as exc:  # the predictions stay; `zs-ray log` finishes later
            summary.log_error = str(exc)
    return summary
