"""What the joined Ray cluster can hold: now, at most (its head plus every worker node type at its
``max_workers``), and the resources of each kind of node. ``resources.plan_pools`` sizes and refuses
pools with it.

``ray.cluster_resources()`` only counts the nodes alive now. What Ray 2.60 (2.60.0, checked) offers
for the maximum, and what this module reads:

1. GCS internal KV, namespace ``__autoscaler``, key ``__autoscaler_cluster_config``: an autoscaler
   ``ClusterConfig`` proto (worker node groups: resources, max_count), decoded by
   ``ray._private.state.state.get_max_resources_from_cluster_config()`` (Ray Train v2 and Ray Data
   use it). Only an autoscaler that calls ``GcsClient.report_cluster_config`` fills it, and neither
   monitor shipped with 2.60 does (v1 ``ray/autoscaler/_private/monitor.py``, v2
   ``ray/autoscaler/v2/monitor.py``), so it stays empty under ``ray up`` and ``AutoscalingCluster``.
   It is read first, for autoscalers that do fill it. Its node groups leave out the head.
2. The autoscaling config itself. The head's monitor process is started with
   ``--gcs-address=<cluster> --autoscaling-config=PATH``: ``ray up`` passes
   ``~/ray_bootstrap_config.yaml`` (cluster.yaml after bootstrapping), ``AutoscalingCluster`` a
   temporary JSON file. A zero-CPU task pinned to the head (``node:__internal_head__``) finds that
   process and reads ``available_node_types`` / ``max_workers``.
   No other autoscaler output carries max_workers: the v1 status JSON (KV ``__autoscaling_status``,
   what ``ray status`` prints) and v2 ``ray.autoscaler.v2.sdk.get_cluster_status()`` only list
   live, pending and failed nodes and the resource demand.
3. Neither found (plain ``ray.init()``, ``ray start --head`` without a config, an autoscaler that
   runs outside the head such as KubeRay's sidecar): ``ray.cluster_resources()``.

The head counts with its live resources (they hold memory and object store, which configs rarely
list). The answer is never below ``ray.cluster_resources()``. Per-node ``node:<ip>`` markers are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

_HEAD = "node:__internal_head__"


@dataclass(frozen=True)
class Capacity:
    """What the cluster holds now, the most it can ever hold, and the resources of each kind of node."""

    now: dict
    most: dict
    nodes: tuple = ()


def cluster_capacity() -> Capacity:
    """The connected cluster's ``Capacity`` (call after ray.init). The autoscaling config is read once."""
    import ray

    now = _strip(ray.cluster_resources())
    alive = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    config = _autoscaling_config()
    types = [t.get("resources") or {} for t in (config or {}).get("available_node_types", {}).values()]
    nodes = tuple([_strip(n) for n in alive] + [{k: float(v) for k, v in t.items()} for t in types])
    workers = _max_worker_resources(config)
    if workers is None:
        return Capacity(now, now, nodes)
    head = next((_strip(n) for n in alive if _HEAD in n), {})
    total = {k: head.get(k, 0.0) + workers.get(k, 0.0) for k in head.keys() | workers.keys()}
    return Capacity(now, {k: max(total.get(k, 0.0), now.get(k, 0.0)) for k in total.keys() | now.keys()}, nodes)


def _strip(resources: dict) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items() if not k.startswith("node:")}


def _max_worker_resources(config: Optional[dict]) -> Optional[dict[str, float]]:
    """Worker nodes' resources at their max counts (what the GCS reports, else from ``config``), or None
    when neither is there."""
    import ray._private.state

    reported = ray._private.state.state.get_max_resources_from_cluster_config()
    if reported:
        return {k: float(v) for k, v in reported.items()}
    return _from_autoscaling_config(config) if config else None


def _autoscaling_config() -> Optional[dict]:
    """The autoscaling config of the connected cluster's monitor, read on the head; None without one."""
    import ray

    read = ray.remote(num_cpus=0, resources={_HEAD: 0.001}, max_retries=0)(_read_autoscaling_config)
    try:
        return ray.get(read.remote(ray.get_runtime_context().gcs_address), timeout=60)
    except Exception:  # no head to run on in time, unreadable file: treat as no autoscaler
        return None


def _from_autoscaling_config(config: dict) -> dict[str, float]:
    """Worker resources at max from an autoscaling config: each node type's max_workers (head type
    default 0, others default to the global max_workers), all within the global max_workers."""
    slots = config.get("max_workers", 2)
    types = [(t.get("resources") or {}, t.get("max_workers", 0 if name == config.get("head_node_type") else slots))
             for name, t in config.get("available_node_types", {}).items()]
    total: dict[str, float] = {}
    for key in {k for resources, _ in types for k in resources}:
        left = slots  # a resource's maximum: the global worker slots filled by the types richest in it
        for resources, count in sorted(types, key=lambda t: -t[0].get(key, 0)):
            n = max(0, min(count, left))
            total[key] = total.get(key, 0.0) + n * float(resources.get(key, 0))
            left -= n
    return total


def _read_autoscaling_config(gcs_address: str) -> Optional[dict]:
    """The config file of this cluster's autoscaler monitor, if it runs on this node with one."""
    import os

    import psutil  # ray ships it (ray/thirdparty_files) and puts it on sys.path
    import yaml  # a ray dependency

    for proc in psutil.process_iter(["cmdline", "cwd"]):
        args = proc.info["cmdline"] or []
        if not any(a.endswith("monitor.py") for a in args) or f"--gcs-address={gcs_address}" not in args:
            continue
        paths = [a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")]
        if not paths:
            return None  # a monitor without config: the cluster does not autoscale
        path = os.path.join(proc.info["cwd"] or "", os.path.expanduser(paths[0]))
        with open(path) as f:
            return yaml.safe_load(f)  # YAML (ray up) or JSON (AutoscalingCluster)
    return None

