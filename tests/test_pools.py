"""Actor pools from the settings and the cluster: sizes, growth bounds, and impossible pools refused."""

import os
import time

import pytest

from zs_ray import AnnotateConfig, ZsRayError
from zs_ray.cli import main
from zs_ray.capacity import Capacity
from zs_ray.resources import plan_pools


def cap(now, most=None, nodes=()):
    return Capacity(now, most or now, tuple(nodes))


def sizes(pools):
    m, t = pools.model, pools.tokenize
    return (m.min, m.max, m.gpus, m.cpus), (t.min, t.max, t.cpus)


@pytest.mark.parametrize("capacity, flags, expected", [
    # laptop: one CPU model worker with what read/tokenize/write leave; one light tokenizer actor
    (cap({"CPU": 2}), {}, ((1, 1, 0.0, 1.25), (1, 1, 0.25))),
    # one GPU node (g5.2xlarge: 8 vCPUs): a GPU worker, tokenizers growing into the spare CPUs (at most 4)
    (cap({"CPU": 8, "GPU": 1}), {}, ((1, 1, 1.0, 1.0), (1, 4, 1.0))),
    # 8 GPUs, 16 CPUs: the tokenizers get what the model actors leave
    (cap({"CPU": 16, "GPU": 8}), {}, ((8, 8, 1.0, 1.0), (7, 7, 1.0))),
    # 8 GPUs, hardly a CPU to spare: one tokenizer on what is left rather than a pool that never starts
    (cap({"CPU": 9, "GPU": 8}), {}, ((8, 8, 1.0, 1.0), (1, 1, 0.5))),
    # two workers per GPU
    (cap({"CPU": 16, "GPU": 2}), {"gpus_per_worker": 0.5}, ((4, 4, 0.5, 1.0), (4, 11, 1.0))),
    # cluster.yaml: a CPU head now, up to 8 one-GPU workers: the pool starts at 1 and may grow to 8
    (cap({"CPU": 8}, {"CPU": 72, "GPU": 8}), {}, ((1, 8, 1.0, 1.0), (1, 32, 1.0))),
    # ... with one GPU node up now: starts with it
    (cap({"CPU": 16, "GPU": 1}, {"CPU": 72, "GPU": 8}), {}, ((1, 8, 1.0, 1.0), (1, 32, 1.0))),
    (cap({"CPU": 24, "GPU": 2}, {"CPU": 72, "GPU": 8}), {}, ((2, 8, 1.0, 1.0), (2, 32, 1.0))),
    # explicit bounds win
    (cap({"CPU": 24, "GPU": 2}, {"CPU": 72, "GPU": 8}), {"num_workers": "2-4"}, ((2, 4, 1.0, 1.0), (2, 16, 1.0))),
    (cap({"CPU": 8, "GPU": 1}, {"CPU": 72, "GPU": 8}), {"num_workers": 3}, ((3, 3, 1.0, 1.0), (3, 12, 1.0))),
])
def test_pool_sizes(capacity, flags, expected):
    assert sizes(plan_pools(AnnotateConfig(output="x", **flags), capacity)) == expected


def test_custom_resources_go_to_the_model_pool():
    pools = plan_pools(AnnotateConfig(output="x", num_workers="1-3", cpus_per_worker=0.5,
                                      resources_per_worker='{"model_slot": 1}'),
                       cap({"CPU": 2, "model_slot": 1}, {"CPU": 5, "model_slot": 3}))
    assert (pools.model.min, pools.model.max, pools.model.resources) == (1, 3, {"model_slot": 1})
    assert pools.model.bundle() == {"CPU": 0.5, "model_slot": 1.0} and pools.device == "cpu"


@pytest.mark.parametrize("capacity, flags, message", [
    # the case: 4 CPU model actors on a 2-CPU machine
    (cap({"CPU": 2}), {"num_workers": 4},
     "--num-workers 4: 4 model worker(s) x (1 CPUs) plus 0.75 CPU for read, tokenize and write need 4.75 CPUs; "
     "the cluster can hold at most 2 CPUs, 0 GPUs"),
    (cap({"CPU": 8, "GPU": 2}), {"num_workers": "1-3"}, "need 3 GPUs; the cluster can hold at most 8 CPUs, 2 GPUs"),
    (cap({"CPU": 2}), {"gpus_per_worker": 1}, "need 1 GPUs"),
    # custom resources count like GPUs; the autoscaling maximum is what matters, not what is up now
    (cap({"CPU": 4, "slot": 1}, {"CPU": 8, "slot": 2}), {"num_workers": "1-3", "cpus_per_worker": 1,
                                                        "resources_per_worker": {"slot": 1}}, "3 slot"),
    # the sum fits but no node is large enough for one actor
    (cap({"CPU": 16, "GPU": 2}, nodes=[{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}]), {"gpus_per_worker": 2},
     "one model worker needs 1 CPUs, 2 GPUs, more than any node"),
])
def test_impossible_pools_refused(capacity, flags, message):
    with pytest.raises(ZsRayError) as info:
        plan_pools(AnnotateConfig(output="x", **flags), capacity)
    assert message in str(info.value)


def test_autoscaling_maximum_accepts_what_is_not_up_yet():
    pools = plan_pools(AnnotateConfig(output="x", num_workers="1-8"), cap({"CPU": 8}, {"CPU": 72, "GPU": 8}))
    assert (pools.model.min, pools.model.max) == (1, 8)


def test_cli_refuses_a_pool_the_machine_can_never_hold(tmp_path, capsys, mlsum_dir, nli_model):
    """On the local Ray the CLI starts: more CPU model workers than the machine has CPUs."""
    too_many = (os.cpu_count() or 2) + 1
    out = tmp_path / "out"
    start = time.monotonic()
    code = main(["annotate", "--dataset", mlsum_dir, "--model", nli_model, "--output", str(out),
                 "--num-workers", str(too_many), "--cpus-per-worker", "1"])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("zs-ray")]  # Ray may warn as it starts
    assert code == 2 and len(ours) == 1 and ours[0] == err.strip().splitlines()[-1], err
    assert f"--num-workers {too_many}: {too_many} model worker(s)" in ours[0] and "can hold at most" in ours[0]
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())
    print(f"refused after {took:.1f}s")  # seconds, not the job's minutes (not asserted: machines differ)


def test_the_actor_bounds_still_have_no_named_parameter_in_ray():
    """Ray 2.60 deprecates ``map_batches(**ray_remote_args)`` (removed in 2.64) but names no parameter for an actor's
    ``max_restarts`` / ``max_task_retries``, so ``Stage.apply`` still passes its bounds that way (docs/clusters.md).
    This fails on the Ray that changes either: then pass them by name, or bound a crash loop another way."""
    import inspect
    import re

    import ray.data.dataset as dataset
    from ray.data import Dataset

    from zs_ray.stages.base import RAY_REMOTE_ARGS_DEPRECATED

    params = inspect.signature(Dataset.map_batches).parameters
    assert not {"max_restarts", "max_task_retries"} & set(params), "named in Ray now: pass them by name (Stage.apply)"
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), "**ray_remote_args removed"
    assert re.search(RAY_REMOTE_ARGS_DEPRECATED, inspect.getsource(dataset)), "the warning silenced is not Ray's now"
