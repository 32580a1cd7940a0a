"""How large the actor pools are, from the settings and what the cluster can hold; impossible pools refused.

The model pool: one actor per GPU by default, from as many as the cluster holds now to as many as it can
ever hold (an autoscaling cluster's maximum), so the pool grows while the autoscaler adds GPU nodes;
``--num-workers N`` fixes it, ``--num-workers MIN-MAX`` bounds it. Without GPUs: one CPU actor holding
the CPUs the other stages leave. The tokenize pool: on GPU clusters, at least one CPU actor per model
actor, growing into spare CPUs (up to ``TOKENIZERS_PER_GPU_WORKER`` per model actor) while the model
stage waits for input; on CPUs, one light actor.

A pool the cluster can never satisfy is refused here, before any work, with what it needs and what the
cluster has (``plan_pools``): otherwise Ray would wait forever for resources that never come.
"""

from __future__ import annotations

from dataclasses import dataclass

from zs_ray.capacity import Capacity
from zs_ray.config import AnnotateConfig
from zs_ray.errors import ZsRayError
from zs_ray.stages.base import Pool

AUX_CPUS = 0.25  # CPU share of a read or write task, and of the tokenizer actor without GPUs
TOKENIZERS_PER_GPU_WORKER = 4  # at most; one tokenizer CPU joins ~1,200 full articles/s to 6 labels


@dataclass(frozen=True)
class Pools:
    model: Pool
    tokenize: Pool

    @property
    def device(self) -> str:
        return "cuda" if self.model.gpus > 0 else "cpu"


def plan_pools(config: AnnotateConfig, capacity: Capacity) -> Pools:
    most, now = capacity.most, capacity.now
    gpus = config.gpus_per_worker if config.gpus_per_worker is not None else (1.0 if most.get("GPU") else 0.0)
    bounds = config.worker_bounds()
    if bounds is None and gpus:
        high = max(1, int(most.get("GPU", 0) // gpus))
        bounds = (max(1, min(high, int(now.get("GPU", 0) // gpus))), high)
    low, high = bounds or (1, 1)
    if gpus:
        cpus = config.cpus_per_worker if config.cpus_per_worker is not None else 1.0
        spare = most.get("CPU", 0) - high * cpus - 2 * AUX_CPUS  # CPUs the model actors and read/write leave
        if spare >= 1:
            tokenize = Pool(min(low, int(spare)), max(1, min(TOKENIZERS_PER_GPU_WORKER * high, int(spare))), 1.0)
        else:  # a CPU-poor GPU cluster: one tokenizer on what is left (refused below if nothing is)
            tokenize = Pool(1, 1, max(AUX_CPUS, spare))
    else:
        spare = now.get("CPU", 1) - 3 * AUX_CPUS  # read, tokenize and write share what the model leaves
        cpus = config.cpus_per_worker if config.cpus_per_worker is not None else max(1.0, spare / high)
        tokenize = Pool(1, 1, AUX_CPUS)
    pools = Pools(Pool(low, high, cpus, gpus, config.resources_per_worker), tokenize)
    refuse_impossible(pools, capacity, config.num_workers)
    return pools


def refuse_impossible(pools: Pools, capacity: Capacity, asked) -> None:
    """Raise when the model pool at its largest, with the smallest tokenize pool and a read and a write
    task, needs more than the cluster can ever hold, or one model actor fits on no kind of node."""
    model, tok = pools.model, pools.tokenize
    need = {k: model.max * v for k, v in model.bundle().items()}
    need["CPU"] = need.get("CPU", 0.0) + tok.min * tok.cpus + 2 * AUX_CPUS
    short = {k: v for k, v in need.items() if v > capacity.most.get(k, 0.0) + 1e-9}
    fits = not capacity.nodes or any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in model.bundle().items())
                                     for node in capacity.nodes)
    if not short and fits:
        return
    workers = f"--num-workers {asked}" if asked else "the default pool"
    has = _amounts(capacity.most, ("CPU", "GPU", *(model.resources or {})))
    if short:
        needs = _amounts(need, short)
        raise ZsRayError(f"{workers}: {model.max} model worker(s) x ({_amounts(model.bundle(), model.bundle())}) "
                         f"plus {tok.min * tok.cpus + 2 * AUX_CPUS:g} CPU for read, tokenize and write need "
                         f"{needs}; the cluster can hold at most {has}")
    raise ZsRayError(f"{workers}: one model worker needs {_amounts(model.bundle(), model.bundle())}, more than "
                     f"any node of the cluster has (nodes: "
                     f"{'; '.join(_amounts(n, ('CPU', 'GPU')) for n in capacity.nodes)})")


def _amounts(resources: dict, keys) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}{'s' if k in ('CPU', 'GPU') else ''}" for k in keys)
