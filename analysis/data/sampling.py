"""Which images a run explains: a reproducible sample, stratified by class.

Proportional allocation (largest remainder) keeps the class mix of the dataset, with at least one image of
every class when `n` allows, so a per-class table never silently misses a class.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def stratified_sample(labels: Sequence[Hashable], n: int, seed: int) -> list[int]:
    """Sorted indices into `labels`; the same (labels, n, seed) always gives the same sample."""
    total = len(labels)
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if n >= total:
        return list(range(total))
    classes = sorted({str(label) for label in labels})
    members = {c: [i for i, label in enumerate(labels) if str(label) == c] for c in classes}
    sizes = np.array([len(members[c]) for c in classes], dtype=np.float64)

    quota = sizes * n / total
    alloc = np.floor(quota).astype(int)
    if n >= len(classes):
        alloc = np.maximum(alloc, 1)
    # Largest remainder for what is left (or trim the largest allocations if the minimum-one overshot).
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while alloc.sum() < n:
        for k in order:
            if alloc.sum() < n and alloc[k] < sizes[k]:
                alloc[k] += 1
    while alloc.sum() > n:
        floor = 1 if n >= len(classes) else 0
        excess = np.where(alloc > floor, alloc - quota, -np.inf)
        alloc[int(np.argmax(excess))] -= 1

    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c, k in zip(classes, alloc):
        if k > 0:
            chosen.extend(rng.choice(members[c], size=int(k), replace=False).tolist())
    return sorted(chosen)
