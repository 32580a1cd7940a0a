"""The annotation job, in one page: read -> tokenize -> model -> write -> log (while writing).

Everything that can be wrong with the input is checked first (``check``), in the driver, before Ray
starts any work; the pools are sized from what the cluster can hold, and refused if it never can
(``resources.plan_pools``); then the stream runs: a Ray Data read, the stages declared in ``stages`` (each
a ``map_batches`` with its own actor pool and resources, applied by one loop), a Parquet write that is all
or nothing, and, with a dataset to log to, the records sent to the annotation server as their files are
committed (``stages.log.LiveLog``), then a last pass over the published output. Nothing holds the corpus in
one process. Several configs (MLSum's languages) are one stream: each row carries its config, and the stages
classify it with that config's model, template and labels (``presets``). ``--dry-run`` stops after the
checks and the pools, with the plan and its ETA, and the logging time beside it (``dryrun``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Optional

from zs_ray import output, presets
from zs_ray.capacity import cluster_capacity
from zs_ray.cluster import cluster_address, connect_ray
from zs_ray.config import AnnotateConfig
from zs_ray.engine import PairEncoder, load_model_config
from zs_ray.engine.supervised import NLI, TextEncoder, class_map, model_kind
from zs_ray.errors import ZsRayError
from zs_ray.dryrun import DryRun, dry_run
from zs_ray.resources import AUX_CPUS, Pools, plan_pools
from zs_ray.servers import LogReport, preflight
from zs_ray.stages import read, write
from zs_ray.stages.base import Stage
from zs_ray.stages.log import LiveLog, dataset_names, log_run
from zs_ray.stages.model import TEXTS_PER_BATCH, ModelStage, modes_ran, precision_ran, worker_precision
from zs_ray.stages.tokenize import TEXTS_PER_BATCH as TEXTS_PER_TOKENIZE, TokenizeStage
from zs_ray.workflow.config import RubrixConfig
from zs_ray.workflow.sample import live_logging_allowed, resolve_for_plan

log = logging.getLogger(__name__)


def stages(config: AnnotateConfig, settings: dict, text_field: str, pools: Pools, modes=None) -> list[Stage]:
    """The stages between read and write, in order; ``settings``: each config's model, labels and template;
    ``modes``: where the model actors report the mode they run in (``stages.model.ModesRan``)."""
    per_config = {c: {"model": p.model, "labels": list(p.labels), "hypothesis_template": p.hypothesis_template,
                      "kind": p.kind, "label_map": p.label_map, "verbalizers": p.verbalizers, "aggregate": p.aggregate}
                  for c, p in settings.items()}
    return [
        Stage("tokenize", TokenizeStage, dict(settings=per_config, text_field=text_field),
              batch_size=TEXTS_PER_TOKENIZE, pool=pools.tokenize),
        Stage("model", ModelStage,
              dict(settings=per_config, multi_label=config.multi_label, precision=config.precision,
                   batch_size=config.batch_size, device=pools.device, cpus=pools.model.cpus, modes=modes),
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


@dataclass
class Run:
    """A checked run: what to read (one plan per config), each config's settings, where to write."""

    plans: list[read.ReadPlan]
    settings: dict  # config (None without configs) -> presets.Preset
    target: Optional[write.OutputTarget]  # None for a dry run

    @property
    def num_rows(self) -> int:
        return sum(p.num_rows for p in self.plans)

    @property
    def text_field(self) -> str:
        return self.plans[0].text_field


def check(config: AnnotateConfig, rubrix: Optional[RubrixConfig]) -> Run:
    """All input checks, before any work (the output is left alone for a dry run)."""
    plans = read.plan_runs(config.dataset, config.config, config.split, config.text_field)
    settings = presets.resolve([p.config for p in plans], config.presets, config.model, config.labels,
                               config.hypothesis_template)
    settings = model_kinds(settings, config)
    if rubrix is not None:
        for name in dataset_names(rubrix.rubrix_dataset, list(settings)).values():
            preflight(replace(rubrix, rubrix_dataset=name).validate())  # server, key, workspace, before hours of work
    if config.dry_run:
        return Run(plans, settings, None)
    target = write.prepare_output(config.output, config.overwrite, run_identity(config, settings))
    run = Run(plans, settings, target)
    if target.resumed_rows:
        log.info("resuming the unfinished run of these settings: %d of %d rows are written already",
                 target.resumed_rows, run.num_rows)
    return run


