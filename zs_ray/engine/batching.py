"""Batching: pairs sorted by length and cut into batches by a padded-token budget."""

from __future__ import annotations

import numpy as np


def default_max_tokens(device: str) -> int:
    """Padded tokens per forward pass: CPUs are at full speed from a few thousand tokens and lose cache
    locality beyond; GPUs want large batches."""
    return 65536 if device.startswith("cuda") else 4096


def default_batch_size(device: str) -> int:
    """Most pairs per forward pass; the token budget usually binds first."""
    return 1024 if device.startswith("cuda") else 64


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Cut pairs into batches, longest first: each batch holds at most ``batch_size`` pairs and at most
    ``max_tokens`` padded tokens (its rows x its longest pair), so short pairs travel in large batches
    and long ones in small ones, with almost no padding. Returns the pair indices of each batch."""
    order = np.argsort(-lengths, kind="stable")
    batches, start, n = [], 0, len(order)
    while start < n:
        width = max(1, int(lengths[order[start]]))
        rows = max(1, min(batch_size, max_tokens // width, n - start))
        batches.append(order[start:start + rows])
        start += rows
    return batches
