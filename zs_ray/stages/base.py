"""A stage of the job declared as data: what runs, on which resources, in how large a pool.

As in Ray Data's LLM batch processor, each stage is one ``map_batches`` over Arrow batches with its own
resources and concurrency, and ``pipeline.py`` applies its list of stages with one loop. A ``Pool`` of
``(min, max)`` actors grows from ``min`` to ``max`` as its input backs up and the cluster has (or the
autoscaler adds) room: Ray Data's autoscaling actor pool.

Lost workers (see ``ACTOR_MAX_RESTARTS``): an actor whose process or node dies is rebuilt by Ray (its
constructor runs again) and the batches it held are resubmitted to it; a block lost with a node is rebuilt
from its lineage. Read and write tasks are retried by Ray Data itself (``max_retries=-1`` on its tasks).
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass, field
from typing import Any, Optional

#: In a stage's ``NEEDS`` / ``MAKES``: the column ``--text-field`` names (``summary`` for MLSum).
TEXT = "<text_field>"


def check_columns(stages) -> None:
    """Each stage module's ``NEEDS`` made by a stage before it (``stages.ORDER``); raises ValueError naming
    the stage and the columns nobody made."""
    made: set = set()
    for stage in stages:
        missing = [c for c in stage.NEEDS if c not in made]
        if missing:
            raise ValueError(f"stage {stage.__name__} needs {missing}, which no stage before it makes")
        made.update(stage.MAKES)

# Fault tolerance of every stage's actors, set here for all of them and passed to Ray by ``Stage.apply``.
# Ray Data 2.60's own defaults for an actor pool are max_restarts=-1 and max_task_retries=-1: rebuild and
# resubmit for ever, so a batch that kills its worker every time (a poison input, an OOM-sized batch, a
# bad GPU) would loop without end instead of failing. Only system failures count (the process or its node
# died): an exception raised by the stage's own code is not retried and fails the job at once.
ACTOR_MAX_RESTARTS = 8
"""How many times Ray rebuilds one actor (runs its constructor again) over the whole run after its
process was killed (OOM killer, SIGKILL, a crash) or its node was lost. A few independent faults per
actor over a run of hours (spot preemptions, a lost node) are recovered; more deaths of the same actor
point at something systematic, and this is the bound that stops the loop: once an actor has used it up,
its batch fails the job with ``ActorDiedError`` (Ray Data does not replace a dead actor in the pool)."""
ACTOR_TASK_MAX_RETRIES = -1
"""A batch in flight on an actor that died is resubmitted to it until it is rebuilt, without a count of
its own (-1): Ray spends a retry on every attempt that fails fast while the actor is unreachable (a lost
node is declared dead only after the GCS health checks fail, ~15 s by default, and then the actor is
placed and its model loaded again), so any finite number can run out within seconds of one node loss
(3 did here). Endless retries are bounded all the same: a batch can only be retried on its actor while
the actor may restart, so ``ACTOR_MAX_RESTARTS`` ends a crash loop."""


RAY_REMOTE_ARGS_DEPRECATED = r"`ray_remote_args` is deprecated"  # Ray 2.60's RayDeprecationWarning (Stage.apply)


@dataclass(frozen=True)
class Pool:
    """``min``..``max`` actors, each holding ``cpus`` CPUs, ``gpus`` GPUs and custom ``resources``."""

    min: int
    max: int
    cpus: float
    gpus: float = 0.0
    resources: Optional[dict] = None

    def bundle(self) -> dict[str, float]:
        """What one actor holds, as Ray resources."""
        out = {"CPU": self.cpus, "GPU": self.gpus, **(self.resources or {})}
        return {k: float(v) for k, v in out.items() if v}

    def __str__(self) -> str:
        size = str(self.min) if self.min == self.max else f"{self.min}-{self.max}"
        held = ", ".join(f"{v:g} {k}" for k, v in self.bundle().items())
        return f"{size} x ({held})"


@dataclass(frozen=True)
class Stage:
    """One ``map_batches`` stage: a callable class built with ``kwargs`` in each actor of ``pool``, called on
    Arrow batches of ``batch_size`` rows."""

    name: str
    fn: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256
    pool: Pool = Pool(1, 1, 1.0)

    def apply(self, ds):
        from ray.data import ActorPoolStrategy

        with warnings.catch_warnings():
            # Ray 2.60 deprecates map_batches' **ray_remote_args ("will be removed in Ray 2.64. Use the
            # named remote parameters instead"), but its named ones (num_cpus, num_gpus, memory, resources,
            # label_selector, fallback_strategy, max_calls, accelerator_type, runtime_env) have none for an
            # actor's max_restarts and max_task_retries (ray_remote_args_fn is deprecated too), and its default
            # is -1 for both: endless restarts. So the two bounds still go as ray_remote_args, and only that one
            # warning about them is silenced here. Before Ray 2.64 (pinned: 2.60.0) this must change: pass them
            # by name once map_batches has them (tests/test_pools.py fails when it does), else bound a crash
            # loop another way (docs/clusters.md).
            warnings.filterwarnings("ignore", message=RAY_REMOTE_ARGS_DEPRECATED)
            return ds.map_batches(
                self.fn,
                fn_constructor_kwargs=self.kwargs,
                batch_size=self.batch_size,
                batch_format="pyarrow",
                compute=ActorPoolStrategy(min_size=self.pool.min, max_size=self.pool.max),
                num_cpus=self.pool.cpus,
                num_gpus=self.pool.gpus,
                resources=self.pool.resources or None,
                # ray_remote_args of the pool's actors (see ACTOR_MAX_RESTARTS / ACTOR_TASK_MAX_RETRIES)
                max_restarts=ACTOR_MAX_RESTARTS,
                max_task_retries=ACTOR_TASK_MAX_RETRIES,
            )
