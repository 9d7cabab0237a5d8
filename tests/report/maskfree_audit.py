"""Audit the mask-free shapes series (`sample_models.shapes_tag`) end to end: train, run without masks, flag.

Used by test_maskfree.py and docs/calibration_power.py."""
from __future__ import annotations

from pathlib import Path

from sample_models import shapes_tag

EVAL_N = 400


def trained(root: Path, rho: float | None, seed: int, *, moving: bool = True) -> tuple[Path, float | None]:
    """(model file, shuffle drop of the tag on held-out images, None without a tag)."""
    net = shapes_tag.train(rho, seed, moving=moving)
    path = shapes_tag.save_model(net, root / f"shapes-rho{rho}-moving{int(moving)}-seed{seed}")
    if rho is None:
        return path, None
    return path, shapes_tag.shuffle_drop(net, shapes_tag.render(EVAL_N, rho, seed=500 + seed, moving=moving))


def dataset(root: Path, rho: float | None, n: int, *, moving: bool = True, seed: int = 7) -> Path:
    folder = root / f"shapes-data-rho{rho}-moving{int(moving)}-n{n}-{seed}"
    if not folder.exists():
        shapes_tag.write_dataset(shapes_tag.render(n, rho, seed=seed, moving=moving), folder)
    return folder
