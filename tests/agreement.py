"""Agreement of a fast precision mode with fp32 (or with transformers' pipeline), as the tests measure it."""

import numpy as np

from zs_ray.engine import AGREEMENT_BOUNDS


def by_label(result):
    return dict(zip(result["labels"], result["scores"]))


def agreement(exact, fast):
    """(top-1 agreement over all texts, over texts whose fp32 margin is >= 0.05, largest |score difference|,
    how many texts have that clear margin)."""
    same = np.array([a["labels"][0] == b["labels"][0] for a, b in zip(exact, fast)])
    clear = np.array([a["scores"][0] - a["scores"][1] >= 0.05 for a in exact])
    diff = max(abs(by_label(a)[k] - v) for a, b in zip(exact, fast) for k, v in by_label(b).items())
    return float(same.mean()), float(same[clear].mean()), diff, int(clear.sum())


def check_bound(mode, exact, fast, min_clear=30):
    """``fast`` (a mode's results) is within ``AGREEMENT_BOUNDS[mode]`` of ``exact``, with rounding there is."""
    bound = AGREEMENT_BOUNDS[mode]
    same_all, same_clear, diff, clear = agreement(exact, fast)
    assert clear >= min_clear, "fixture not discriminative enough for this check"
    assert same_clear >= bound["clear"], (mode, same_clear)
    assert same_all >= bound["all"], (mode, same_all)
    assert 1e-4 < diff < bound["max_diff"], (mode, diff)  # rounding there is (the mode ran), within the bound
    assert all(abs(sum(r["scores"]) - 1) < 1e-6 for r in fast)
