"""The driver's Ray: the one place that decides which cluster a zs-ray command runs on, and how the
driver stops (SIGTERM is turned into ``Stopped``, a ``KeyboardInterrupt``, so that every ``finally`` runs:
Ray's own handler would just exit)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Optional


class Stopped(KeyboardInterrupt):
    """The driver received SIGTERM: unwind like Ctrl-C (every `finally` runs, Ray shuts down)."""


def _raise_stopped(signum, frame):
    raise Stopped()


def stop_on_sigterm() -> None:
    """SIGTERM raises ``Stopped`` in the main thread (call again after ``ray.init``, which sets its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


def connect_ray(address: Optional[str]) -> dict:
    """Join ``address`` (``ray job submit`` sets RAY_ADDRESS for its entrypoint), else start a new
    local Ray; returns the cluster's resources now.

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
        stop_on_sigterm()
    return ray.cluster_resources()


def cluster_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address