def model_kinds(settings: dict, config: AnnotateConfig) -> dict:
    """Each config's settings with its model's kind (``engine.supervised``): an NLI model's tokenizer loads
    and its hypotheses fit; a supervised classifier's labels are its classes (or the label map's image)
    unless ``--labels`` (or, without ``--model``, the preset) names some of them; one line for labels the
    model does not have."""
    models = {m: load_model_config(m) for m in dict.fromkeys(p.model for p in settings.values())}
    out = {}
    for c, p in settings.items():
        kind = model_kind(models[p.model], config.label_map)
        if kind == NLI:
            if config.label_map:
                raise ZsRayError(f"--label-map is for supervised classifiers; {p.model!r} is an NLI model")
            PairEncoder(p.model, p.labels, p.hypothesis_template, p.verbalizer())  # the tokenizer loads, hypotheses fit
            out[c] = replace(p, kind=kind)
            continue
        if p.verbalizers:
            raise ZsRayError(f"verbalizers (--presets) are for NLI models; {p.model!r} is a supervised classifier")
        asked = config.labels or (None if config.model else p.labels)
        classes = class_map(models[p.model], asked, config.label_map, config.multi_label)
        TextEncoder(p.model)  # the tokenizer loads
        out[c] = replace(p, labels=classes.labels, kind=kind, label_map=config.label_map)
    return out


def run_identity(config: AnnotateConfig, settings: dict) -> dict:
    """What makes two runs the same run, so that one may finish the other: the input and every setting
    that changes a prediction (each config's model, labels and template)."""
    keys = ("dataset", "config", "split", "text_field", "multi_label", "precision")
    out = {k: v for k, v in config.to_dict().items() if k in keys}
    for c, p in settings.items():  # flat, so that a refusal names what changed: `model`, or `de.model`
        out.update({(k if c is None else f"{c}.{k}"): v for k, v in p.to_dict().items()})
    return out


def run_manifest(config: AnnotateConfig, run: Run, counts: dict, **facts) -> dict:
    """The manifest (``output.manifest``): one config's settings at the top level, every config's in
    ``configs`` with its row counts."""
    settings = config.to_dict()
    one = next(iter(run.settings.values())) if len(run.settings) == 1 else None
    settings.update(model=one and one.model, labels=one and list(one.labels),
                    hypothesis_template=one and one.hypothesis_template, model_kind=one and one.kind)
    if one is not None and one.verbalizers:  # the label phrasings (``engine.verbalize``), as the config's
        settings.update(verbalizers=one.verbalizers, aggregate=one.aggregate)
    configs = {c: {**p.to_dict(), "rows": counts.get(c, (0, 0))[0], "skipped": counts.get(c, (0, 0))[1]}
               for c, p in run.settings.items() if c is not None}
    used = ",".join(c for c in run.settings if c is not None) or None
    return output.manifest(settings, config=used, text_field=run.text_field, configs=configs, **facts)


def annotate(config: AnnotateConfig, rubrix: Optional[RubrixConfig] = None) -> "RunSummary | DryRun":
    """Run the whole job for ``config`` (and log to ``rubrix``, if given); return its summary. With
    ``config.dry_run``: the plan (``dryrun.DryRun``), and nothing written."""
    run = check(config, rubrix)
    connect_ray(config.ray_address)
    pools = plan_pools(config, cluster_capacity())
    if config.dry_run:
        return dry_run(config, run.plans, run.settings, pools, rubrix)
    start = time.perf_counter()
    first = next(iter(run.settings.values()))
    modes = modes_ran()  # the modes the model actors run in, after their load guard (auto may fall back to fp32)
    precision = precision_ran(modes, worker_precision(config.precision, pools.device, pools.model.gpus,
                                                      first.model, pools.model.cpus, first.kind))

    def manifest(precision: str, counts: dict) -> dict:
        return run_manifest(config, run, counts, precision_requested=config.precision, precision=precision,
                            device=pools.device)

    ds = read.read_dataset(run.plans, num_cpus=AUX_CPUS)
    for stage in stages(config, run.settings, run.text_field, pools, modes):
        ds = stage.apply(ds)
    if rubrix is not None:
        resolve_for_plan(rubrix, run.plans)  # a --sample is fixed before the first record is sent
    live = (LiveLog(run.target, rubrix, manifest(config.precision, {})).start()
            if rubrix is not None and live_logging_allowed(rubrix) else None)
    try:
        counts = write.write_output(ds, run.target, run.num_rows, lambda counts: manifest(precision(), counts),
                                    before_publish=live.stop if live else lambda: None)
    finally:
        if live is not None:
            live.stop(last_pass=False)  # already stopped (with its last pass) unless the write failed

    seconds = time.perf_counter() - start
    rows, skipped = sum(n for n, _ in counts.values()), sum(k for _, k in counts.values())
    pairs = sum((n - k) * run.settings[c].sequences_per_text for c, (n, k) in counts.items())
    workers = f"{pools.model} model worker(s) in {precision()} of the Ray cluster at {cluster_address()}"
    summary = RunSummary(rows, skipped, pairs, seconds, config.output, workers, resumed=run.target.resumed_rows)
    if rubrix is not None:
        try:
            summary.log = log_run(config.output, rubrix)
        except ZsRayError as exc:  # the predictions stay; `zs-ray log` finishes later
            summary.log_error = str(exc)
    return summary
