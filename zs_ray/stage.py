"""A stage of the job declared as data: what runs, on which resources, in how large a pool.

As in Ray Data's LLM batch processor, each stage is one ``map_batches`` over Arrow batches with its own
resources and concurrency, and ``pipeline.py`` applies its list of stages with one loop. A ``Pool`` of
``(min, max)`` actors grows from ``min`` to ``max`` as its input backs up and the cluster has (or the
autoscaler adds) room: Ray Data's autoscaling actor pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


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

        return ds.map_batches(
            self.fn,
            fn_constructor_kwargs=self.kwargs,
            batch_size=self.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=self.pool.min, max_size=self.pool.max),
            num_cpus=self.pool.cpus,
            num_gpus=self.pool.gpus,
            resources=self.pool.resources or None,
        )
