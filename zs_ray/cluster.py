"""Connecting to Ray: the one place that decides which cluster a zs-ray command runs on."""

from __future__ import annotations

import logging
from typing import Optional


def connect_ray(address: Optional[str]) -> dict:
    """Join ``address`` (``ray job submit`` sets RAY_ADDRESS for its entrypoint), else start a new
    local Ray; returns the cluster's resources.

    A new local Ray is started explicitly (``address="local"``) so that a stale
    ``ray start`` record on the machine is never joined by surprise."""
    import os

    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            # The local Ray's workers must import zs_ray even when it runs from a source checkout.
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": path}}, logging_level=logging.WARNING)
    return ray.cluster_resources()


def cluster_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address
