"""Audit the moving-patch calibration series (`sample_models.moving_patch`) end to end: train, run, flag.

Used by test_power.py and by docs/calibration.py (the table and the plot in docs/).
"""
from __future__ import annotations

from pathlib import Path

from sample_models import moving_patch

EVAL_N = 400


def trained(root: Path, rho: float, seed: int) -> tuple[Path, float]:
    """(model file, shuffle drop on held-out images) for one (rho, seed), trained once per folder."""
    folder = root / f"rho{rho:.2f}-seed{seed}"
    net = moving_patch.train(rho, seed)
    path = moving_patch.save_model(net, folder)
    drop = moving_patch.shuffle_drop(net, moving_patch.render(EVAL_N, rho, seed=500 + seed))
    return path, drop


def dataset(root: Path, rho: float, n: int, *, masks: bool = True, seed: int = 7) -> Path:
    folder = root / f"data-rho{rho:.2f}-n{n}-{'masks' if masks else 'plain'}-{seed}"
    if not folder.exists():
        moving_patch.write_dataset(moving_patch.render(n, rho, seed=seed), folder, masks=masks)
    return folder


def audit(workspace, model: Path, data_id: str, *, method: str = "gradcam", n: int = 200, params=None):
    """The finished run's report (flags, power, discovered regions...)."""
    from analysis.report.build import build_report
    from analysis.runs.engine import execute_run

    run_id = workspace.create_run(workspace.register_model(model), data_id, method, params or {}, n=n, seed=0)
    execute_run(workspace, run_id, progress=False)
    return build_report(workspace.store(run_id), workspace, n_boot=200)
