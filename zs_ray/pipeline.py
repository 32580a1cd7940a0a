"""The annotation job: read -> classify -> write -> log.

Everything that can be wrong with the input is checked first (``check``), in
the driver, before Ray starts any work; then the stages are chained as Ray Data
operators and streamed: nothing holds the corpus in one process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from zs_ray import classify, read, write
from zs_ray.cluster import cluster_address, connect_ray
from zs_ray.config import AnnotateConfig
from zs_ray.engine import PairEncoder, check_model
from zs_ray.errors import ZsRayError
from zs_ray.rubrix import log_output, preflight

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    rows: int
    skipped: int
    pairs: int
    seconds: float
    output: str
    workers: str
    rubrix: Optional[object] = None  # the Rubrix log report, when logged

    @property
    def articles_per_s(self) -> float:
        return (self.rows - self.skipped) / self.seconds if self.seconds else 0.0

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        return (f"zs-ray: {self.rows} rows ({self.skipped} skipped: empty text) in {self.seconds:.1f}s; "
                f"{self.articles_per_s:.1f} articles/s, {self.pairs_per_s:.1f} pairs/s on {self.workers}; "
                f"output: {self.output}")


def check(config: AnnotateConfig):
    """All input checks, before any work: (read plan, output target)."""
    plan = read.plan_read(config.dataset, config.config, config.split, config.text_field)
    check_model(config.model)
    PairEncoder(config.model, config.labels, config.hypothesis_template)  # the tokenizer loads, hypotheses fit
    if config.rubrix is not None:
        if "://" in config.output and not config.output.startswith("file://"):
            raise ZsRayError("--rubrix-dataset needs a local (or shared-filesystem) --output: the record of "
                             "what Rubrix acknowledged is kept beside it; log a remote output with `zs-ray log`"
                             " from a local copy")
        preflight(config.rubrix)  # server, key, workspace and dataset name, before hours of work
    return plan, write.prepare_output(config.output, config.overwrite)


def manifest(config: AnnotateConfig, plan: read.ReadPlan, res: classify.Resources, precision: str) -> dict:
    import pyarrow
    import ray
    import torch
    import transformers

    import zs_ray

    settings = config.to_dict()
    settings["candidate_labels"] = settings.pop("labels")
    return {
        **settings,
        "config": plan.config,
        "text_field": plan.text_field,
        "precision_requested": config.precision,
        "precision": precision,
        "device": res.device,
        "id_format": "<config>-<split>-<index in split, 7 digits>",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"zs_ray": zs_ray.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__, "ray": ray.__version__, "pyarrow": pyarrow.__version__},
    }


def annotate(config: AnnotateConfig) -> RunSummary:
    """Run the whole job for ``config`` and return its summary."""
    plan, target = check(config)
    res = classify.Resources.plan(config, connect_ray(config.ray_address))
    start = time.perf_counter()
    precision = classify.worker_precision(config.precision, res)  # resolved while the job streams

    ds = read.read_dataset(plan, num_cpus=classify.AUX_CPUS)
    ds = classify.classify(ds, config, plan.text_field, res)
    rows, skipped = write.write_output(ds, target, plan.num_rows, lambda: manifest(config, plan, res, precision()))

    seconds = time.perf_counter() - start
    workers = f"{res.num_workers} {res.device} worker(s) in {precision()} of the Ray cluster at {cluster_address()}"
    summary = RunSummary(rows, skipped, (rows - skipped) * len(config.labels), seconds, config.output, workers)
    if config.rubrix is not None:
        summary.rubrix = log_output(config.output, config.rubrix)
    return summary
